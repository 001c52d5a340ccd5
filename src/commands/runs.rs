//! `ripcord runs`: recorded runs, newest first.

use std::collections::HashMap;

use serde_json::json;

use crate::cli::RunsArgs;
use crate::exit;
use crate::journal::StateDir;
use crate::report;
use crate::report::text::ms;

pub fn run(args: &RunsArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let ids = match state.run_ids() {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("error: cannot list runs in {}: {e}", state.root().display());
            return exit::INVALID;
        }
    };
    // Run ids start with their time, so the newest sorts last.
    let rows: Vec<_> = ids
        .iter()
        .rev()
        .filter_map(|id| {
            let read = state.read_run(id).ok()?;
            // The same summary as the run's report, so the two never disagree.
            let r = report::build(&read, &HashMap::new())?;
            Some(json!({
                "run_id": r.run_id,
                "runbook": r.runbook,
                "mode": r.mode,
                "started_at": r.started_at,
                "duration_ms": r.duration_ms,
                "result": r.status,
                "rto_met": r.rto_met,
            }))
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("JSON values serialize")
        );
        return exit::OK;
    }
    if rows.is_empty() {
        println!("no runs recorded in {}", state.root().display());
        return exit::OK;
    }
    println!(
        "{:<30} {:<24} {:<8} {:<25} {:>9} {:<12} RTO",
        "RUN", "RUNBOOK", "MODE", "STARTED", "DURATION", "RESULT"
    );
    for r in &rows {
        let rto = match r["rto_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        };
        println!(
            "{:<30} {:<24} {:<8} {:<25} {:>9} {:<12} {rto}",
            r["run_id"].as_str().unwrap_or(""),
            r["runbook"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["started_at"].as_str().unwrap_or(""),
            ms(r["duration_ms"].as_u64().unwrap_or(0)),
            r["result"].as_str().unwrap_or(""),
        );
    }
    exit::OK
}
