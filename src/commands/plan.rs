//! `ripcord plan FILE`: stages, pools, critical path and predicted duration against the rto.

use std::fmt::Write;
use std::time::Duration;

use serde_json::json;

use crate::cli::{Estimates, PlanArgs};
use crate::compile::CompileOptions;
use crate::error::CommandResult;
use crate::exit;
use crate::plan::Plan;
use crate::provider::Providers;
use crate::report::history;
use crate::runbook::duration::format as dur;

use super::compile_one;

pub fn run(args: &PlanArgs) -> CommandResult {
    let providers = Providers::new(&args.plugins.plugin_dirs);
    let input_files = args.inputs.files()?;
    let options = CompileOptions {
        providers: &providers,
        inputs: &args.inputs.inputs,
        input_files: &input_files,
        require_inputs: true,
        run_commands: false,
        mode: args.mode.as_deref(),
    };
    let mut compiled = compile_one(&args.file, &options)?;
    let mut history_line = None;
    if args.estimates == Estimates::History {
        let state = crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
        let (medians, runs) = history::learn(state.as_ref(), &compiled.plan.name);
        let n = history::apply(&mut compiled.plan, &medians);
        // Part of the plan's text, on its own line before it (on stdout with the rest, so the
        // two never interleave).
        let total = compiled.plan.steps.len();
        history_line = Some(format!(
            "estimates: {n} of {} from the median of {} (succeeded tries only: failed tries, \
             retry waits and gaps between sessions are not in them){}\n",
            crate::report::text::count(total, "step"),
            crate::report::text::count(runs, "earlier real run"),
            if n < total { "; the rest from sim" } else { "" }
        ));
    }
    let concurrency = args.concurrency.map(|c| c as usize);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&compiled.plan, concurrency))
                .expect("JSON values serialize")
        );
    } else {
        print!(
            "{}{}",
            history_line.unwrap_or_default(),
            render(&compiled.plan, concurrency)
        );
    }
    Ok(exit::OK)
}

/// The plan as text for a person.
pub fn render(plan: &Plan, concurrency: Option<usize>) -> String {
    let limit = concurrency.unwrap_or(plan.concurrency);
    let schedule = plan.predicted(Some(limit));
    let critical = plan.critical_path();
    let on_path = membership(plan, &critical);
    let stages = plan.stages();
    let mut out = String::new();
    let pools = if plan.pools.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = plan
            .pools
            .iter()
            .map(|p| format!("{}={}", p.name, p.size))
            .collect();
        format!(", pools {}", list.join(" "))
    };
    let _ = writeln!(
        out,
        "{}: {} in {}, concurrency {limit}{pools}",
        plan.name,
        crate::report::text::count(plan.steps.len(), "step"),
        crate::report::text::count(stages.len(), "stage")
    );
    if let Some(d) = &plan.description {
        let _ = writeln!(out, "  {}", d.trim());
    }
    if let Some(mode) = &plan.mode {
        let out_of_mode = plan.steps.iter().filter(|s| s.out_of_mode).count();
        let _ = writeln!(
            out,
            "  mode {mode} (of {}; --mode to choose){}",
            plan.modes.join(", "),
            if out_of_mode > 0 {
                format!(
                    ", {} skipped in it",
                    crate::report::text::count(out_of_mode, "step")
                )
            } else {
                String::new()
            }
        );
    }
    if !plan.inputs.is_empty() {
        let _ = writeln!(out, "\ninputs:");
        for i in &plan.inputs {
            let value = match (&i.value, i.secret) {
                (Some(_), true) => "***".to_string(),
                (Some(v), false) => v.to_string(),
                (None, _) => "(no value)".to_string(),
            };
            let _ = writeln!(out, "  {} = {value}", i.name);
        }
    }
    let _ = writeln!(
        out,
        "\nstages (* on the critical path; est = estimated duration, start = predicted start):"
    );
    let width = plan
        .steps
        .iter()
        .map(|s| s.id.len())
        .max()
        .unwrap_or(0)
        .min(40);
    for (n, stage) in stages.iter().enumerate() {
        for (k, &i) in stage.iter().enumerate() {
            let s = &plan.steps[i];
            let label = if k == 0 {
                format!("{:>3}", n + 1)
            } else {
                "   ".to_string()
            };
            let pool = s
                .pool
                .map(|p| format!("  pool {}", plan.pools[p].name))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "{label} {} {:<width$}  {:<28} est {:>7}  start {:>7}{pool}",
                if on_path[i] { '*' } else { ' ' },
                s.id,
                s.action.to_string(),
                dur(plan.estimate(i)),
                dur(schedule.start[i]),
            );
        }
    }
    if !plan.groups.is_empty() {
        let _ = writeln!(
            out,
            "\nmodules (steps, predicted start and end; * on the critical path):"
        );
        for (g, group) in plan.groups.iter().enumerate() {
            let members = plan.group_members(g);
            let start = members.iter().map(|&i| schedule.start[i]).min();
            let end = members.iter().map(|&i| schedule.finish[i]).max();
            let critical = members.iter().any(|&i| on_path[i]);
            let indent = "  ".repeat(plan.group_depth(g));
            let id = format!("{indent}{}", group.id);
            let _ = writeln!(
                out,
                "  {} {id:<width$}  {:<28} {:>3} steps  start {:>7}  end {:>7}",
                if critical { '*' } else { ' ' },
                group.file,
                members.len(),
                dur(start.unwrap_or_default()),
                dur(end.unwrap_or_default()),
            );
        }
    }
    let path: Vec<&str> = critical
        .iter()
        .map(|&i| plan.steps[i].id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "\ncritical path ({}): {}",
        dur(plan.critical_length()),
        path.join(" -> ")
    );
    let defaulted = plan.steps.iter().filter(|s| !s.sim.explicit).count();
    let _ = writeln!(
        out,
        "predicted duration: {} with unlimited concurrency, {} with concurrency {limit}{}",
        dur(plan.critical_length()),
        dur(schedule.makespan),
        if plan.pools.is_empty() {
            ""
        } else {
            " and pools"
        },
    );
    if defaulted > 0 {
        let _ = writeln!(
            out,
            "  ({defaulted} of {} steps have no sim.duration and use their action's default estimate)",
            plan.steps.len()
        );
    }
    match plan.rto {
        Some(rto) => {
            let _ = writeln!(out, "rto: {}", rto_verdict(rto, schedule.makespan));
        }
        None => {
            let _ = writeln!(out, "rto: none set (add `rto: 5m` to compare)");
        }
    }
    out
}

