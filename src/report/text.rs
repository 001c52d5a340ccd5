//! The report as plain text, for a terminal.

use std::fmt::Write;
use std::time::Duration;

use super::Report;
use crate::runbook::duration::format as dur;

pub fn ms(v: u64) -> String {
    dur(Duration::from_millis(v))
}

pub fn opt_ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), ms)
}

impl super::StepRow {
    /// The step table's columns after the id, the same in every format: status, tries, start,
    /// took, planned start, estimate, history.
    pub fn cells(&self) -> [String; 7] {
        [
            self.status.clone(),
            self.attempts.to_string(),
            opt_ms(self.start_ms),
            opt_ms(self.duration_ms),
            ms(self.predicted_start_ms),
            ms(self.estimate_ms),
            opt_ms(self.history_ms),
        ]
    }
}

impl super::ModuleRow {
    /// The module table's columns after the id: status, steps, start, end, planned start and
    /// end.
    pub fn cells(&self) -> [String; 6] {
        [
            self.status.clone(),
            self.steps.to_string(),
            opt_ms(self.start_ms),
            opt_ms(self.end_ms),
            ms(self.predicted_start_ms),
            ms(self.predicted_end_ms),
        ]
    }
}

/// "met, 2m to spare" / "missed by 1m" / "not reached (failed)".
pub fn rto_line(r: &Report) -> Option<String> {
    let rto = r.rto_ms?;
    Some(match r.rto_met {
        Some(true) => format!("{}: met, {} to spare", ms(rto), ms(rto - r.duration_ms)),
        _ if r.status == "succeeded" => {
            format!("{}: MISSED by {}", ms(rto), ms(r.duration_ms - rto))
        }
        _ => format!("{}: not reached (the run {})", ms(rto), r.status),
    })
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} — run {} ({})", r.runbook, r.run_id, r.mode);
    let _ = writeln!(
        o,
        "  file       {} (sha256 {})",
        r.file,
        &r.hash[..r.hash.len().min(12)]
    );
    let _ = writeln!(o, "  operator   {}, started {}", r.operator, r.started_at);
    let _ = writeln!(
        o,
        "  result     {} in {}",
        r.status.to_uppercase(),
        ms(r.duration_ms)
    );
    let _ = writeln!(
        o,
        "  predicted  {} (critical path: {})",
        ms(r.predicted_ms),
        r.critical_path.join(" -> ")
    );
    if let Some(line) = rto_line(r) {
        let _ = writeln!(o, "  rto        {line}");
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(o, "\ninputs");
        for (k, v) in &r.inputs {
            let _ = writeln!(o, "  {k} = {v}");
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(o, "\napprovals");
        for a in &r.approvals {
            let when = a.at.clone().unwrap_or_else(|| format!("+{}", ms(a.t_ms)));
            let sim = if a.simulated { " (simulated)" } else { "" };
            let _ = writeln!(o, "  {} approved by {} at {when}{sim}", a.step, a.who());
        }
    }
    let width = r
        .steps
        .iter()
        .map(|s| s.id.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    let _ = writeln!(o, "\nsteps (* critical path)");
    let _ = writeln!(
        o,
        "    {:<width$}  {:<9}  {:>5}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "step", "status", "tries", "start", "took", "planned", "est", "history"
    );
    for s in &r.steps {
        let [status, tries, start, took, planned, est, history] = s.cells();
        let _ = writeln!(
            o,
            "  {} {:<width$}  {status:<9}  {tries:>5}  {start:>8}  {took:>8}  {planned:>8}  {est:>8}  {history:>8}",
            if s.critical { '*' } else { ' ' },
            s.id,
        );
    }
    if !r.modules.is_empty() {
        let _ = writeln!(o, "\nmodules");
        let _ = writeln!(
            o,
            "    {:<width$}  {:<10}  {:>5}  {:>8}  {:>8}  {:>8}  {:>8}",
            "module", "status", "steps", "start", "end", "planned", "to"
        );
        for m in &r.modules {
            let [status, steps, start, end, planned, to] = m.cells();
            let _ = writeln!(
                o,
                "    {:<width$}  {status:<10}  {steps:>5}  {start:>8}  {end:>8}  {planned:>8}  {to:>8}",
                m.id,
            );
        }
    }
    let failed: Vec<_> = r.steps.iter().filter(|s| s.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\nfailures");
        for s in failed {
            let _ = writeln!(
                o,
                "  {} ({}): {}",
                s.id,
                s.status,
                s.error.as_deref().unwrap_or("")
            );
            for line in s.log_tail.iter().flat_map(|t| t.lines()) {
                let _ = writeln!(o, "    | {line}");
            }
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(o, "\nrollback: {}", rb.headline());
        for a in &rb.actions {
            let err = a
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            let _ = writeln!(o, "  undo {} {} at +{}{err}", a.step, a.status, ms(a.t_ms));
        }
    }
    for res in &r.resumes {
        let _ = writeln!(
            o,
            "\nresumed by {} at {} (+{})",
            res.operator,
            res.at,
            ms(res.t_ms)
        );
    }
    for i in &r.interruptions {
        let _ = writeln!(o, "interrupted: {i} ms");
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}
