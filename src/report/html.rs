//! The report as one self-contained HTML page (no external assets, no script, no network) that
//! prints well: the summary, a Gantt chart of the run as inline SVG — each step's actual bar
//! beside its predicted one, the critical path marked, the RTO as a line — and the tables.

use std::fmt::Write;

use super::Report;
use super::junit::escape;
use super::text::{ms, rto_line};

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:1rem;font-weight:600;color:#fff}
.succeeded{background:#1a7f37}.failed{background:#cf222e}.interrupted,.incomplete{background:#9a6700}
.met{color:#1a7f37;font-weight:600}.missed{color:#cf222e;font-weight:600}
pre{background:#f6f8fa;padding:.5rem;overflow:auto;font-size:12px}
svg text{font:11px system-ui,sans-serif;fill:#1b1f24}
rect.predicted{fill:#d0d7de}rect.actual{fill:#54aeff}rect.actual.failed{fill:#cf222e}rect.actual.skipped{fill:#8c959f}
rect.actual.cancelled,rect.actual.in-doubt{fill:#bf8700}rect.critical{stroke:#cf222e;stroke-width:2}
line.rto{stroke:#cf222e;stroke-width:1.5;stroke-dasharray:6 4}line.tick{stroke:#d0d7de}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}tr,svg{break-inside:avoid}}
";

pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>DR report: {} {}</title>\n<style>{STYLE}</style></head><body>\n",
        escape(&r.runbook),
        escape(&r.run_id)
    );
    let _ = writeln!(o, "<h1>DR run report: {}</h1>", escape(&r.runbook));
    let _ = writeln!(
        o,
        "<p><span class=\"badge {}\">{}</span> in {} · run <code>{}</code> ({})</p>",
        escape(&r.status),
        escape(&r.status),
        ms(r.duration_ms),
        escape(&r.run_id),
        escape(&r.mode)
    );
    let _ = writeln!(o, "<table>");
    let rows: Vec<(&str, String)> = vec![
        (
            "Runbook",
            format!(
                "<code>{}</code> (sha256 <code>{}</code>)",
                escape(&r.file),
                escape(&r.hash)
            ),
        ),
        ("Operator", escape(&r.operator)),
        ("Started", escape(&r.started_at)),
        ("Predicted", ms(r.predicted_ms)),
        (
            "RTO",
            match rto_line(r) {
                Some(line) => {
                    let class = if r.rto_met == Some(true) {
                        "met"
                    } else {
                        "missed"
                    };
                    format!("<span class=\"{class}\">{}</span>", escape(&line))
                }
                None => "none set".into(),
            },
        ),
        ("Critical path", escape(&r.critical_path.join(" → "))),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let _ = writeln!(o, "</table>");
    let _ = writeln!(o, "<h2>Timeline</h2>\n{}", gantt(r));
    if !r.approvals.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Approvals</h2><table><tr><th>step</th><th>approver</th><th>at</th></tr>"
        );
        for a in &r.approvals {
            let when = a.at.clone().unwrap_or_else(|| format!("+{}", ms(a.t_ms)));
            let sim = if a.simulated { " (simulated)" } else { "" };
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}{sim}</td><td>{}</td></tr>",
                escape(&a.step),
                escape(&a.who()),
                escape(&when)
            );
        }
        let _ = writeln!(o, "</table>");
    }
    if !r.inputs.is_empty() {
        let _ = writeln!(
            o,
            "<h2>Inputs</h2><table><tr><th>input</th><th>value</th></tr>"
        );
        for (k, v) in &r.inputs {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
                escape(k),
                escape(&v.to_string())
            );
        }
        let _ = writeln!(o, "</table>");
    }
    let _ = writeln!(
        o,
        "<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>tries</th><th>start</th><th>took</th><th>planned start</th><th>estimate</th><th>history</th></tr>"
    );
    for s in &r.steps {
        let star = if s.critical { " ★" } else { "" };
        let [status, rest @ ..] = s.cells();
        let numbers: String = rest
            .iter()
            .map(|c| format!("<td class=\"num\">{}</td>", escape(c)))
            .collect();
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code>{star}</td><td>{}</td>{numbers}</tr>",
            escape(&s.id),
            escape(&status)
        );
    }
    let _ = writeln!(o, "</table>");
    let failed: Vec<_> = r.steps.iter().filter(|s| s.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "<h2>Failures</h2>");
        for s in failed {
            let _ = writeln!(
                o,
                "<h3><code>{}</code> ({})</h3><p>{}</p>",
                escape(&s.id),
                escape(&s.status),
                escape(s.error.as_deref().unwrap_or(""))
            );
            if let Some(tail) = &s.log_tail {
                let _ = writeln!(o, "<pre>{}</pre>", escape(tail));
            }
        }
    }
    if let Some(rb) = &r.rollback {
        let _ = writeln!(
            o,
            "<h2>Rollback: {}</h2><table><tr><th>undo of</th><th>status</th><th>at</th></tr>",
            escape(&rb.headline())
        );
        for a in &rb.actions {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"num\">+{}</td></tr>",
                escape(&a.step),
                escape(&a.status),
                ms(a.t_ms)
            );
        }
        let _ = writeln!(o, "</table>");
    }
    if !r.resumes.is_empty() || !r.notes.is_empty() || !r.interruptions.is_empty() {
        let _ = writeln!(o, "<h2>Notes</h2><ul>");
        for i in &r.interruptions {
            let _ = writeln!(o, "<li>interrupted: {} ms</li>", escape(i));
        }
        for res in &r.resumes {
            let _ = writeln!(
                o,
                "<li>resumed by {} at {}</li>",
                escape(&res.operator),
                escape(&res.at)
            );
        }
        for n in &r.notes {
            let _ = writeln!(o, "<li>{}</li>", escape(n));
        }
        let _ = writeln!(o, "</ul>");
    }
    let _ = writeln!(
        o,
        "<p style=\"color:#57606a;font-size:12px\">Generated by ripcord from the run's journal.</p>\n</body></html>"
    );
    o
}

