//! Any string as a `${{ }}` template: parsing, compiling, and rendering it against values must
//! give a value or an error, within the fuel limit.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ripcord::expr::parse_template;
use ripcord::runbook::Span;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(template) = parse_template(text, Span::new(0, text.len()), text) else { return };
    let env = ripcord::expr::render::environment();
    let ctx = minijinja::context! {
        inputs => minijinja::Value::from(minijinja::value::Serde(serde_json::json!({"a": 1, "s": "x", "l": [1, 2, 3]}))),
        item => "web1",
        run => minijinja::Value::from(minijinja::value::Serde(serde_json::json!({"id": "r", "dry_run": true}))),
    };
    let _ = ripcord::expr::render::render_template(&env, &template, &ctx);
});
