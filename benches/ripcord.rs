//! `cargo bench --bench ripcord`: the compiler, the planner and the executor at scale.
//!
//! - validate + plan of layered DAGs of 1k, 10k and 100k steps (in process: load, compile,
//!   schedule), the same DAGs `benches/gen-dag.py` writes;
//! - a dry-run of the 10k-step DAG (the binary, start to exit);
//! - executor overhead per step: a real run of 10,000 no-op steps (`assert.that: true`) minus
//!   validate + plan of the same file, divided by the steps;
//! - makespan quality: the list schedule of seeded random DAGs with random durations under
//!   pools, against the lower bound max(critical path, work / slots, pool work / pool size)
//!   ([`Plan::lower_bound`]);
//!   printed as a table (it is a ratio, not a time), and the time to schedule 10k steps.
//!
//! Numbers and the machine are in BENCHMARKS.md.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ripcord::compile::{CompileOptions, compile};
use ripcord::plan::Plan;
use ripcord::provider::Providers;
use ripcord::runbook::load_str;

/// A small seeded generator (PCG-style LCG), so every run builds the same DAGs.
struct Rng(u64);

impl Rng {
    fn below(&mut self, m: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % m.max(1)
    }
}

/// Layers of `width` steps, each step after the first layer needing 1-2 of the layer before;
/// `action` is the YAML of what every step does.
fn layered(n: usize, width: usize, action: &str, concurrency: usize) -> String {
    let mut rng = Rng(1);
    let mut text = format!("version: 1\nname: dag-{n}\nconcurrency: {concurrency}\nsteps:\n");
    for i in 0..n {
        let layer = i / width;
        let mut needs = Vec::new();
        if layer > 0 {
            let from = (layer - 1) * width;
            for _ in 0..1 + rng.below(2) {
                needs.push(from + rng.below(width as u64) as usize);
            }
            needs.sort_unstable();
            needs.dedup();
        }
        let needs = needs_yaml(&needs);
        let secs = 1 + rng.below(10);
        text.push_str(&format!(
            "  - {{ id: s{i}, {action}{needs}, sim: {{ duration: {secs}s }} }}\n"
        ));
    }
    text
}

/// `, needs: [s1, s4]` (nothing for no needs).
fn needs_yaml<T: std::fmt::Display>(needs: &[T]) -> String {
    if needs.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = needs.iter().map(|d| format!("s{d}")).collect();
    format!(", needs: [{}]", ids.join(", "))
}

// The allocator the ripcord binary uses, so in-process numbers match the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TRUE: &str = "uses: shell.run, with: { argv: [\"true\"] }";
const NOOP: &str = "uses: assert.that, with: { that: true }";

fn compile_text(text: &str, providers: &Providers) -> Plan {
    let source = load_str("bench.yaml", text.to_string()).expect("the generated runbook parses");
    let options = CompileOptions {
        inputs: &[],
        input_files: &[],
        require_inputs: true,
        run_commands: false,
        mode: None,
        providers,
    };
    match compile(source, &options) {
        Ok(compiled) => compiled.plan,
        Err(diags) => panic!("the generated runbook compiles: {:?}", diags[0].message),
    }
}

fn validate_and_plan(c: &mut Criterion) {
    let providers = Providers::new(&[]);
    let mut group = c.benchmark_group("validate_plan");
    for n in [1_000, 10_000, 100_000] {
        let text = layered(n, 100, TRUE, 2);
        if n >= 100_000 {
            group.sample_size(10);
        }
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, text| {
            b.iter(|| {
                let plan = compile_text(text, &providers);
                plan.predicted(None).makespan
            })
        });
    }
    group.finish();
}

fn ripcord(args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_ripcord"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the ripcord binary runs");
    let took = start.elapsed();
    assert!(status.success(), "ripcord {args:?} failed");
    took
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the runbook");
    path.display().to_string()
}

fn dry_run(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "dry.yaml", &layered(10_000, 100, TRUE, 10));
    let state = dir.path().join("state").display().to_string();
    let mut group = c.benchmark_group("dry_run");
    group.sample_size(10);
    group.bench_function("10000", |b| {
        b.iter(|| ripcord(&["run", "--dry-run", "--state-dir", &state, &file]))
    });
    group.finish();
}

/// Per step: (real run of N no-op steps - validate + plan of it) / N.
fn executor_overhead(c: &mut Criterion) {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = write(dir.path(), "noop.yaml", &layered(N, 100, NOOP, 10));
    let state = dir.path().join("state").display().to_string();
    let mut group = c.benchmark_group("executor_overhead_per_step");
    group.sample_size(10);
    group.bench_function("noop", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let base = ripcord(&["plan", &file]);
                let run = ripcord(&["run", "--state-dir", &state, &file]);
                total += run.saturating_sub(base) / N as u32;
            }
            total
        })
    });
    group.finish();
}

/// A random DAG in the style of the planner tests: up to 2 needs on earlier steps, durations
/// 1-60 s, a quarter of the steps in pool p1 (2 slots), a quarter in p2 (1 slot).
fn random_dag(seed: u64, n: usize, concurrency: usize) -> String {
    let mut rng = Rng(seed);
    let mut text = format!(
        "version: 1\nname: random\nconcurrency: {concurrency}\npools: {{ p1: 2, p2: 1 }}\nsteps:\n"
    );
    for i in 0..n {
        let mut needs: Vec<u64> = (0..if i > 0 { rng.below(3) } else { 0 })
            .map(|_| rng.below(i as u64))
            .collect();
        needs.sort_unstable();
        needs.dedup();
        let needs = needs_yaml(&needs);
        let pool = match rng.below(4) {
            0 => ", pool: p1",
            1 => ", pool: p2",
            _ => "",
        };
        let secs = 1 + rng.below(60);
        text.push_str(&format!(
            "  - {{ id: s{i}, {NOOP}{needs}{pool}, sim: {{ duration: {secs}s }} }}\n"
        ));
    }
    text
}

fn makespan_quality(c: &mut Criterion) {
    let providers = Providers::new(&[]);
    println!("\nmakespan / lower bound, seeded random DAGs under pools (p1: 2 slots, p2: 1):");
    println!(
        "{:>6} {:>5} {:>6} {:>8} {:>8} {:>8}",
        "steps", "slots", "DAGs", "mean", "p95", "max"
    );
    for (n, concurrency, dags) in [(50, 3, 200), (150, 3, 200), (1_000, 8, 50)] {
        let mut ratios: Vec<f64> = (0..dags)
            .map(|seed| {
                let plan = compile_text(&random_dag(seed, n, concurrency), &providers);
                let makespan = plan.predicted(Some(concurrency)).makespan;
                makespan.as_secs_f64() / plan.lower_bound().as_secs_f64()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
        let p95 = ratios[(ratios.len() * 95 / 100).min(ratios.len() - 1)];
        let max = ratios[ratios.len() - 1];
        println!("{n:>6} {concurrency:>5} {dags:>6} {mean:>8.3} {p95:>8.3} {max:>8.3}");
    }
    let plan = compile_text(&random_dag(1, 10_000, 8), &providers);
    c.bench_function("schedule_10000_steps_under_pools", |b| {
        b.iter(|| plan.predicted(Some(8)).makespan)
    });
}

criterion_group!(
    benches,
    validate_and_plan,
    dry_run,
    executor_overhead,
    makespan_quality
);
criterion_main!(benches);
