//! A complete plugin in Rust with the SDK: `echo.say` returns what it is given.
use ripcord_plugin_sdk::{Action, Mode, Reply, Request, serve};
use serde_json::json;

fn main() -> std::process::ExitCode {
    let actions = [Action::new("say", "returns its text, upper-cased if asked")
        .params(json!({
            "type": "object",
            "properties": { "text": { "type": "string" }, "loud": { "type": "boolean" } },
            "required": ["text"],
            "additionalProperties": false
        }))
        .outputs(&["said"])
        .check()];
    serve(&actions, |req: Request| {
        let text = req.params["text"].as_str().unwrap_or_default();
        if req.mode == Mode::Check {
            return Reply::ok(json!({}));
        }
        eprintln!("{} attempt {}: saying {text:?}", req.step, req.attempt);
        let said = if req.params["loud"] == json!(true) {
            text.to_uppercase()
        } else {
            text.to_string()
        };
        Reply::ok(json!({ "said": said }))
    })
}
