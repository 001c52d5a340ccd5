//! The report as Markdown, for a ticket or a wiki page.

use std::fmt::Write;

use super::Report;
use super::text::{ms, rto_line};

/// Text for a table cell or a line: one line, `|` escaped, and nothing a Markdown renderer
/// would take as HTML, emphasis or a link.
fn cell(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in super::text::printable(s).chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            '|' | '*' | '_' | '[' | ']' | '`' | '#' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline code that its content cannot close: fenced by more backticks than it holds in a row.
fn code(s: &str) -> String {
    let s = super::text::printable(s)
        .replace(['\n', '\r'], " ")
        .replace('|', "\\|");
    let ticks = "`".repeat(longest_run(&s, '`') + 1);
    format!("{ticks} {s} {ticks}")
}

/// A fenced block that its content cannot close.
fn block(s: &str) -> String {
    let s = super::text::printable(s);
    let fence = "`".repeat(longest_run(&s, '`').max(2) + 1);
    format!("{fence}text\n{s}\n{fence}")
}

fn longest_run(s: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in s.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# DR run report: {}\n", cell(&r.runbook));
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| Result | **{}** |", cell(&r.headline()));
    if let Some(line) = rto_line(r) {
        let _ = writeln!(o, "| RTO | {} |", cell(&line));
    }
    let _ = writeln!(o, "| Run | {} ({}) |", code(&r.run_id), cell(&r.how()));
    let _ = writeln!(
        o,
        "| Runbook | {} (sha256 {}) |",
        code(&r.file),
        code(&super::text::short_hash(&r.hash))
    );
    let _ = writeln!(o, "| Operator | {} |", cell(&r.operator));
    let _ = writeln!(o, "| Started | {} |", cell(&r.started_at));
    let _ = writeln!(o, "| Predicted | {} |", ms(r.predicted_ms));
    let _ = writeln!(
        o,
        "| Critical path | {} |",
        cell(&r.critical_path.join(" → "))
    );
    for w in r.warnings() {
        let _ = writeln!(o, "\n> **Warning:** {}", cell(&w));
    }
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
            let _ = writeln!(o, "- {}: {}", code(&n.step), cell(&n.note));
        }
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(
            o,
            "\n## Inputs (as the run started)\n\n| input | value |\n|---|---|"
        );
        for (k, v) in &r.inputs {
            let _ = writeln!(o, "| {} | {} |", code(k), code(&v.to_string()));
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
                "| {} | {} | {}{sim} | {} | {} |",
                code(&a.step),
                cell(&a.decision),
                cell(&a.who()),
                cell(&when),
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
        let cells: Vec<String> = s.cells().iter().map(|c| cell(c)).collect();
        let _ = writeln!(o, "| {star} | {} | {} |", code(&s.id), cells.join(" | "));
    }
    if !r.modules.is_empty() {
        let _ = writeln!(
            o,
            "\n## Modules\n\n| module | status | steps | start | end | planned start | planned end |\n|---|---|---:|---:|---:|---:|---:|"
        );
        for m in &r.modules {
            let cells: Vec<String> = m.cells().iter().map(|c| cell(c)).collect();
            let _ = writeln!(o, "| {} | {} |", code(&m.id), cells.join(" | "));
        }
    }
    let tries: Vec<_> = r.failed_tries().collect();
    if !tries.is_empty() {
        let _ = writeln!(o, "\n## Failures (every try that did not succeed)");
        for (s, t) in tries {
            let _ = writeln!(
                o,
                "\n### {} ({}): {} at +{}\n\n{}",
                code(&s.id),
                t.label(),
                cell(&t.status),
                ms(t.start_ms),
                cell(
                    t.error
                        .as_deref()
                        .unwrap_or("no end recorded: effect unknown")
                )
            );
            if let Some(tail) = &t.stderr_tail {
                let _ = writeln!(o, "\n{}", block(tail));
            }
        }
    }
    let outputs = r.outputs();
    if !outputs.is_empty() {
        let _ = writeln!(
            o,
            "\n## Outputs\n\n| step | output | value |\n|---|---|---|"
        );
        for (s, k, v) in outputs {
            let _ = writeln!(o, "| {} | {} | {} |", code(s), code(&k), code(&v));
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            o,
            "\n## Rollback: {}\n\n| undo of | status | at | session | error |\n|---|---|---:|---:|---|",
            cell(&rb.headline())
        );
        for a in &rb.actions {
            let _ = writeln!(
                o,
                "| {} | {} | +{} | {} | {} |",
                code(&a.step),
                cell(&a.status),
                ms(a.t_ms),
                a.session,
                cell(a.error.as_deref().unwrap_or(""))
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
