//! `ripcord plugins`: every provider and its actions — built in, and the external plugins on the
//! search path, each described, with where it was found (or why it could not be used).

use serde_json::json;

use crate::cli::PluginsArgs;
use crate::error::CommandResult;
use crate::exit;
use crate::provider::catalog::{self, ActionSpec};
use crate::provider::{Providers, plugin};

fn params(spec: &ActionSpec) -> String {
    let required: Vec<&str> = spec.params["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    spec.param_names()
        .iter()
        .map(|p| {
            if required.contains(p) {
                format!("{p}*")
            } else {
                (*p).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn action_json(spec: &ActionSpec) -> serde_json::Value {
    json!({
        "action": spec.action,
        "summary": spec.summary,
        "params": spec.params,
        "outputs": spec.outputs.declared(),
        "check": spec.check,
        "undo": spec.undo,
    })
}

/// Two lines an action: its name, summary and capabilities; its params and outputs.
fn print_action(a: &ActionSpec) {
    let caps: Vec<&str> = [(a.check, "check"), (a.undo, "undo")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, w)| *w)
        .collect();
    let caps = if caps.is_empty() {
        String::new()
    } else {
        format!(" [{}]", caps.join(", "))
    };
    println!("  {:<18} {}{caps}", a.name(), a.summary);
    println!(
        "  {:<18}   params: {}; outputs: {}",
        "",
        params(a),
        a.outputs.declared().join(", ")
    );
}

pub fn run(args: &PluginsArgs) -> CommandResult {
    let providers = Providers::new(&args.plugins.plugin_dirs);
    let names = plugin::installed(&args.plugins.plugin_dirs);
    let found: Vec<_> = names
        .iter()
        .map(|n| (n.clone(), providers.plugin(n)))
        .collect();
    if args.json {
        let builtin: Vec<_> = catalog::builtins()
            .iter()
            .map(|s| {
                let mut v = action_json(s);
                v["provider"] = json!(s.provider);
                v
            })
            .collect();
        let plugins: Vec<_> = found
            .iter()
            .map(|(name, p)| match p {
                Ok(p) => json!({ "provider": name, "path": p.path, "actions": p.actions.iter().map(|a| action_json(a)).collect::<Vec<_>>() }),
                Err(why) => json!({ "provider": name, "error": why }),
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "builtin": builtin, "plugins": plugins }))
                .expect("JSON values serialize")
        );
        return Ok(exit::OK);
    }
    println!("built in:");
    catalog::builtins().iter().for_each(|s| print_action(s));
    if found.is_empty() {
        println!("\nno external plugins (ripcord-plugin-NAME) on the search path");
    }
    for (name, p) in &found {
        match p {
            Ok(p) => {
                println!("\n{name}: {}", p.path.display());
                p.actions.iter().for_each(|a| print_action(a));
            }
            Err(why) => println!("\n{name}: unusable: {why}"),
        }
    }
    println!(
        "\n(* required; search order: --plugin-dir, $RIPCORD_PLUGIN_PATH, the directory of ripcord, $PATH)"
    );
    Ok(exit::OK)
}
