//! The report as Markdown, for a ticket or a wiki page.

use std::fmt::Write;

use super::Report;
use super::text::{ms, rto_line};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# DR run report: {}\n", r.runbook);
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Run | `{}` ({}) |", r.run_id, r.mode);
    let _ = writeln!(
        o,
        "| Runbook | `{}` (sha256 `{}`) |",
        cell(&r.file),
        &r.hash[..r.hash.len().min(12)]
    );
    let _ = writeln!(o, "| Operator | {} |", cell(&r.operator));
    let _ = writeln!(o, "| Started | {} |", r.started_at);
    let _ = writeln!(o, "| Result | **{}** in {} |", r.status, ms(r.duration_ms));
    let _ = writeln!(o, "| Predicted | {} |", ms(r.predicted_ms));
    if let Some(line) = rto_line(r) {
        let _ = writeln!(o, "| RTO | {line} |");
    }
    let _ = writeln!(
        o,
        "| Critical path | {} |",
        cell(&r.critical_path.join(" → "))
    );
    if !r.inputs.is_empty() {
        let _ = writeln!(o, "\n## Inputs\n\n| input | value |\n|---|---|");
        for (k, v) in &r.inputs {
            let _ = writeln!(o, "| `{k}` | `{}` |", cell(&v.to_string()));
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(
            o,
            "\n## Approvals\n\n| step | approver | at |\n|---|---|---|"
        );
        for a in &r.approvals {
            let when = a.at.clone().unwrap_or_else(|| format!("+{}", ms(a.t_ms)));
            let sim = if a.simulated { " (simulated)" } else { "" };
            let _ = writeln!(o, "| `{}` | {}{sim} | {when} |", a.step, cell(&a.who()));
        }
    }
    let _ = writeln!(
        o,
        "\n## Steps\n\n| | step | status | tries | start | took | planned start | estimate | history |\n|---|---|---|---:|---:|---:|---:|---:|---:|"
    );
    for s in &r.steps {
        let star = if s.critical { "★" } else { "" };
        let _ = writeln!(o, "| {star} | `{}` | {} |", s.id, s.cells().join(" | "));
    }
    if !r.modules.is_empty() {
        let _ = writeln!(
            o,
            "\n## Modules\n\n| module | status | steps | start | end | planned start | planned end |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for m in &r.modules {
            let _ = writeln!(o, "| `{}` | {} |", m.id, m.cells().join(" | "));
        }
    }
    let failed: Vec<_> = r.steps.iter().filter(|s| s.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n## Failures");
        for s in failed {
            let _ = writeln!(
                o,
                "\n### `{}` ({})\n\n{}",
                s.id,
                s.status,
                s.error.as_deref().unwrap_or("")
            );
            if let Some(tail) = &s.log_tail {
                let _ = writeln!(o, "\n```text\n{tail}\n```");
            }
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            o,
            "\n## Rollback: {}\n\n| undo of | status | at |\n|---|---|---:|",
            rb.headline()
        );
        for a in &rb.actions {
            let _ = writeln!(o, "| `{}` | {} | +{} |", a.step, a.status, ms(a.t_ms));
        }
    }
    if !r.resumes.is_empty() || !r.notes.is_empty() || !r.interruptions.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for i in &r.interruptions {
            let _ = writeln!(o, "- interrupted: {i} ms");
        }
        for res in &r.resumes {
            let _ = writeln!(o, "- resumed by {} at {}", res.operator, res.at);
        }
        for n in &r.notes {
            let _ = writeln!(o, "- {n}");
        }
    }
    o
}
