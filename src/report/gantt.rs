//! The HTML report's timeline, as inline SVG. The axis is the run's wall-clock time, broken
//! where nothing ran: each session is a band, and a gap between sessions of a second or more
//! is a hatched band of fixed width labelled with its length, so a crash and a resume 55 s later
//! neither vanish nor squash the steps into slivers. Per step, a thin grey bar is the
//! prediction and each try is a bar of its own, coloured by how it ended: a failed try is red
//! with a dark border and a ✕, whatever came after it. Every bar is at least a few pixels wide
//! and carries its duration as text, so millisecond steps stay legible. Undos are purple
//! diamonds on their step's row; the RTO is a dashed red line.

use std::fmt::Write;

use super::Report;
use super::junit::escape;
use super::text::ms;

const LABEL: f64 = 220.0;
const WIDTH: f64 = 1060.0;
const ROW: f64 = 26.0;
const TOP: f64 = 44.0;
const GAP: f64 = 90.0;
const MIN_PIECE: f64 = 24.0;
const MIN_BAR: f64 = 4.0;

/// A stretch of the axis: linear time, or a gap drawn at a fixed width.
#[derive(Debug, Clone, Copy)]
struct Piece {
    t0: u64,
    t1: u64,
    gap: bool,
    x0: f64,
    x1: f64,
}

struct Axis {
    pieces: Vec<Piece>,
}

impl Axis {
    fn new(r: &Report, end: u64) -> Axis {
        let mut spans: Vec<(u64, u64, bool)> = Vec::new();
        for s in &r.sessions {
            match spans.last_mut() {
                Some(last) if s.start_ms < last.1.saturating_add(1000) => {
                    last.1 = last.1.max(s.end_ms)
                }
                Some(last) => {
                    let from = last.1;
                    spans.push((from, s.start_ms, true));
                    spans.push((s.start_ms, s.end_ms, false));
                }
                None => spans.push((0, s.end_ms, false)),
            }
        }
        if spans.is_empty() {
            spans.push((0, end, false));
        }
        // After the last session: the rest of the prediction, or the RTO, on the same scale.
        if let Some(last) = spans.last_mut() {
            last.1 = last.1.max(end);
        }
        // Widths: a gap is a fixed band; every other stretch is on one linear scale (each at
        // least MIN_PIECE wide, so a session of milliseconds is still seen).
        let gaps = spans.iter().filter(|s| s.2).count() as f64;
        let weight = |(t0, t1, _): &(u64, u64, bool)| (t1 - t0).max(1) as f64;
        let total: f64 = spans.iter().filter(|s| !s.2).map(weight).sum();
        let linear = spans.iter().filter(|s| !s.2).count() as f64;
        // Room on the right for what runs off the scale (`▸ predicted to 35s`).
        let plot = WIDTH - LABEL - 130.0 - gaps * GAP;
        let spare = (plot - MIN_PIECE * linear).max(0.0);
        let mut x = LABEL;
        let pieces = spans
            .iter()
            .map(|span| {
                let &(t0, t1, gap) = span;
                let w = if gap {
                    GAP
                } else {
                    MIN_PIECE + spare * weight(span) / total
                };
                let p = Piece {
                    t0,
                    t1,
                    gap,
                    x0: x,
                    x1: x + w,
                };
                x += w;
                p
            })
            .collect();
        Axis { pieces }
    }

    fn x(&self, t: u64) -> f64 {
        let p = self
            .pieces
            .iter()
            .find(|p| t <= p.t1)
            .or(self.pieces.last())
            .expect("an axis has a piece");
        let span = (p.t1 - p.t0).max(1) as f64;
        let f = (t.saturating_sub(p.t0) as f64 / span).min(1.0);
        p.x0 + (p.x1 - p.x0) * f
    }

    fn right(&self) -> f64 {
        self.pieces.last().map_or(WIDTH, |p| p.x1)
    }
}

