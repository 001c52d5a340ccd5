//! `ripcord validate FILE...`: every file loaded and compiled, every problem reported.

use serde::Serialize;

use crate::cli::ValidateArgs;
use crate::compile::CompileOptions;
use crate::diag::JsonDiag;
use crate::error::{CommandError, CommandResult};
use crate::exit;
use crate::provider::Providers;
use crate::runbook::duration;

use super::{load_and_compile, print_diags};

#[derive(Serialize)]
struct FileResult {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<usize>,
    diagnostics: Vec<JsonDiag>,
}

pub fn run(args: &ValidateArgs) -> CommandResult {
    let providers = Providers::new(&args.plugins.plugin_dirs);
    let input_files = args.inputs.files()?;
    let options = CompileOptions {
        providers: &providers,
        inputs: &args.inputs.inputs,
        input_files: &input_files,
        require_inputs: false,
        run_commands: false,
        mode: None,
    };
    let mut results = Vec::new();
    let (mut errors, mut invalid_files) = (0, 0);
    for path in &args.files {
        let (compiled, diags) = load_and_compile(path, &options);
        let file_errors = diags.iter().filter(|d| d.is_error()).count();
        errors += file_errors;
        invalid_files += usize::from(compiled.is_none());
        if args.json {
            results.push(FileResult {
                file: path.display().to_string(),
                valid: compiled.is_some(),
                steps: compiled.as_ref().map(|c| c.plan.steps.len()),
                diagnostics: diags.iter().map(|d| d.to_json()).collect(),
            });
            continue;
        }
        print_diags(&diags);
        if let Some(c) = compiled {
            let n = c.plan.steps.len();
            println!(
                "{}: ok ({n} step{}, critical path {})",
                path.display(),
                if n == 1 { "" } else { "s" },
                duration::format(c.plan.critical_length())
            );
        }
    }
    if args.json {
        let doc =
            serde_json::json!({ "valid": invalid_files == 0, "errors": errors, "files": results });
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON values serialize")
        );
    } else if invalid_files > 0 {
        return Err(crate::invalid!(
            "{invalid_files} of {} file(s) invalid, {errors} error(s)",
            args.files.len()
        ));
    }
    if invalid_files > 0 {
        Err(CommandError::Reported(exit::INVALID))
    } else {
        Ok(exit::OK)
    }
}
