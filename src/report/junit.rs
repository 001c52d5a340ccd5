//! The report as JUnit XML, the format CI systems (Jenkins, GitLab, GitHub Actions reporters)
//! read: one testsuite per run, one testcase per step; a failed step is a `<failure>`, a
//! cancelled or in-doubt one an `<error>`, a skipped or never-run one `<skipped>`. Earlier
//! tries that failed (in this session or an earlier one) are in the testcase's `<system-out>`;
//! each undo of a rollback is a testcase of its own; sessions, the rollback and what steps
//! recorded (a data-loss window) are properties and the suite's `<system-out>`.

use std::fmt::Write;

use super::Report;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

pub fn render(r: &Report) -> String {
    let undos = r.rollback.as_ref().map_or(&[][..], |rb| &rb.actions[..]);
    let failures = r.count("failed") + undos.iter().filter(|u| u.status == "failed").count();
    let errors = r.count("cancelled")
        + r.count("in doubt")
        + undos
            .iter()
            .filter(|u| matches!(u.status.as_str(), "cancelled" | "in doubt" | "running"))
            .count();
    let skipped = r.count("skipped") + r.count("not run");
    // The RTO is a test of its own: missed is a failure a CI dashboard shows.
    let rto_case = r.rto_ms.filter(|_| r.rto_met.is_some());
    let rto_failed = usize::from(r.rto_met == Some(false));
    let failures = failures + rto_failed;
    let tests = r.steps.len() + undos.len() + usize::from(rto_case.is_some());
    let time = secs(r.wall_ms);
    let name = escape(&r.runbook);
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        o,
        "<testsuites name=\"ripcord\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\">"
    );
    let _ = writeln!(
        o,
        "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time}\" timestamp=\"{}\">",
        escape(
            r.started_at
                .trim_end_matches('Z')
                .split('.')
                .next()
                .unwrap_or("")
        )
    );
    let _ = writeln!(o, "    <properties>");
    let mut props: Vec<(String, String)> = vec![
        ("run_id".into(), r.run_id.clone()),
        ("mode".into(), r.mode.clone()),
        ("run_mode".into(), r.run_mode.clone().unwrap_or_default()),
        ("status".into(), r.status.clone()),
        ("result".into(), r.headline()),
        ("operator".into(), r.operator.clone()),
        ("runbook_sha256".into(), r.hash.clone()),
        ("wall_ms".into(), r.wall_ms.to_string()),
        ("predicted_ms".into(), r.predicted_ms.to_string()),
        ("sessions".into(), r.sessions.len().to_string()),
        ("failed_tries".into(), r.failed_tries().count().to_string()),
    ];
    for s in &r.sessions {
        props.push((format!("session.{}", s.session), s.line()));
    }
    if let Some(rb) = &r.rollback {
        props.push(("rollback".into(), rb.headline()));
        if let Some(f) = &rb.forced {
            props.push(("rollback_forced_reason".into(), f.reason.clone()));
        }
    }
    if let Some(rto) = r.rto_ms {
        props.push(("rto_ms".into(), rto.to_string()));
        if let Some(met) = r.rto_met {
            props.push(("rto_met".into(), met.to_string()));
        }
    }
    for n in &r.step_notes {
        props.push((format!("note.{}", n.step), n.note.clone()));
    }
    for (i, w) in r.warnings().into_iter().enumerate() {
        props.push((format!("warning.{}", i + 1), w));
    }
    for (k, v) in props {
        let _ = writeln!(o, "      <property name=\"{k}\" value=\"{}\"/>", escape(&v));
    }
    let _ = writeln!(o, "    </properties>");
    for s in &r.steps {
        let _ = write!(
            o,
            "    <testcase name=\"{}\" classname=\"{name}\" time=\"{}\"",
            escape(&s.id),
            secs(s.duration_ms.unwrap_or(0))
        );
        let message = escape(s.error.as_deref().unwrap_or(""));
        // Tries that did not succeed other than the one the step ended with: what went wrong on
        // the way (all of them when the step ended otherwise, taken as done after a crash).
        let last_is_end = s.tries.last().is_some_and(|t| t.status == s.status);
        let earlier: Vec<String> = s
            .tries
            .iter()
            .take(s.tries.len() - usize::from(last_is_end))
            .filter(|t| t.status != "succeeded")
            .map(|t| {
                let mut line = format!(
                    "{}: {}: {}",
                    t.label(),
                    t.status,
                    t.error.as_deref().unwrap_or("no end recorded")
                );
                if let Some(tail) = &t.stderr_tail {
                    line.push_str(&format!("\n{tail}"));
                }
                line
            })
            .collect();
        let system_out = if earlier.is_empty() {
            String::new()
        } else {
            format!(
                "\n      <system-out>{}</system-out>",
                escape(&earlier.join("\n"))
            )
        };
        match s.status.as_str() {
            "succeeded" if earlier.is_empty() => {
                let _ = writeln!(o, "/>");
                continue;
            }
            "succeeded" => {
                let _ = writeln!(o, ">{system_out}");
                let _ = writeln!(o, "    </testcase>");
                continue;
            }
            "failed" => {
                let _ = write!(
                    o,
                    ">\n      <failure message=\"{message}\" type=\"StepFailed\">"
                );
                let _ = write!(o, "{}", escape(s.log_tail.as_deref().unwrap_or("")));
                let _ = writeln!(o, "</failure>");
            }
            "cancelled" | "in doubt" => {
                let _ = writeln!(
                    o,
                    ">\n      <error message=\"{} {message}\" type=\"StepInterrupted\"/>",
                    escape(&s.status)
                );
            }
            // Skipped by its `when`, or taken as done on resume (its error says by whom).
            "skipped" => {
                // (A step out of the run's mode says so in its error.)
                let why = s.error.as_deref().unwrap_or("`when` was false");
                let _ = writeln!(o, ">\n      <skipped message=\"{}\"/>", escape(why));
            }
            _ => {
                let _ = writeln!(
                    o,
                    ">\n      <skipped message=\"not run: the run stopped before this step\"/>"
                );
            }
        }
        if !system_out.is_empty() {
            let _ = writeln!(o, "{}", system_out.trim_start_matches('\n'));
        }
        let _ = writeln!(o, "    </testcase>");
    }
    if rto_case.is_some() {
        let line = escape(&super::text::rto_line(r).unwrap_or_default());
        // The time the RTO was judged on (up to a DR test's cleanup, not through it).
        let time = secs(r.judged_ms());
        if r.rto_met == Some(true) {
            let _ = writeln!(
                o,
                "    <testcase name=\"rto\" classname=\"{name}\" time=\"{time}\"/>"
            );
        } else {
            let _ = writeln!(
                o,
                "    <testcase name=\"rto\" classname=\"{name}\" time=\"{time}\">\n      <failure message=\"{line}\" type=\"RtoMissed\"/>\n    </testcase>"
            );
        }
    }
    for u in undos {
        let _ = write!(
            o,
            "    <testcase name=\"undo {}\" classname=\"{name}.rollback\" time=\"0.000\"",
            escape(&u.step)
        );
        let message = escape(u.error.as_deref().unwrap_or(""));
        match u.status.as_str() {
            "succeeded" => {
                let _ = writeln!(o, "/>");
            }
            "cancelled" | "in doubt" | "running" => {
                let _ = writeln!(
                    o,
                    ">\n      <error message=\"{} {message}\" type=\"UndoInterrupted\"/>\n    </testcase>",
                    escape(&u.status)
                );
            }
            _ => {
                let _ = writeln!(
                    o,
                    ">\n      <failure message=\"{message}\" type=\"UndoFailed\"/>\n    </testcase>"
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "    <system-out>{}</system-out>",
        escape(&super::text::render(r))
    );
    let _ = writeln!(o, "  </testsuite>\n</testsuites>");
    o
}
