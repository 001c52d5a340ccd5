//! What the operator sees while a run goes: on a terminal, an indicatif view of running steps
//! with their elapsed time and the counts; otherwise one plain line per event; with `--json`,
//! every journal record (secrets masked) as one JSON line.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::journal::Record;
use crate::journal::record::StepStatus;
use crate::runbook::duration::format as dur;

pub trait Sink {
    fn record(&mut self, record: &Record);
    /// The progress display, to suspend around an approval prompt.
    fn progress(&self) -> Option<MultiProgress> {
        None
    }
    /// Writes out what is buffered: the executor calls it before it waits, so the events of
    /// one scheduling tick go out in one write.
    fn flush(&mut self) {}
    /// Called once at the end, before the summary is printed.
    fn finish(&mut self) {
        self.flush();
    }
}

/// Lines waiting for [`Sink::flush`]; a closed stdout is ignored (the run goes on).
#[derive(Default)]
pub struct Buffered(Vec<u8>);

impl Buffered {
    fn flush(&mut self) {
        if !self.0.is_empty() {
            let _ = std::io::stdout().lock().write_all(&self.0);
            self.0.clear();
        }
    }
}

/// One JSON object a line.
#[derive(Default)]
pub struct JsonSink(Buffered);

impl Sink for JsonSink {
    fn record(&mut self, record: &Record) {
        let _ = serde_json::to_writer(&mut self.0.0, record);
        self.0.0.push(b'\n');
    }

    fn flush(&mut self) {
        self.0.flush();
    }
}

/// One line an event: `[  12.5s] ok       promote  3.0s`.
pub fn line(record: &Record) -> Option<String> {
    let at = |t: u64| format!("[{:>8}]", dur(Duration::from_millis(t)));
    Some(match record {
        Record::RunStarted {
            run_id,
            runbook,
            mode,
            steps,
            ..
        } => {
            format!(
                "run {run_id}: {runbook}, {} ({})",
                crate::report::text::count(*steps, "step"),
                mode.as_str()
            )
        }
        Record::Planned { .. } | Record::StepIntent { .. } => return None,
        Record::Resumed { t_ms, operator, .. } => format!("{} resumed by {operator}", at(*t_ms)),
        Record::StepStarted {
            t_ms,
            step,
            attempt,
        } if *attempt > 1 => {
            format!("{} start    {step} (attempt {attempt})", at(*t_ms))
        }
        Record::StepStarted { t_ms, step, .. } => format!("{} start    {step}", at(*t_ms)),
        Record::AttemptFailed {
            t_ms,
            step,
            attempt,
            error,
            retry_in_ms,
            ..
        } => match retry_in_ms {
            Some(ms) => format!(
                "{} retry    {step}: attempt {attempt} failed: {error}; again in {}",
                at(*t_ms),
                dur(Duration::from_millis(*ms))
            ),
            // The last attempt's error is shown by the step's FAILED line.
            None => return None,
        },
        Record::StepFinished {
            t_ms,
            step,
            status,
            started_ms,
            error,
            ..
        } => {
            let took = dur(Duration::from_millis(t_ms.saturating_sub(*started_ms)));
            match status {
                StepStatus::Succeeded => format!("{} ok       {step}  {took}", at(*t_ms)),
                StepStatus::Skipped => format!("{} skipped  {step}", at(*t_ms)),
                StepStatus::Failed => {
                    format!(
                        "{} FAILED   {step}  {took}: {}",
                        at(*t_ms),
                        error.as_deref().unwrap_or("")
                    )
                }
                StepStatus::Cancelled => format!("{} cancel   {step}  {took}", at(*t_ms)),
            }
        }
        Record::Approval {
            t_ms,
            step,
            approver,
            simulated,
            ..
        } => format!(
            "{} approved {step} by {approver}{}",
            at(*t_ms),
            if *simulated { " (simulated)" } else { "" }
        ),
        Record::ApprovalWaiting { .. } => return None,
        Record::ApprovalRejected { t_ms, step, by, .. } => {
            format!("{} rejected {step} by {by}", at(*t_ms))
        }
        Record::AnswerRefused {
            t_ms,
            step,
            by,
            reason,
        } => format!("{} refused  answer to {step} by {by}: {reason}", at(*t_ms)),
        Record::Interrupted { t_ms, signal, .. } => {
            format!(
                "{} {signal}: stopping; running steps are cancelled",
                at(*t_ms)
            )
        }
        Record::RunFinished { .. } => return None,
        Record::RollbackStarted { t_ms, .. } => format!("{} rollback started", at(*t_ms)),
        Record::UndoStarted { t_ms, step } => format!("{} undo     {step}", at(*t_ms)),
        Record::UndoFinished {
            t_ms,
            step,
            status,
            error,
        } => match status {
            StepStatus::Succeeded => format!("{} undone   {step}", at(*t_ms)),
            _ => format!(
                "{} UNDO FAILED {step}: {}",
                at(*t_ms),
                error.as_deref().unwrap_or("")
            ),
        },
        Record::RollbackFinished { t_ms, status, .. } => {
            format!(
                "{} rollback {}",
                at(*t_ms),
                format!("{status:?}").to_lowercase()
            )
        }
        Record::RunNote { t_ms, message } => format!("{} note     {message}", at(*t_ms)),
    })
}