/// The Gantt chart: per step a grey predicted bar and, below it, the actual bar coloured by
/// status; critical-path steps outlined in red; the RTO as a dashed red line.
fn gantt(r: &Report) -> String {
    const LABEL: f64 = 210.0;
    const WIDTH: f64 = 1040.0;
    const ROW: f64 = 24.0;
    const TOP: f64 = 24.0;
    let plot = WIDTH - LABEL - 20.0;
    let end = r
        .steps
        .iter()
        .map(|s| {
            s.end_ms
                .unwrap_or(0)
                .max(s.predicted_start_ms + s.estimate_ms)
        })
        .chain([r.duration_ms, r.predicted_ms, r.rto_ms.unwrap_or(0)])
        .max()
        .unwrap_or(0)
        .max(1);
    // A little room on the right for the last bar's end and the RTO label.
    let end = end + end / 16;
    let x = |t: u64| LABEL + plot * t as f64 / end as f64;
    let height = TOP + ROW * r.steps.len() as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"gantt\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"timeline of the run\">"
    );
    // Axis: about eight ticks at a round interval.
    let step = nice_tick(end / 8);
    let mut t = 0;
    while t <= end {
        let _ = writeln!(
            o,
            "<line class=\"tick\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{height}\"/><text x=\"{0:.1}\" y=\"14\" text-anchor=\"middle\">{2}</text>",
            x(t),
            TOP - 6.0,
            ms(t)
        );
        t += step;
    }
    for (n, s) in r.steps.iter().enumerate() {
        let y = TOP + ROW * n as f64;
        let critical = if s.critical { " critical" } else { "" };
        let _ = writeln!(
            o,
            "<g class=\"step{critical}\" data-step=\"{}\"><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{}</text>",
            escape(&s.id),
            LABEL - 6.0,
            y + 15.0,
            escape(&truncate(&s.id, 30)),
            if s.critical { " ★" } else { "" }
        );
        let _ = writeln!(
            o,
            "<rect class=\"predicted\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"6\"><title>{} predicted: start {}, {}</title></rect>",
            x(s.predicted_start_ms),
            y + 2.0,
            (x(s.predicted_start_ms + s.estimate_ms) - x(s.predicted_start_ms)).max(1.0),
            escape(&s.id),
            ms(s.predicted_start_ms),
            ms(s.estimate_ms)
        );
        if let Some(start) = s.start_ms {
            let stop = s.end_ms.unwrap_or(r.duration_ms).max(start);
            let _ = writeln!(
                o,
                "<rect class=\"actual {}{critical}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"11\"><title>{} {}: start {}, took {}</title></rect>",
                s.status.replace(' ', "-"),
                x(start),
                y + 10.0,
                (x(stop) - x(start)).max(1.5),
                escape(&s.id),
                escape(&s.status),
                ms(start),
                ms(stop - start)
            );
        }
        let _ = writeln!(o, "</g>");
    }
    if let Some(rto) = r.rto_ms {
        let _ = writeln!(
            o,
            "<line class=\"rto\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\"/><text x=\"{0:.1}\" y=\"{3}\" dx=\"-4\" text-anchor=\"end\" fill=\"#cf222e\">RTO {4}</text>",
            x(rto),
            TOP - 6.0,
            height,
            height - 4.0,
            ms(rto)
        );
    }
    let _ = writeln!(o, "</svg>");
    let _ = writeln!(
        o,
        "<p style=\"font-size:12px;color:#57606a\">Grey: predicted; coloured: actual (blue succeeded, red failed, grey skipped, amber cancelled); red outline and ★: critical path; dashed line: RTO.</p>"
    );
    o
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// A round tick interval of at least `raw` ms: 1, 2 or 5 times a power of ten, in s/m units.
fn nice_tick(raw: u64) -> u64 {
    const STEPS: [u64; 15] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000,
        600_000, 1_800_000, 3_600_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= raw)
        .unwrap_or(raw.max(1))
}
