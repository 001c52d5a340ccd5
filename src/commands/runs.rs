//! `ripcord runs`: recorded runs, newest first.

use std::collections::HashMap;

use serde_json::json;

use crate::cli::RunsArgs;
use crate::exit;
use crate::report;
use crate::report::text::ms;
use crate::state::{StateBackend, StateDir};

pub fn run(args: &RunsArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let ids = match state.run_ids() {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("error: cannot list runs in {}: {e}", state.root().display());
            return exit::INVALID;
        }
    };
    // Newest first by start time (milliseconds), not by id: ids made in the same second sort by
    // their random suffix. A journal that cannot be read is listed as such, not dropped.
    let mut rows: Vec<(String, serde_json::Value)> = ids
        .iter()
        .map(|id| {
            let row = state
                .read_run(id)
                .ok()
                .and_then(|read| report::build(&read, &HashMap::new()))
                .map(|r| {
                    // The same summary as the run's report, so the two never disagree.
                    json!({
                        "run_id": r.run_id,
                        "runbook": r.runbook,
                        "mode": r.mode,
                        "started_at": r.started_at,
                        "duration_ms": r.duration_ms,
                        "result": match &r.rollback {
                            Some(rb) => {
                                let forced = if rb.forced.is_some() { ", FORCED" } else { "" };
                                match rb.status.as_str() {
                                    "succeeded" => format!("{} (rolled back{forced})", r.status),
                                    other => format!("{} (rollback {other}{forced})", r.status),
                                }
                            }
                            None => r.status.clone(),
                        },
                        "rollback_forced": r.rollback.as_ref().map(|rb| rb.forced.is_some()),
                        "rollback": r.rollback.as_ref().map(|rb| rb.status.clone()),
                        "rto_met": r.rto_met,
                    })
                })
                .unwrap_or_else(|| json!({ "run_id": id, "result": "unreadable" }));
            let started = row["started_at"].as_str().unwrap_or("").to_string();
            (started, row)
        })
        .collect();
    rows.sort_by(|(a, ra), (b, rb)| {
        b.cmp(a)
            .then_with(|| rb["run_id"].as_str().cmp(&ra["run_id"].as_str()))
    });
    let rows: Vec<serde_json::Value> = rows.into_iter().map(|(_, r)| r).collect();
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
        "{:<30} {:<24} {:<8} {:<25} {:>9} {:<28} RTO",
        "RUN", "RUNBOOK", "MODE", "STARTED", "DURATION", "RESULT"
    );
    for r in &rows {
        let rto = match r["rto_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        };
        println!(
            "{:<30} {:<24} {:<8} {:<25} {:>9} {:<28} {rto}",
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
