//! The report as JUnit XML, the format CI systems (Jenkins, GitLab, GitHub Actions reporters)
//! read: one testsuite per run, one testcase per step; a failed step is a `<failure>`, a
//! cancelled or in-doubt one an `<error>`, a skipped or never-run one `<skipped>`.

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
    let failures = r.count("failed");
    let errors = r.count("cancelled") + r.count("in doubt");
    let skipped = r.count("skipped") + r.count("not run");
    let tests = r.steps.len();
    let time = secs(r.duration_ms);
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
    let mut props = vec![
        ("run_id", r.run_id.clone()),
        ("mode", r.mode.clone()),
        ("status", r.status.clone()),
        ("operator", r.operator.clone()),
        ("runbook_sha256", r.hash.clone()),
        ("predicted_ms", r.predicted_ms.to_string()),
    ];
    if let Some(rb) = &r.rollback {
        props.push(("rollback", rb.headline()));
    }
    if let Some(rto) = r.rto_ms {
        props.push(("rto_ms", rto.to_string()));
        props.push(("rto_met", r.rto_met.unwrap_or(false).to_string()));
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
        match s.status.as_str() {
            "succeeded" => {
                let _ = writeln!(o, "/>");
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
            "skipped" => {
                let _ = writeln!(o, ">\n      <skipped message=\"`when` was false\"/>");
            }
            _ => {
                let _ = writeln!(
                    o,
                    ">\n      <skipped message=\"not run: the run stopped before this step\"/>"
                );
            }
        }
        let _ = writeln!(o, "    </testcase>");
    }
    let _ = writeln!(o, "  </testsuite>\n</testsuites>");
    o
}
