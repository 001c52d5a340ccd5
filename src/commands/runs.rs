//! `ripcord runs`: recorded runs, newest first, with the same summary as each run's report:
//! status, whether it was rolled back, how many sessions worked on it (and how many crashed),
//! its wall-clock time, and the RTO verdict for finished real runs.

use serde_json::{Value as Json, json};

use crate::cli::{RunsArgs, RunsStatus};
use crate::error::CommandResult;
use crate::exit;
use crate::report;
use crate::report::text::ms;
use crate::state::Scope;

pub fn run(args: &RunsArgs) -> CommandResult {
    let state = crate::state::open(&args.state).map_err(|e| crate::invalid!("{e}"))?;
    let ids = match state.run_ids() {
        Ok(ids) => ids,
        Err(e) => {
            return Err(crate::invalid!(
                "cannot list runs in {}: {e}",
                state.location()
            ));
        }
    };
    // Newest first by start time (milliseconds), not by id: ids made in the same second sort by
    // their random suffix. A journal that cannot be read is listed as such, not dropped.
    let mut rows: Vec<Json> = ids
        .iter()
        .map(|id| {
            state
                .read_run(id)
                .ok()
                .and_then(|read| report::build(&read))
                .map(|mut r| {
                    r.mark_live(state.is_held(&Scope::Run(id.clone())).unwrap_or(false));
                    summary(&r)
                })
                .unwrap_or_else(|| json!({ "run_id": id, "status": "unreadable" }))
        })
        .filter(|row| keep(args, row))
        .collect();
    rows.sort_by(|a, b| {
        let key = |r: &Json| {
            (
                r["started_at"].as_str().unwrap_or("").to_string(),
                r["run_id"].as_str().unwrap_or("").to_string(),
            )
        };
        key(b).cmp(&key(a))
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("JSON values serialize")
        );
        return Ok(exit::OK);
    }
    if rows.is_empty() {
        let filtered = args.runbook.is_some() || args.status.is_some();
        println!(
            "no runs{} recorded in {}",
            if filtered { " of that kind" } else { "" },
            state.location()
        );
        return Ok(exit::OK);
    }
    println!(
        "{:<30} {:<24} {:<18} {:<25} {:>9} {:>8}  {:<12} {:<18} RTO",
        "RUN", "RUNBOOK", "MODE", "STARTED", "WALL", "SESSIONS", "STATUS", "ROLLED BACK"
    );
    for r in &rows {
        let rto = r["rto"].as_str().unwrap_or("-");
        let sessions = match (r["sessions"].as_u64(), r["crashed"].as_u64()) {
            (Some(n), Some(c)) if c > 0 => format!("{n} ({c}✕)"),
            (Some(n), _) => n.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<30} {:<24} {:<18} {:<25} {:>9} {:>8}  {:<12} {:<18} {rto}",
            r["run_id"].as_str().unwrap_or(""),
            r["runbook"].as_str().unwrap_or(""),
            // The execution kind, and the runbook's mode when it has modes: `real/test`.
            match r["run_mode"].as_str().filter(|m| !m.is_empty()) {
                Some(m) => format!("{}/{m}", r["mode"].as_str().unwrap_or("")),
                None => r["mode"].as_str().unwrap_or("").to_string(),
            },
            r["started_at"].as_str().unwrap_or(""),
            r["wall_ms"].as_u64().map_or_else(|| "-".into(), ms),
            sessions,
            r["status"].as_str().unwrap_or(""),
            r["rolled_back"].as_str().unwrap_or("-"),
        );
    }
    Ok(exit::OK)
}

/// A run's line, from its report, so the two never disagree.
fn summary(r: &report::Report) -> Json {
    let rolled_back = r.rollback.as_ref().map(|rb| {
        let forced = if rb.forced.is_some() { ", forced" } else { "" };
        match rb.status.as_str() {
            "succeeded" if rb.cleanup => "cleaned up".to_string(),
            "succeeded" => format!("yes{forced}"),
            other => format!("partly ({other}{forced})"),
        }
    });
    // The RTO is judged only for a real run that ended (succeeded or failed), in the report's
    // words: met, missed (it succeeded too late), not reached (it failed or was rolled back).
    let judged = r.mode == "real" && matches!(r.status.as_str(), "succeeded" | "failed");
    let cleaned = r.rollback.as_ref().is_some_and(|rb| rb.cleanup);
    let rto = match (judged, r.rto_ms, r.rto_met) {
        (true, Some(_), Some(true)) => Some("met"),
        (true, Some(_), _) if r.status == "succeeded" && (r.rollback.is_none() || cleaned) => {
            Some("missed")
        }
        (true, Some(_), _) => Some("not reached"),
        _ => None,
    };
    json!({
        "run_id": r.run_id,
        "runbook": r.runbook,
        "mode": r.mode,
        "run_mode": r.run_mode,
        "started_at": r.started_at,
        "wall_ms": r.wall_ms,
        "sessions": r.sessions.len(),
        "crashed": r.crashed().count(),
        "status": r.status,
        "rolled_back": rolled_back,
        "rollback_forced": r.rollback.as_ref().map(|rb| rb.forced.is_some()),
        "rto": rto,
        "rto_met": if judged { r.rto_met } else { None },
        // The first version's keys, kept for scripts that read them.
        "duration_ms": r.wall_ms,
        "rollback": r.rollback.as_ref().map(|rb| rb.status.clone()),
        "result": match &r.rollback {
            Some(rb) if rb.status == "succeeded" && rb.cleanup => format!("{} (cleaned up)", r.status),
            Some(rb) if rb.status == "succeeded" => format!("{} (rolled back)", r.status),
            Some(rb) => format!("{} (rollback {})", r.status, rb.status),
            None => r.status.clone(),
        },
    })
}

fn keep(args: &RunsArgs, row: &Json) -> bool {
    if let Some(name) = &args.runbook
        && row["runbook"].as_str() != Some(name.as_str())
    {
        return false;
    }
    let status = row["status"].as_str().unwrap_or("");
    match args.status {
        None => true,
        Some(RunsStatus::RolledBack) => !row["rolled_back"].is_null(),
        Some(RunsStatus::Succeeded) => status == "succeeded",
        Some(RunsStatus::Failed) => status == "failed",
        Some(RunsStatus::Interrupted) => status == "interrupted",
        Some(RunsStatus::Incomplete) => status == "incomplete",
        Some(RunsStatus::Running) => status == "running",
        Some(RunsStatus::Unreadable) => status == "unreadable",
    }
}
