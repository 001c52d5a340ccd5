//! The planner on hand-computed DAGs: critical path, stages, and list-schedule makespans under
//! concurrency and pools.

use std::time::Duration;

use ripcord::compile::{CompileOptions, compile};
use ripcord::plan::Plan;
use ripcord::runbook::load_str;

fn plan(yaml: &str) -> Plan {
    let source = load_str("test.yaml", yaml.to_string())
        .unwrap_or_else(|d| panic!("{}", d[0].render(false)));
    let providers = ripcord::provider::Providers::new(&[]);
    let options = CompileOptions {
        inputs: &[],
        input_files: &[],
        require_inputs: true,
        run_commands: false,
        mode: None,
        providers: &providers,
    };
    match compile(source, &options) {
        Ok(c) => c.plan,
        Err(diags) => panic!(
            "{}",
            diags.iter().map(|d| d.render(false)).collect::<String>()
        ),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ids(plan: &Plan, steps: &[usize]) -> Vec<String> {
    steps.iter().map(|&i| plan.steps[i].id.clone()).collect()
}

/// A step of shell.run with an estimated duration.
fn step(id: &str, secs: u64, extra: &str) -> String {
    format!(
        "  - {{ id: {id}, uses: shell.run, with: {{ argv: [true] }}, sim: {{ duration: {secs}s }}{extra} }}\n"
    )
}

fn runbook(header: &str, steps: &[String]) -> String {
    format!("version: 1\nname: t\n{header}steps:\n{}", steps.concat())
}

#[test]
fn diamond_critical_path_and_stages() {
    // a(10) -> b(20) -> d(1); a -> c(5) -> d
    let p = plan(&runbook(
        "",
        &[
            step("a", 10, ""),
            step("b", 20, ", needs: [a]"),
            step("c", 5, ", needs: [a]"),
            step("d", 1, ", needs: [b, c]"),
        ],
    ));
    assert_eq!(ids(&p, &p.critical_path()), ["a", "b", "d"]);
    assert_eq!(p.critical_length(), secs(31));
    assert_eq!(p.predicted(None).makespan, secs(31));
    assert_eq!(
        p.predicted(Some(1)).makespan,
        secs(36),
        "one slot runs everything in series"
    );
    let stages: Vec<Vec<String>> = p.stages().iter().map(|s| ids(&p, s)).collect();
    assert_eq!(stages, [vec!["a"], vec!["b", "c"], vec!["d"]]);
}

#[test]
fn pool_limits_the_makespan() {
    // Five independent 10s steps in a pool of 2, global concurrency 10: ceil(5/2) * 10s.
    let steps: Vec<String> = (1..=5)
        .map(|i| step(&format!("vm{i}"), 10, ", pool: vcenter"))
        .collect();
    let p = plan(&runbook("pools: { vcenter: 2 }\n", &steps));
    assert_eq!(p.critical_length(), secs(10));
    let schedule = p.predicted(None);
    assert_eq!(schedule.makespan, secs(30));
    let mut starts: Vec<u64> = schedule.start.iter().map(Duration::as_secs).collect();
    starts.sort();
    assert_eq!(starts, [0, 0, 10, 10, 20]);
}

#[test]
fn pooled_and_free_steps_share_global_slots() {
    // Concurrency 2; x1, x2 (10s) in a pool of 1; y (15s) in none.
    // t=0: y (highest remaining) and x1 start; t=10: x2; y ends at 15, x2 at 20.
    let p = plan(&runbook(
        "concurrency: 2\npools: { p: 1 }\n",
        &[
            step("x1", 10, ", pool: p"),
            step("x2", 10, ", pool: p"),
            step("y", 15, ""),
        ],
    ));
    let s = p.predicted(None);
    assert_eq!(s.makespan, secs(20));
    assert_eq!(
        (s.start[0], s.start[1], s.start[2]),
        (secs(0), secs(10), secs(0))
    );
}

#[test]
fn critical_path_priority_beats_file_order() {
    // Two slots. In file order b, e, a -> c a FIFO scheduler would start b and e first and end
    // at 25s; critical-path priority starts a first and ends at the lower bound, 20s.
    let p = plan(&runbook(
        "concurrency: 2\n",
        &[
            step("b", 5, ""),
            step("e", 5, ""),
            step("a", 10, ""),
            step("c", 10, ", needs: [a]"),
        ],
    ));
    let s = p.predicted(None);
    assert_eq!(s.makespan, secs(20));
    assert_eq!(s.start[2], secs(0), "a starts at once");
}

#[test]
fn for_each_expands_and_needs_wait_for_every_instance() {
    let p = plan(&runbook(
        "",
        &[
            step("up", 1, ", for_each: [web1, web2, web3]"),
            step("check", 2, ", needs: [up]"),
        ],
    ));
    assert_eq!(
        ids(&p, &(0..p.steps.len()).collect::<Vec<_>>()),
        ["up[web1]", "up[web2]", "up[web3]", "check"]
    );
    assert_eq!(p.needs(3).count(), 3);
    assert_eq!(p.critical_length(), secs(3));
}

fn report_index(p: &Plan) -> usize {
    p.steps.iter().position(|s| s.id == "report").unwrap()
}

/// A for_each step that needs another waits through one barrier node: 3 × 4 instances make
/// 3 + 4 edges, not 12, and each instance still waits for every instance it needs (an empty
/// for_each with no needs is waited for at once; one with needs holds back what needs it
/// until those are done). `needs_ids` writes the barrier as `up[*]`.
#[test]
fn for_each_needing_for_each_waits_through_one_barrier() {
    let p = plan(&runbook(
        "",
        &[
            step("up", 1, ", for_each: [web1, web2, web3]"),
            step("check", 2, ", for_each: [a, b, c, d], needs: [up]"),
            step("report", 1, ", needs: [check, up]"),
            step("none", 5, ", for_each: []"),
            step("after", 1, ", needs: [none]"),
            // An empty for_each that needs others still holds back what needs it until they
            // are done, as a step skipped by `when` would: nothing runs early.
            step("drain", 1, ", for_each: [], needs: [up, report]"),
            step("promote", 1, ", needs: [drain]"),
        ],
    ));
    let n = p.steps.len();
    assert_eq!(n, 3 + 4 + 1 + 1 + 1);
    assert_eq!(p.barriers, ["up", "check", "none", "drain"]);
    // up → barrier 3, barrier → check 4, check → barrier 4, barrier → report 1 (twice: up's
    // and check's), none's barrier → after 1; up's barrier and report → drain's barrier 2,
    // drain's barrier → promote 1.
    assert_eq!(p.graph.edge_count(), 3 + 4 + 4 + 2 + 1 + 2 + 1);
    let promote = p.steps.iter().position(|s| s.id == "promote").unwrap();
    let mut before: Vec<String> = p.needs(promote).map(|i| p.steps[i].id.clone()).collect();
    before.sort();
    assert_eq!(before, ["report", "up[web1]", "up[web2]", "up[web3]"]);
    let report_deps: Vec<usize> = p.dependents(report_index(&p)).collect();
    assert!(report_deps.contains(&promote), "{report_deps:?}");
    assert!(
        p.stages()
            .iter()
            .position(|s| s.contains(&promote))
            .unwrap()
            >= 3
    );
    let check_a = p.steps.iter().position(|s| s.id == "check[a]").unwrap();
    let mut needs: Vec<String> = p.needs(check_a).map(|i| p.steps[i].id.clone()).collect();
    needs.sort();
    assert_eq!(needs, ["up[web1]", "up[web2]", "up[web3]"]);
    assert_eq!(p.needs_ids(check_a), ["up[*]"]);
    let up2 = p.steps.iter().position(|s| s.id == "up[web2]").unwrap();
    // check[a..d], report, and promote through the empty drain.
    assert_eq!(p.dependents(up2).count(), 4 + 1 + 1);
    let report = p.steps.iter().position(|s| s.id == "report").unwrap();
    assert_eq!(p.needs(report).count(), 7);
    assert!(p.order.iter().all(|&i| i < n) && p.order.len() == n);
    let after = p.steps.iter().position(|s| s.id == "after").unwrap();
    assert_eq!(p.needs(after).count(), 0);
    assert_eq!(p.critical_length(), secs(1 + 2 + 1 + 1));
}

/// Chains of empty for_each steps, two a layer each needing both of the layer before (2^40
/// paths through 80 barriers): each barrier is visited once, so this plans at once, and the
/// step at the end still waits for the fence at the start.
#[test]
fn chains_of_empty_for_each_cost_their_size_not_their_paths() {
    let mut steps = vec![step("fence", 1, "")];
    for layer in 0..40 {
        let needs = if layer == 0 {
            "fence".to_string()
        } else {
            format!("l{}a, l{}b", layer - 1, layer - 1)
        };
        for side in ["a", "b"] {
            steps.push(step(
                &format!("l{layer}{side}"),
                1,
                &format!(", for_each: [], needs: [{needs}]"),
            ));
        }
    }
    steps.push(step("promote", 1, ", needs: [l39a, l39b]"));
    let p = plan(&runbook("", &steps));
    let promote = p.steps.iter().position(|s| s.id == "promote").unwrap();
    assert_eq!(ids(&p, &p.needs(promote).collect::<Vec<_>>()), ["fence"]);
    assert_eq!(ids(&p, &p.dependents(0).collect::<Vec<_>>()), ["promote"]);
    assert_eq!(p.critical_length(), secs(2));
}

#[test]
fn references_add_edges() {
    let p = plan(
        "version: 1\nname: t\nsteps:\n\
         - { id: b, uses: assert.that, with: { that: \"${{ steps.a.outputs.status == 200 }}\" } }\n\
         - { id: a, uses: http.request, with: { url: \"http://x\" } }\n",
    );
    assert_eq!(p.needs(0).collect::<Vec<_>>(), [1]);
    assert_eq!(p.order, [1, 0]);
}

/// A seeded random DAG: `n` steps, each needing up to two earlier ones, random durations and
/// pools. Small LCG so the test needs no extra crate and replays exactly.
pub fn random_runbook(seed: u64, n: usize) -> String {
    let mut state = seed;
    let mut next = move |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let mut steps = Vec::new();
    for i in 0..n {
        let mut extra = String::new();
        if i > 0 {
            let deps: Vec<String> = (0..next(3))
                .map(|_| format!("s{}", next(i as u64)))
                .collect();
            let mut deps = deps;
            deps.sort();
            deps.dedup();
            if !deps.is_empty() {
                extra.push_str(&format!(", needs: [{}]", deps.join(", ")));
            }
        }
        match next(4) {
            0 => extra.push_str(", pool: p1"),
            1 => extra.push_str(", pool: p2"),
            _ => {}
        }
        steps.push(step(&format!("s{i}"), 1 + next(60), &extra));
    }
    runbook("pools: { p1: 2, p2: 1 }\nconcurrency: 3\n", &steps)
}

#[test]
fn list_schedule_respects_dependencies_limits_and_bounds() {
    for seed in 0..20 {
        let p = plan(&random_runbook(seed, 150));
        let s = p.predicted(None);
        // Dependencies: nobody starts before what it needs has finished.
        for i in 0..p.steps.len() {
            for n in p.needs(i) {
                assert!(
                    s.start[i] >= s.finish[n],
                    "seed {seed}: {} before {}",
                    p.steps[i].id,
                    p.steps[n].id
                );
            }
        }
        // Limits: at every start instant, at most 3 running, 2 in p1, 1 in p2.
        for &t in &s.start {
            let running: Vec<usize> = (0..p.steps.len())
                .filter(|&i| s.start[i] <= t && t < s.finish[i])
                .collect();
            assert!(
                running.len() <= 3,
                "seed {seed}: {} running at {t:?}",
                running.len()
            );
            for (pool, size) in [(0, 2), (1, 1)] {
                let inside = running
                    .iter()
                    .filter(|&&i| p.steps[i].pool == Some(pool))
                    .count();
                assert!(inside <= size, "seed {seed}: pool {pool} over its size");
            }
        }
        // Lower bound: never shorter than the critical path or the work over the slots.
        let work: Duration = (0..p.steps.len()).map(|i| p.estimate(i)).sum();
        assert!(s.makespan >= p.critical_length());
        assert!(s.makespan >= work / 3);
        // Unlimited slots and no pools: exactly the critical path.
        let free = plan(
            &random_runbook(seed, 150)
                .replace(", pool: p1", "")
                .replace(", pool: p2", ""),
        );
        assert_eq!(
            free.predicted(Some(1_000_000)).makespan,
            free.critical_length(),
            "seed {seed}"
        );
        // Graham's bound for list scheduling on m identical slots: W/m + (1 - 1/m) * CP.
        let m = 3u32;
        let work: Duration = (0..free.steps.len()).map(|i| free.estimate(i)).sum();
        let bound = work / m + free.critical_length() * (m - 1) / m;
        assert!(
            free.predicted(Some(3)).makespan <= bound,
            "seed {seed}: Graham's bound broken"
        );
    }
}

/// The schedule's quality, not its speed: on seeded random DAGs under a scarce pool, the
/// predicted makespan stays within 10% of the lower bound max(critical path, work / slots,
/// pool work / pool size). Critical-path order alone reached 1.31 on these.
#[test]
fn makespan_stays_close_to_the_lower_bound_under_pools() {
    let mut ratios = Vec::new();
    for seed in 0..100 {
        let p = plan(&random_runbook(seed, 50));
        let ratio = p.predicted(None).makespan.as_secs_f64() / p.lower_bound().as_secs_f64();
        assert!(ratio >= 1.0, "seed {seed}: below the lower bound ({ratio})");
        ratios.push(ratio);
    }
    let worst = ratios.iter().copied().fold(0.0, f64::max);
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    assert!(worst <= 1.10, "worst makespan / lower bound {worst:.3}");
    assert!(mean <= 1.02, "mean makespan / lower bound {mean:.3}");
}