#[derive(Default)]
pub struct PlainSink(Buffered);

impl Sink for PlainSink {
    fn record(&mut self, record: &Record) {
        if let Some(l) = line(record) {
            self.0.0.extend_from_slice(l.as_bytes());
            self.0.0.push(b'\n');
        }
    }

    fn flush(&mut self) {
        self.0.flush();
    }
}

/// Running steps as spinners with elapsed time; finished events printed above them.
pub struct TtySink {
    multi: MultiProgress,
    header: ProgressBar,
    bars: HashMap<String, ProgressBar>,
    total: usize,
    done: usize,
    failed: usize,
}

impl TtySink {
    pub fn new(total: usize) -> TtySink {
        let multi = MultiProgress::new();
        let header = multi.add(ProgressBar::new(total as u64));
        header.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        header.enable_steady_tick(Duration::from_millis(200));
        TtySink {
            multi,
            header,
            bars: HashMap::new(),
            total,
            done: 0,
            failed: 0,
        }
    }
}

impl Sink for TtySink {
    fn record(&mut self, record: &Record) {
        match record {
            Record::StepStarted { step, attempt, .. } => {
                let bar = self.bars.entry(step.clone()).or_insert_with(|| {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("  {spinner} {elapsed:>5} {msg}")
                            .expect("the template is valid"),
                    );
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                let suffix = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                bar.set_message(format!("{step}{suffix}"));
                let running = self.bars.len();
                self.header.set_message(format!("({running} running)"));
                return;
            }
            Record::StepFinished { step, status, .. } => {
                if let Some(bar) = self.bars.remove(step) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.done += 1;
                if *status == StepStatus::Failed {
                    self.failed += 1;
                }
                self.header.set_position(self.done as u64);
                let failed = if self.failed > 0 {
                    format!(", {} failed", self.failed)
                } else {
                    String::new()
                };
                self.header
                    .set_message(format!("({} running{failed})", self.bars.len()));
                if *status == StepStatus::Skipped {
                    return;
                }
            }
            _ => {}
        }
        if let Some(l) = line(record) {
            if self.multi.is_hidden() {
                // An approval prompt has the terminal: print plainly, below it.
                crate::eprintln_quiet!("{l}");
            } else {
                let _ = self.multi.println(l);
            }
        }
    }

    fn progress(&self) -> Option<MultiProgress> {
        Some(self.multi.clone())
    }

    fn finish(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        self.header.set_length(self.total as u64);
        self.header.finish_and_clear();
        let _ = self.multi.clear();
    }
}
