//! `ripcord runs`: recorded runs, newest first.

use std::time::Duration;

use serde_json::json;

use crate::cli::RunsArgs;
use crate::exit;
use crate::journal::StateDir;
use crate::journal::record::RunStatus;
use crate::runbook::duration::format as dur;

use super::recorded::{final_status, header};

pub fn run(args: &RunsArgs) -> u8 {
    let state = StateDir::resolve(args.state.state_dir.as_deref());
    let ids = match state.run_ids() {
        Ok(ids) => ids,
        Err(e) => {
            eprintln!("error: cannot list runs in {}: {e}", state.root().display());
            return exit::INVALID;
        }
    };
    let mut rows = Vec::new();
    for id in ids.iter().rev() {
        let Ok(read) = state.read_run(id) else {
            continue;
        };
        let Some(h) = header(&read) else { continue };
        let last = read.records.iter().map(|r| r.t_ms()).max().unwrap_or(0);
        let result = match final_status(&read) {
            Some(RunStatus::Succeeded) => "succeeded",
            Some(RunStatus::Failed) => "failed",
            Some(RunStatus::Interrupted) => "interrupted",
            None => "incomplete",
        };
        let rto_met = match (h.rto_ms, final_status(&read)) {
            (Some(rto), Some(RunStatus::Succeeded)) => Some(last <= rto),
            _ => None,
        };
        rows.push(json!({
            "run_id": h.run_id,
            "runbook": h.runbook,
            "mode": h.mode.as_str(),
            "started_at": h.started_at,
            "duration_ms": last,
            "result": result,
            "rto_met": rto_met,
        }));
    }
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
        "{:<32} {:<24} {:<8} {:<24} {:>9} {:<12} rto",
        "RUN", "RUNBOOK", "MODE", "STARTED", "DURATION", "RESULT"
    );
    for r in &rows {
        let rto = match r["rto_met"].as_bool() {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        };
        println!(
            "{:<32} {:<24} {:<8} {:<24} {:>9} {:<12} {rto}",
            r["run_id"].as_str().unwrap_or(""),
            r["runbook"].as_str().unwrap_or(""),
            r["mode"].as_str().unwrap_or(""),
            r["started_at"].as_str().unwrap_or(""),
            dur(Duration::from_millis(
                r["duration_ms"].as_u64().unwrap_or(0)
            )),
            r["result"].as_str().unwrap_or(""),
        );
    }
    exit::OK
}
