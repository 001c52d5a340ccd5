//! Any graph of modules: bytes decide how many files there are, which includes which (and how
//! many times), how many steps each has and which step needs which. Compiling must give a plan
//! within the budgets or diagnostics (include cycles, depth, too many steps or edges), fast and
//! without a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ripcord::compile::{CompileOptions, MAX_EDGES, MAX_STEPS, compile};
use ripcord::provider::Providers;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let mut next = |modulo: u8| bytes.next().map_or(0, |b| b % modulo);
    let files = 1 + next(8) as usize;
    let dir = tempfile::tempdir().expect("a temporary directory");
    for f in 0..files {
        let mut steps = String::new();
        let plain = 1 + next(4) as usize;
        for s in 0..plain {
            let for_each = match next(3) {
                0 => String::new(),
                n => format!(", for_each: [{}]", (0..n * 3).map(|i| format!("i{i}")).collect::<Vec<_>>().join(", ")),
            };
            let needs = if s > 0 && next(2) == 1 { format!(", needs: [s{}]", next(s as u8)) } else { String::new() };
            steps.push_str(&format!(
                "  - {{ id: s{s}, uses: sleep.for, with: {{ duration: 1ms }}{for_each}{needs} }}\n"
            ));
        }
        for k in 0..next(4) {
            // Any file, itself and earlier ones included: cycles must be found.
            let target = next(files as u8);
            let needs = if next(2) == 1 { ", needs: [s0]" } else { "" };
            steps.push_str(&format!("  - {{ id: m{k}, include: f{target}.yaml{needs} }}\n"));
        }
        std::fs::write(
            dir.path().join(format!("f{f}.yaml")),
            format!("version: 1\nname: f{f}\nsteps:\n{steps}"),
        )
        .expect("write a module");
    }
    let root = dir.path().join("f0.yaml");
    let source = match ripcord::runbook::load_file(&root) {
        Ok(s) => s,
        Err(d) => panic!("generated YAML is valid: {}", d[0].render(false)),
    };
    let providers = Providers::new(&[]);
    let options = CompileOptions { inputs: &[], input_files: &[], require_inputs: false, run_commands: false, mode: None, providers: &providers };
    match compile(source, &options) {
        Ok(c) => {
            assert!(c.plan.steps.len() <= MAX_STEPS);
            assert!(c.plan.graph.edge_count() <= MAX_EDGES);
            let _ = c.plan.critical_path();
        }
        Err(diags) => diags.iter().for_each(|d| {
            let _ = d.render(false);
        }),
    }
});