pub fn render(r: &Report) -> String {
    let predicted_end = r
        .steps
        .iter()
        .map(|s| s.predicted_start_ms + s.estimate_ms)
        .max()
        .unwrap_or(0);
    let undo_end = r
        .rollback
        .iter()
        .flat_map(|rb| rb.actions.iter().map(|a| a.t_ms))
        .max()
        .unwrap_or(0);
    // The axis covers what happened; the prediction and the RTO only when they are near it
    // (within half as long again), else they run off the right edge, marked as such, so a
    // 5-second run is not squeezed into the corner of a 30-minute RTO.
    let happened = r.wall_ms.max(undo_end).max(1);
    let near = |t: u64| t <= happened.saturating_add(happened / 2);
    let end = [predicted_end, r.rto_ms.unwrap_or(0)]
        .into_iter()
        .filter(|&t| near(t))
        .fold(happened, u64::max);
    let axis = Axis::new(r, end);
    let height = TOP + ROW * r.steps.len() as f64 + 26.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"gantt\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"timeline of the run\">"
    );
    let _ = writeln!(
        o,
        "<defs><pattern id=\"hatch\" width=\"8\" height=\"8\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#fff8c5\"/><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" stroke=\"#d4a72c\" stroke-width=\"3\"/></pattern></defs>"
    );
    // Session bands, and the gaps between them.
    for s in &r.sessions {
        let (x0, x1) = (
            axis.x(s.start_ms),
            axis.x(s.end_ms).max(axis.x(s.start_ms) + 2.0),
        );
        let _ = writeln!(
            o,
            "<g class=\"session-band\" data-session=\"{}\" data-end=\"{}\"><rect class=\"session\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>session {}: {}</title></rect><text class=\"session-label\" x=\"{:.1}\" y=\"12\">{}</text></g>",
            s.session,
            escape(&s.end),
            TOP - 14.0,
            x1 - x0,
            height - TOP + 4.0,
            s.session,
            escape(&s.line()),
            x0 + 2.0,
            escape(&session_label(s, x1 - x0))
        );
    }
    for p in axis.pieces.iter().filter(|p| p.gap) {
        let _ = writeln!(
            o,
            "<g class=\"gap-band\" data-gap-ms=\"{}\"><rect class=\"gap\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>nothing ran for {}</title></rect><text class=\"gap-label\" x=\"{:.1}\" y=\"24\" text-anchor=\"middle\">gap {}</text></g>",
            p.t1 - p.t0,
            p.x0,
            TOP - 14.0,
            p.x1 - p.x0,
            height - TOP + 4.0,
            ms(p.t1 - p.t0),
            (p.x0 + p.x1) / 2.0,
            ms(p.t1 - p.t0)
        );
    }
    // Ticks: the start of each linear stretch, and a few round values inside it, never two
    // closer than 45 pixels.
    let mut ticks: Vec<u64> = Vec::new();
    for p in axis.pieces.iter().filter(|p| !p.gap) {
        let step = nice_tick((p.t1 - p.t0) / ((p.x1 - p.x0) / 90.0).max(1.0) as u64);
        let first = p.t0.div_ceil(step).saturating_mul(step);
        let round = (first..p.t1).step_by(step as usize).take(64);
        for t in std::iter::once(p.t0).chain(round) {
            if ticks
                .last()
                .is_none_or(|&last| axis.x(t) - axis.x(last) > 45.0)
            {
                ticks.push(t);
            }
        }
    }
    {
        for t in ticks {
            let _ = writeln!(
                o,
                "<line class=\"tick\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{height}\"/><text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{3}</text>",
                axis.x(t),
                TOP - 8.0,
                TOP - 16.0 + 10.0,
                ms(t)
            );
        }
    }
    for (n, s) in r.steps.iter().enumerate() {
        let y = TOP + ROW * n as f64;
        let _ = writeln!(
            o,
            "<g class=\"step{}\" data-step=\"{}\" data-status=\"{}\"><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{}</text>",
            if s.critical { " critical" } else { "" },
            escape(&s.id),
            escape(&s.status),
            LABEL - 6.0,
            y + 15.0,
            escape(&truncate(&s.id, 30)),
            if s.critical { " ★" } else { "" }
        );
        let (p0, p1) = (
            axis.x(s.predicted_start_ms),
            axis.x(s.predicted_start_ms + s.estimate_ms),
        );
        let off_scale = s.predicted_start_ms + s.estimate_ms > end;
        let _ = writeln!(
            o,
            "<rect class=\"predicted\" x=\"{p0:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"5\"><title>{} predicted: start {}, {}</title></rect>{}",
            y + 2.0,
            (p1 - p0).max(2.0),
            escape(&s.id),
            ms(s.predicted_start_ms),
            ms(s.estimate_ms),
            if off_scale {
                format!(
                    "<text class=\"took\" x=\"{:.1}\" y=\"{:.1}\">▸ predicted to {}</text>",
                    axis.right() + 2.0,
                    y + 8.0,
                    ms(s.predicted_start_ms + s.estimate_ms)
                )
            } else {
                String::new()
            }
        );
        let mut last_right = 0.0;
        for t in &s.tries {
            let stop = t.end_ms.unwrap_or(t.start_ms).max(t.start_ms);
            let x0 = axis.x(t.start_ms);
            let w = (axis.x(stop) - x0).max(MIN_BAR);
            let class = t.status.replace(' ', "-");
            let _ = writeln!(
                o,
                "<rect class=\"try {class}\" data-session=\"{}\" data-attempt=\"{}\" x=\"{x0:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"13\"><title>{} {}: {}, start +{}, took {}{}</title></rect>",
                t.session,
                t.attempt,
                y + 9.0,
                escape(&s.id),
                escape(&t.label()),
                escape(&t.status),
                ms(t.start_ms),
                ms(stop - t.start_ms),
                t.error
                    .as_deref()
                    .map(|e| format!(": {}", escape(e)))
                    .unwrap_or_default()
            );
            if t.status != "succeeded" {
                let _ = writeln!(
                    o,
                    "<text class=\"mark-failed\" x=\"{:.1}\" y=\"{:.1}\">✕</text>",
                    x0 + w + 2.0,
                    y + 20.0
                );
                last_right = x0 + w + 12.0;
            } else {
                last_right = x0 + w;
            }
        }
        if let (Some(took), true) = (s.duration_ms, last_right > 0.0) {
            let _ = writeln!(
                o,
                "<text class=\"took\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                (last_right + 3.0).min(axis.right() - 30.0),
                y + 20.0,
                ms(took)
            );
        }
        for u in r
            .rollback
            .iter()
            .flat_map(|rb| rb.actions.iter())
            .filter(|u| u.step == s.id)
        {
            let cx = axis.x(u.t_ms);
            let cy = y + 15.0;
            let _ = writeln!(
                o,
                "<path class=\"undo\" d=\"M{cx:.1} {:.1} L{:.1} {cy:.1} L{cx:.1} {:.1} L{:.1} {cy:.1} Z\"><title>undo of {}: {} at +{}</title></path>",
                cy - 6.0,
                cx + 6.0,
                cy + 6.0,
                cx - 6.0,
                escape(&s.id),
                escape(&u.status),
                ms(u.t_ms)
            );
        }
        let _ = writeln!(o, "</g>");
    }
    if let Some(rto) = r.rto_ms.filter(|&rto| rto > end) {
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#cf222e\">RTO {} ▸ (off this scale)</text>",
            WIDTH - 4.0,
            height - 4.0,
            ms(rto)
        );
    }
    if let Some(rto) = r.rto_ms.filter(|&rto| rto <= end) {
        let in_gap = axis
            .pieces
            .iter()
            .any(|p| p.gap && p.t0 < rto && rto < p.t1);
        let _ = writeln!(
            o,
            "<line class=\"rto\" x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\"/><text x=\"{0:.1}\" y=\"{3}\" dx=\"-4\" text-anchor=\"end\" fill=\"#cf222e\">RTO {4}{5}</text>",
            axis.x(rto),
            TOP - 14.0,
            height,
            height - 4.0,
            ms(rto),
            if in_gap { " (in the gap)" } else { "" }
        );
    }
    let _ = writeln!(o, "</svg>");
    let _ = writeln!(
        o,
        "<p style=\"font-size:12px;color:#57606a\">One linear time scale, broken only at a gap between sessions: hatched, not to scale, labelled with its length. Bands: sessions. Thin grey: predicted; bars: each try (blue succeeded, <span class=\"fail\">red with ✕ failed</span>, amber cancelled or in doubt, grey skipped), with its duration; purple diamond: an undo; ★: critical path; dashed red line: RTO.</p>"
    );
    o
}

/// `2 resume ✕ crashed`, or as much of it as fits in `width` pixels (`2✕`).
fn session_label(s: &super::sessions::SessionRow, width: f64) -> String {
    let crashed = s.end == "crashed";
    let full = format!(
        "{} {}{}",
        s.session,
        s.kind,
        if crashed { " ✕ crashed" } else { "" }
    );
    let short = format!("{}{}", s.session, if crashed { "✕" } else { "" });
    // About 7 pixels a character at 11px bold.
    if full.chars().count() as f64 * 7.0 <= width {
        full
    } else {
        short
    }
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
    const STEPS: [u64; 19] = [
        1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000,
        300_000, 600_000, 3_600_000,
    ];
    STEPS
        .iter()
        .copied()
        .find(|&s| s >= raw)
        .unwrap_or(raw.max(1))
}