/// "5m: met, 2m20s to spare" or "5m: EXCEEDED by 1m".
pub fn rto_verdict(rto: Duration, predicted: Duration) -> String {
    if predicted <= rto {
        format!("{}: met, {} to spare", dur(rto), dur(rto - predicted))
    } else {
        format!("{}: EXCEEDED by {}", dur(rto), dur(predicted - rto))
    }
}

fn membership(plan: &Plan, path: &[usize]) -> Vec<bool> {
    let mut on = vec![false; plan.steps.len()];
    for &i in path {
        on[i] = true;
    }
    on
}

pub fn to_json(plan: &Plan, concurrency: Option<usize>) -> serde_json::Value {
    let limit = concurrency.unwrap_or(plan.concurrency);
    let schedule = plan.predicted(Some(limit));
    let critical = plan.critical_path();
    let on_path = membership(plan, &critical);
    let stages = plan.stages();
    let mut stage_of = vec![0; plan.steps.len()];
    for (n, stage) in stages.iter().enumerate() {
        for &i in stage {
            stage_of[i] = n + 1;
        }
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let steps: Vec<_> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": s.id,
                "module": s.group.map(|g| plan.groups[g].id.as_str()),
                "uses": s.action.to_string(),
                "needs": plan.needs_ids(i),
                "stage": stage_of[i],
                "pool": s.pool.map(|p| plan.pools[p].name.as_str()),
                "estimate_ms": ms(plan.estimate(i)),
                "estimate_explicit": s.sim.explicit,
                "start_ms": ms(schedule.start[i]),
                "finish_ms": ms(schedule.finish[i]),
                "critical": on_path[i],
            })
        })
        .collect();
    json!({
        "name": plan.name,
        "mode": plan.mode,
        "modes": plan.modes,
        "concurrency": limit,
        "pools": plan.pools.iter().map(|p| json!({"name": p.name, "size": p.size})).collect::<Vec<_>>(),
        "inputs": plan.inputs.iter().map(|i| json!({
            "name": i.name,
            "type": i.ty,
            "value": if i.secret && i.value.is_some() { json!("***") } else { json!(i.value) },
            "origin": i.origin,
        })).collect::<Vec<_>>(),
        "steps": steps,
        "modules": plan.groups.iter().enumerate().map(|(g, group)| {
            let members = plan.group_members(g);
            json!({
                "id": group.id,
                "name": group.name,
                "file": group.file,
                "parent": group.parent.map(|p| plan.groups[p].id.as_str()),
                "steps": members.iter().map(|&i| plan.steps[i].id.as_str()).collect::<Vec<_>>(),
                "start_ms": members.iter().map(|&i| ms(schedule.start[i])).min(),
                "finish_ms": members.iter().map(|&i| ms(schedule.finish[i])).max(),
            })
        }).collect::<Vec<_>>(),
        "stages": stages.iter().map(|s| s.iter().map(|&i| plan.steps[i].id.as_str()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "critical_path": critical.iter().map(|&i| plan.steps[i].id.as_str()).collect::<Vec<_>>(),
        "predicted_ms": { "unlimited": ms(plan.critical_length()), "limited": ms(schedule.makespan) },
        "rto_ms": plan.rto.map(ms),
        "rto_met": plan.rto.map(|r| schedule.makespan <= r),
    })
}
