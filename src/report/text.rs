//! The report as plain text, for a terminal; and the phrases every format shares, so that text,
//! Markdown, HTML and JUnit say the same facts in the same words.

use std::fmt::Write;
use std::time::Duration;

use serde_json::Value as Json;

use super::sessions::SessionRow;
use super::{Report, StepRow, TryRow};
use crate::runbook::duration::format as dur;

pub fn ms(v: u64) -> String {
    dur(Duration::from_millis(v))
}

pub fn opt_ms(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), ms)
}

/// `1 step`, `2 steps`.
pub fn count(n: usize, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

impl StepRow {
    /// The step table's columns after the id, the same in every format: status, tries, start,
    /// took, planned start, estimate.
    pub fn cells(&self) -> [String; 6] {
        [
            self.status.clone(),
            self.attempts.to_string(),
            opt_ms(self.start_ms),
            opt_ms(self.duration_ms),
            ms(self.predicted_start_ms),
            ms(self.estimate_ms),
        ]
    }

    /// Outputs worth reading in a report: all but the captured stdout/stderr (whose failing
    /// tails are shown with the failures), each value on one line and cut at 200 characters.
    pub fn shown_outputs(&self) -> Vec<(String, String)> {
        self.outputs
            .iter()
            .filter(|(k, v)| !matches!(k.as_str(), "stdout" | "stderr") && !is_blank(v))
            .map(|(k, v)| {
                let text = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let line = text.replace('\n', "⏎");
                let cut = if line.chars().count() > 200 {
                    format!("{}…", line.chars().take(199).collect::<String>())
                } else {
                    line
                };
                (k.clone(), cut)
            })
            .collect()
    }
}

fn is_blank(v: &Json) -> bool {
    v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty())
}

impl TryRow {
    /// `session 1, attempt 2`.
    pub fn label(&self) -> String {
        format!("session {}, attempt {}", self.session, self.attempt)
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

impl SessionRow {
    /// `resume by alice@db-1 (pid 42), 20:01:03Z → 20:01:09Z: crashed`, the same in every
    /// format.
    pub fn line(&self) -> String {
        let mut text = format!("{} by {}", self.kind, self.by);
        if !self.host.is_empty() {
            text.push_str(&format!("@{}", self.host));
        }
        text.push_str(&format!(
            " (pid {}), {} → {}: {}",
            self.pid,
            self.started_at,
            self.ended_at.as_deref().unwrap_or("-"),
            self.end
        ));
        match self.end.as_str() {
            "crashed" => text.push_str(" (its journal stops here: no end was recorded)"),
            "interrupted" => {
                if let Some(sig) = &self.signal {
                    text.push_str(&format!(" by {sig}"));
                }
            }
            _ => {}
        }
        if !self.inputs.is_empty() {
            let given: Vec<String> = self
                .inputs
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}={}",
                        v.as_str().map_or_else(|| v.to_string(), str::to_string)
                    )
                })
                .collect();
            text.push_str(&format!("; inputs changed: {}", given.join(", ")));
        }
        text
    }
}

impl Report {
    /// `SUCCEEDED in 1m 5s of wall-clock time, 3 sessions (1 crashed)`; for a run rolled back
    /// later, how long the run itself took, then the rollback.
    pub fn headline(&self) -> String {
        let mut text = format!(
            "{} in {}",
            self.status.to_uppercase(),
            ms(self.run_end_ms())
        );
        if self.mode == "dry-run" {
            text.push_str(" of virtual time");
        } else {
            text.push_str(" of wall-clock time");
        }
        let crashed = self.crashed().count();
        if self.sessions.len() > 1 || crashed > 0 {
            text.push_str(&format!(", {}", count(self.sessions.len(), "session")));
            if crashed > 0 {
                text.push_str(&format!(" ({crashed} crashed)"));
            }
        }
        if let Some(rb) = &self.rollback {
            let start = self
                .sessions
                .iter()
                .find(|s| s.kind == "rollback")
                .map_or(0, |s| s.start_ms);
            text.push_str(&format!(
                "; {} ({}{}) from +{}, {} in all",
                if rb.cleanup {
                    "CLEANED UP"
                } else {
                    "ROLLED BACK"
                },
                rb.status,
                if rb.forced.is_some() { ", forced" } else { "" },
                ms(start),
                ms(self.wall_ms)
            ));
        }
        text
    }

    /// Every step's outputs worth reading (see [`StepRow::shown_outputs`]), as (step id, key,
    /// value), in step order: the outputs table of every format.
    pub fn outputs(&self) -> Vec<(&str, String, String)> {
        self.steps
            .iter()
            .flat_map(|s| {
                s.shown_outputs()
                    .into_iter()
                    .map(move |(k, v)| (s.id.as_str(), k, v))
            })
            .collect()
    }

    /// The gaps between sessions: `(after session, ms)` for each gap of a second or more.
    pub fn gaps(&self) -> Vec<(usize, u64)> {
        self.sessions
            .windows(2)
            .map(|w| (w[0].session, w[1].start_ms.saturating_sub(w[0].end_ms)))
            .filter(|&(_, gap)| gap >= 1000)
            .collect()
    }
}

