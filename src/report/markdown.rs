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
    let _ = writeln!(o, "| Result | **{}** |", cell(&r.headline()));
    if let Some(line) = rto_line(r) {
        let _ = writeln!(o, "| RTO | {line} |");
    }
    let _ = writeln!(o, "| Run | `{}` ({}) |", r.run_id, r.mode);
    let _ = writeln!(
        o,
        "| Runbook | `{}` (sha256 `{}`) |",
        cell(&r.file),
        &r.hash[..r.hash.len().min(12)]
    );
    let _ = writeln!(o, "| Operator | {} |", cell(&r.operator));
    let _ = writeln!(o, "| Started | {} |", r.started_at);
    let _ = writeln!(o, "| Predicted | {} |", ms(r.predicted_ms));
    let _ = writeln!(
        o,
        "| Critical path | {} |",
        cell(&r.critical_path.join(" → "))
    );
    let _ = writeln!(o, "\n## Sessions\n");
    for s in &r.sessions {
        let _ = writeln!(o, "{}. {}", s.session, cell(&s.line()));
    }
    for (after, gap) in r.gaps() {
        let _ = writeln!(o, "\nGap of {} after session {after}.", ms(gap));
    }
    if !r.step_notes.is_empty() {
        let _ = writeln!(o, "\n## Recorded by steps\n");
        for n in &r.step_notes {
            let _ = writeln!(o, "- `{}`: {}", n.step, cell(&n.note));
        }
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(
            o,
            "\n## Inputs (as the run started)\n\n| input | value |\n|---|---|"
        );
        for (k, v) in &r.inputs {
            let _ = writeln!(o, "| `{k}` | `{}` |", cell(&v.to_string()));
        }
    }
    if !r.approvals.is_empty() {
        let _ = writeln!(
            o,
            "\n## Approvals\n\n| step | decision | by | at | session |\n|---|---|---|---|---:|"
        );
        for a in &r.approvals {
            let when = a.at.clone().unwrap_or_else(|| format!("+{}", ms(a.t_ms)));
            let sim = if a.simulated { " (simulated)" } else { "" };
            let _ = writeln!(
                o,
                "| `{}` | {} | {}{sim} | {when} | {} |",
                a.step,
                a.decision,
                cell(&a.who()),
                a.session
            );
        }
    }
    let _ = writeln!(
        o,
        "\n## Steps\n\n| | step | status | tries | start | took | planned start | estimate |\n|---|---|---|---:|---:|---:|---:|---:|"
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
    let tries: Vec<_> = r.failed_tries().collect();
    if !tries.is_empty() {
        let _ = writeln!(o, "\n## Failures (every try that did not succeed)");
        for (s, t) in tries {
            let _ = writeln!(
                o,
                "\n### `{}` ({}): {} at +{}\n\n{}",
                s.id,
                t.label(),
                t.status,
                ms(t.start_ms),
                t.error
                    .as_deref()
                    .unwrap_or("no end recorded: effect unknown")
            );
            if let Some(tail) = &t.stderr_tail {
                let _ = writeln!(o, "\n```text\n{tail}\n```");
            }
        }
    }
    let outputs: Vec<_> = r
        .steps
        .iter()
        .flat_map(|s| s.shown_outputs().into_iter().map(move |(k, v)| (s, k, v)))
        .collect();
    if !outputs.is_empty() {
        let _ = writeln!(
            o,
            "\n## Outputs\n\n| step | output | value |\n|---|---|---|"
        );
        for (s, k, v) in outputs {
            let _ = writeln!(o, "| `{}` | `{k}` | `{}` |", s.id, cell(&v));
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            o,
            "\n## Rollback: {}\n\n| undo of | status | at | session |\n|---|---|---:|---:|",
            cell(&rb.headline())
        );
        for a in &rb.actions {
            let _ = writeln!(
                o,
                "| `{}` | {} | +{} | {} |",
                a.step,
                a.status,
                ms(a.t_ms),
                a.session
            );
        }
    }
    if !r.notes.is_empty() {
        let _ = writeln!(o, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(o, "- {}", cell(n));
        }
    }
    o
}
