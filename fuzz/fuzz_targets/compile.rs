//! Any bytes as a runbook: loading and compiling must answer with a plan or diagnostics, and
//! rendering those diagnostics must not panic either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ripcord::compile::{CompileOptions, compile};
use ripcord::provider::Providers;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = match ripcord::runbook::load_str("fuzz.yaml", text.to_string()) {
        Ok(s) => s,
        Err(diags) => {
            diags.iter().for_each(|d| {
                let _ = d.render(false);
            });
            return;
        }
    };
    let providers = Providers::new(&[]);
    let options = CompileOptions { inputs: &[], input_files: &[], require_inputs: false, run_commands: false, mode: None, providers: &providers };
    match compile(source, &options) {
        Ok(c) => {
            let _ = c.plan.predicted(None);
            let _ = c.plan.critical_path();
        }
        Err(diags) => diags.iter().for_each(|d| {
            let _ = d.render(false);
            let _ = d.to_json();
        }),
    }
});