/// "met, 2m to spare" / "MISSED by 1m" / "not reached (the run failed)".
pub fn rto_line(r: &Report) -> Option<String> {
    let rto = r.rto_ms?;
    if r.mode == "check" {
        return Some(format!(
            "{}: not judged (a pre-flight recovers nothing)",
            ms(rto)
        ));
    }
    let clock = if r.mode == "dry-run" {
        "predicted"
    } else {
        "wall clock"
    };
    let judged = r.judged_ms();
    Some(match r.rto_met {
        Some(true) => format!(
            "{}: met, {} to spare ({clock}{})",
            ms(rto),
            ms(rto.saturating_sub(judged)),
            if judged < r.wall_ms {
                ", before the cleanup"
            } else {
                ""
            }
        ),
        _ if r.rollback.as_ref().is_some_and(|rb| !rb.cleanup) => {
            format!("{}: not reached (rolled back)", ms(rto))
        }
        _ if r.status == "succeeded" => format!(
            "{}: MISSED by {} ({clock})",
            ms(rto),
            ms(judged.saturating_sub(rto))
        ),
        _ => format!("{}: not reached (the run {})", ms(rto), r.status),
    })
}

/// The first 12 characters of the runbook's hash (whatever the journal holds).
pub fn short_hash(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Text from a journal made safe for a terminal: control characters (escape sequences that
/// clear the screen or set the title, carriage returns that overwrite a line) are shown as
/// `\u{..}`, never sent; newlines and tabs stay.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn render(r: &Report) -> String {
    printable(&render_raw(r))
}

fn render_raw(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} — run {} ({})", r.runbook, r.run_id, r.how());
    let _ = writeln!(o, "  result     {}", r.headline());
    if let Some(line) = rto_line(r) {
        let _ = writeln!(o, "  rto        {line}");
    }
    for w in r.warnings() {
        let _ = writeln!(o, "  WARNING    {w}");
    }
    let _ = writeln!(
        o,
        "  file       {} (sha256 {})",
        r.file,
        short_hash(&r.hash)
    );
    let _ = writeln!(o, "  operator   {}, started {}", r.operator, r.started_at);
    let _ = writeln!(
        o,
        "  predicted  {} (critical path: {})",
        ms(r.predicted_ms),
        r.critical_path.join(" -> ")
    );
    let _ = writeln!(o, "\nsessions");
    for s in &r.sessions {
        let _ = writeln!(o, "  {}. {}", s.session, s.line());
    }
    for (after, gap) in r.gaps() {
        let _ = writeln!(o, "  gap of {} after session {after}", ms(gap));
    }
    if !r.step_notes.is_empty() {
        let _ = writeln!(o, "\nrecorded by steps");
        for n in &r.step_notes {
            let _ = writeln!(o, "  {}: {}", n.step, n.note);
        }
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(o, "\ninputs (as the run started)");
        for (k, v) in &r.inputs {
            let _ = writeln!(o, "  {k} = {v}");
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(o, "\napprovals");
        for a in &r.approvals {
            let when = a.at.clone().unwrap_or_else(|| format!("+{}", ms(a.t_ms)));
            let sim = if a.simulated { " (simulated)" } else { "" };
            let _ = writeln!(
                o,
                "  {} {} by {} at {when}{sim} (session {})",
                a.step,
                a.decision,
                a.who(),
                a.session
            );
        }
    }
    let width = r
        .steps
        .iter()
        .map(|s| s.id.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    let _ = writeln!(o, "\nsteps (* critical path; times from the run's start)");
    let _ = writeln!(
        o,
        "    {:<width$}  {:<9}  {:>5}  {:>8}  {:>8}  {:>8}  {:>8}",
        "step", "status", "tries", "start", "took", "planned", "est"
    );
    for s in &r.steps {
        let [status, tries, start, took, planned, est] = s.cells();
        let _ = writeln!(
            o,
            "  {} {:<width$}  {status:<9}  {tries:>5}  {start:>8}  {took:>8}  {planned:>8}  {est:>8}",
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
    let tries: Vec<_> = r.failed_tries().collect();
    if !tries.is_empty() {
        let _ = writeln!(
            o,
            "\nfailures (every try that did not succeed, in every session)"
        );
        for (s, t) in tries {
            let _ = writeln!(
                o,
                "  {} ({}) {} at +{}: {}",
                s.id,
                t.label(),
                t.status,
                ms(t.start_ms),
                t.error.as_deref().unwrap_or(match t.status.as_str() {
                    "in doubt" => "its session stopped with no end recorded: effect unknown",
                    _ => "",
                })
            );
            for line in t.stderr_tail.iter().flat_map(|t| t.lines()) {
                let _ = writeln!(o, "    | {line}");
            }
        }
    }
    let outputs = r.outputs();
    if !outputs.is_empty() {
        let _ = writeln!(o, "\noutputs");
        for (step, k, v) in outputs {
            let _ = writeln!(o, "  {step}.{k} = {v}");
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
            let _ = writeln!(
                o,
                "  undo {} {} at +{} (session {}){err}",
                a.step,
                a.status,
                ms(a.t_ms),
                a.session
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}
