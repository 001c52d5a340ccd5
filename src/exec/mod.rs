//! The executor: runs a [`Plan`] concurrently, critical path first.
//!
//! One scheduler loop owns all state. Each step waits on a Kahn in-degree counter; at zero it
//! joins the [`ReadyQueue`] (the same one `plan` simulates, so a dry-run's virtual timeline is
//! the predicted one). A popped step has its `when` evaluated and its params rendered; its start
//! is made durable before its task is spawned, unless running it again is harmless (an
//! idempotent step). With a file journal the start is promised ahead: the intent of each of the
//! next steps to take a slot is synced while the running steps run, and the start record is only
//! written as the step begins (see [`crate::journal::intent`]). The task runs the attempts
//! (timeout, retry with backoff) against the provider, or the simulator in a dry-run, and reports
//! back; the loop records the result, releases the slot
//! and counts down the dependents. Signals stop the scheduling and cancel running steps.
//!
//! A retry's start is made durable before the retry runs, as the first attempt's is: the task
//! asks the loop to journal and commit it, and waits for the acknowledgement. An approval
//! journals what it waits for (`approval_waiting`, with an `ask` id) and takes answers from the
//! terminal and from `ripcord approve` alike, each checked against the step's `approvers`,
//! `min_approvals` and `not_by_operator`.

pub mod mask;
pub mod rollback;
pub mod scope;
pub mod state;
pub mod ui;

use std::collections::{HashMap, HashSet};
use std::io::{self, BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::journal::Record;
use crate::journal::record::{Mode, RunStatus, StepStatus};
use crate::plan::schedule::ReadyQueue;
use crate::plan::{Plan, PlannedStep};
use crate::provider::{self, Failure, OutputMap, Providers, catalog};
use crate::runbook::OnFailure;
use crate::runbook::duration::format as dur;
use crate::session::identity::Identity;
use crate::session::signals::Signals;
use crate::session::supervisor::Groups;
use crate::state::{JournalWriter, StateBackend};

use crate::expr::render;
use mask::Masker;
use scope::Scope;
use state::{Status, StepState};
use ui::Sink;

/// Promising starts ahead (see [`Executor::promise_next`]): when one of the next `REFILL` slots'
/// worth of ready steps has no intent, the next `WINDOW` slots' worth get theirs, with one sync.
const REFILL: usize = 2;
const WINDOW: usize = 4;
/// Starts are promised ahead only while the steps of this session are short: the sync a durable
/// start waits for (a few hundred microseconds) is then a good part of each step. Longer steps
/// lose under 2 % to it, and a restart of the machine leaves no step in doubt that never began.
const SHORT_MS: u64 = 25;

/// Everything a run is given; fixed for its whole length.
pub struct RunContext {
    pub plan: Arc<Plan>,
    pub run_id: String,
    pub mode: Mode,
    /// Real input values (secrets included: they are masked on the way out).
    pub inputs: Map<String, Json>,
    pub masker: Masker,
    pub yes: bool,
    /// Steps approved in advance (`--approve STEP`): ids or declared ids.
    pub approve: HashSet<String>,
    /// Steps that fail in a dry-run (`--fail STEP`): ids or declared ids.
    pub fail: HashSet<String>,
    pub concurrency: usize,
    /// Who runs this session.
    pub by: Identity,
    /// Who started the run (for `not_by_operator`); this session's own for a new run.
    pub started_by: Identity,
    pub providers: Arc<Providers>,
    /// Where approvals' answers are posted; none for a run with no state (library tests).
    pub state: Option<Arc<dyn StateBackend>>,
    pub groups: Groups,
    pub signals: Signals,
    /// The run's seed: a dry-run's draws (durations within `sim.jitter`, `--fail-rate`).
    pub seed: u64,
    /// `--fail-rate`: the chance that a simulated attempt fails (0 to 1).
    pub fail_rate: f64,
}

/// How a run ended, with every step's state.
pub struct Outcome {
    pub status: RunStatus,
    pub states: Vec<StepState>,
    pub end_ms: u64,
}

/// The time since the run started, in ms (virtual in a dry-run); `base` carries a resumed run on
/// from where its journal ended.
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    base: u64,
}

impl Clock {
    pub fn new(base: u64) -> Clock {
        Clock {
            start: Instant::now(),
            base,
        }
    }

    pub fn ms(&self) -> u64 {
        self.base + self.start.elapsed().as_millis() as u64
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// The wall-clock time for a record of a run in `mode`: none in a dry-run, whose time is
/// virtual.
pub fn wall(mode: Mode) -> Option<String> {
    (mode != Mode::DryRun).then(now_rfc3339)
}

/// Where a later session's clock starts: for a real run, the wall-clock time since the run
/// started (so the time between sessions stays in the timeline, and in the RTO), never before
/// the journal's last record; for a dry-run, where its virtual time ended.
pub fn session_base(mode: Mode, started_at: &str, last_ms: u64) -> u64 {
    if mode == Mode::DryRun {
        return last_ms;
    }
    let since = humantime::parse_rfc3339_weak(started_at)
        .ok()
        .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
        .map_or(0, |d| d.as_millis() as u64);
    last_ms.max(since)
}

/// Whether `step` is named by `set` (its id, or its declared id for every instance).
pub fn named(set: &HashSet<String>, step: &PlannedStep) -> bool {
    set.contains(&step.id) || set.contains(&step.base)
}

/// Whether a finished step lets its dependents start.
fn satisfies(step: &PlannedStep, status: &Status) -> bool {
    match status {
        Status::Done(StepStatus::Succeeded | StepStatus::Skipped) => true,
        Status::Done(StepStatus::Failed) => step.on_failure == OnFailure::Continue,
        _ => false,
    }
}

/// Declared id -> the indices of its steps.
pub fn instances(plan: &Plan) -> HashMap<String, Vec<usize>> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in plan.steps.iter().enumerate() {
        map.entry(s.base.clone()).or_default().push(i);
    }
    map
}

/// `run` in expressions: `mode` is the runbook's mode this run is in (`""` when it has no
/// `modes:`); `dry_run` and `check` say how it runs.
pub fn run_json(cx: &RunContext) -> Json {
    json!({
        "id": cx.run_id,
        "dry_run": cx.mode == Mode::DryRun,
        "check": cx.mode == Mode::Check,
        "name": cx.plan.name,
        "mode": cx.plan.mode.clone().unwrap_or_default(),
    })
}

/// Runs the plan from `states` (all pending for a new run; restored for a resume).
pub async fn execute(
    cx: &RunContext,
    journal: &mut dyn JournalWriter,
    sink: &mut dyn Sink,
    states: Vec<StepState>,
    clock: Clock,
) -> io::Result<Outcome> {
    let plan = cx.plan.clone();
    let n = plan.steps.len();
    let mut indegree = vec![0usize; n];
    let mut ready = ReadyQueue::new(&plan, cx.concurrency);
    for (i, state) in states.iter().enumerate() {
        if state.status == Status::Pending {
            indegree[i] = plan
                .needs(i)
                .filter(|&d| !satisfies(&plan.steps[d], &states[d].status))
                .count();
            if indegree[i] == 0 {
                ready.push(&plan, i);
            }
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    // Only where a step needs it: looking ahead costs every tick a few heap operations.
    let journal_promise = journal
        .promises_starts()
        .filter(|_| plan.steps.iter().any(|s| needs_durable_start(s, cx.mode)));
    let mut ex = Executor {
        cx,
        plan: plan.clone(),
        journal,
        sink,
        states,
        indegree,
        ready,
        instances: instances(&plan),
        env: render::environment_for(cx.mode != Mode::Real),
        clock,
        cancel: CancellationToken::new(),
        tx,
        stopping: false,
        aborted: false,
        interrupted: false,
        promise: journal_promise,
        promised: HashMap::new(),
        promises: Vec::new(),
        typical_ms: None,
    };
    if let Err(e) = ex.run(rx).await.and_then(|()| ex.journal.healthy()) {
        return Err(ex.stopping_on(e));
    }
    let status = if ex.interrupted {
        RunStatus::Interrupted
    } else if ex.aborted {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    // Everything before the end is durable first: an end is recorded only after all it sums
    // up is on disk (a sync that fails here leaves no end, as a crash would).
    if let Err(e) = ex.journal.commit() {
        return Err(ex.stopping_on(e));
    }
    let end_ms = ex.clock.ms();
    ex.emit(&Record::RunFinished {
        t_ms: end_ms,
        status,
        at: wall(cx.mode),
    })?;
    if let Err(e) = ex.journal.commit() {
        // Only the end record itself is in question; said after it.
        let _ = ex.journal.append(&Record::RunNote {
            t_ms: end_ms,
            message: format!(
                "the journal's last sync failed ({e}): every record before the end is on disk, \
                 the end record may not survive a crash of the machine"
            ),
        });
        let _ = ex.journal.flush();
        return Err(e);
    }
    Ok(Outcome {
        status,
        states: ex.states,
        end_ms,
    })
}

struct Executor<'a> {
    cx: &'a RunContext,
    plan: Arc<Plan>,
    journal: &'a mut dyn JournalWriter,
    sink: &'a mut dyn Sink,
    states: Vec<StepState>,
    indegree: Vec<usize>,
    ready: ReadyQueue,
    instances: HashMap<String, Vec<usize>>,
    env: minijinja::Environment<'static>,
    clock: Clock,
    /// Cancelled on interrupt: every running step's token is a child of it.
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<Msg>,
    stopping: bool,
    aborted: bool,
    interrupted: bool,
    /// `Some(boot id)` when starts are promised ahead (see [`crate::journal::intent`]).
    promise: Option<Option<String>>,
    /// Steps whose intent this session wrote and that have not started: the sync it rides on.
    promised: HashMap<usize, usize>,
    /// Those syncs, by number; `None` once known done.
    promises: Vec<Option<crate::state::Durable>>,
    /// How long this session's steps take, a moving average (ms, a quarter weight to the
    /// latest); `None` before the first ends.
    typical_ms: Option<u64>,
}

/// Whether a step runs in a pre-flight, when that is known before its params are rendered:
/// its own `check:`, else a plugin action's declared check; `None` for a built-in action, whose
/// check may depend on its params (an HTTP GET has one, a POST not).
fn known_check(step: &PlannedStep, spec: Option<&crate::provider::ActionSpec>) -> Option<bool> {
    match (step.check, spec) {
        (Some(written), _) => Some(written),
        (None, Some(spec)) if !step.action.builtin => Some(spec.check),
        _ => None,
    }
}

/// What a running task tells the loop before it ends.
enum Msg {
    /// A start record could not be made durable, or the lease lapsed before the step began:
    /// the run stops.
    JournalFailed(io::Error),
    /// A retry is about to start: journal (and commit) its start, then acknowledge.
    Attempt {
        step: usize,
        attempt: u32,
        ack: oneshot::Sender<()>,
    },
    AttemptFailed {
        step: usize,
        attempt: u32,
        error: String,
        retry_in: Option<Duration>,
        /// What the attempt gathered (its stdout and stderr), for the end of its output.
        outputs: OutputMap,
        nothing_ran: bool,
    },
    Approved {
        step: usize,
        by: Option<Identity>,
        approver: String,
        comment: Option<String>,
        via: Option<&'static str>,
        simulated: bool,
    },
    Rejected {
        step: usize,
        by: Identity,
        comment: Option<String>,
    },
    Refused {
        step: usize,
        by: Identity,
        reason: String,
    },
}

/// What a task ends with.
struct Report {
    result: Result<OutputMap, Failure>,
    attempts: u32,
    cancelled: bool,
}

enum Prepared {
    Skip,
    /// Check mode, and the action has no read-only check: skipped, with placeholder outputs so
    /// what follows can still render.
    NoCheck(OutputMap),
    /// Check mode: it reads outputs of a check that failed, so it cannot be judged (the
    /// failure it would report is that one's).
    NotChecked(String),
    Fail(String),
    Launch(Box<Task>),
}

impl Executor<'_> {
    async fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Msg>) -> io::Result<()> {
        let signals = self.cx.signals.clone();
        let mut tasks: JoinSet<(usize, Report)> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, usize> = HashMap::new();
        loop {
            if !self.stopping {
                let mut launch = Vec::new();
                // A session whose lease lapsed starts nothing: another may have taken over. Nor
                // does one whose journal failed a sync, even one nobody waited for.
                if !self.ready.is_empty() {
                    self.fenced()?;
                    self.journal.healthy()?;
                }
                while let Some(i) = self.ready.pop() {
                    match self.prepare(i) {
                        Prepared::Skip => {
                            // Why, when it is the mode: the evidence says so.
                            let why = self.plan.steps[i].out_of_mode.then(|| {
                                format!(
                                    "not in mode {}",
                                    self.plan.mode.as_deref().unwrap_or_default()
                                )
                            });
                            self.finish(i, StepStatus::Skipped, OutputMap::new(), why, 0)?
                        }
                        Prepared::NoCheck(outputs) => {
                            self.finish(i, StepStatus::Skipped, outputs, None, 0)?
                        }
                        Prepared::NotChecked(why) => {
                            self.states[i].unjudged = true;
                            self.finish(i, StepStatus::Skipped, OutputMap::new(), Some(why), 0)?
                        }
                        Prepared::Fail(error) => {
                            self.finish(i, StepStatus::Failed, OutputMap::new(), Some(error), 0)?
                        }
                        Prepared::Launch(task) => {
                            let t = self.clock.ms();
                            self.states[i].status = Status::Running;
                            self.states[i].started_ms = Some(t);
                            self.states[i].launched = true;
                            self.states[i].acted += 1;
                            // Not promised ahead: its intent goes with its start, and the
                            // sync below covers both.
                            if let Some(boot_id) = self.promise.clone()
                                && task.needs_durable_start()
                                && !self.promised.contains_key(&i)
                            {
                                self.journal.append(&Record::StepIntent {
                                    t_ms: t,
                                    step: self.plan.steps[i].id.clone(),
                                    boot_id,
                                })?;
                            }
                            self.emit(&Record::StepStarted {
                                t_ms: t,
                                step: self.plan.steps[i].id.clone(),
                                attempt: 1,
                            })?;
                            if let Kind::Approval(Approval::Live(wait)) = &task.kind {
                                self.emit(&Record::ApprovalWaiting {
                                    t_ms: t,
                                    step: self.plan.steps[i].id.clone(),
                                    ask: wait.ask.clone(),
                                    approvers: wait.policy.approvers.clone(),
                                    min_approvals: wait.policy.min,
                                    not_by_operator: wait.policy.not_by_operator,
                                })?;
                                // Written before anyone is told to answer it.
                                self.journal.commit()?;
                            }
                            launch.push(task);
                        }
                    }
                    if self.stopping {
                        break;
                    }
                }
                // Start records are durable before any of these steps' effects begin. An
                // idempotent step's start needs no sync of its own: were it lost to a crash,
                // resume would run the step again, which is what it does with an idempotent
                // step whose start survived but whose end did not. Its records ride on the
                // next sync. The others' start records (or their intents, see
                // [`crate::journal::intent`]) are made durable on the journal's sync thread
                // while the loop goes on serving the other slots; each such step begins once
                // its record is durable, at once when its intent already is.
                if !launch.is_empty() {
                    // Written (not synced) before they begin: a killed ripcord loses no record
                    // of a step that ran.
                    self.journal.flush()?;
                }
                for task in launch {
                    let i = task.index;
                    let wait = match task.needs_durable_start() {
                        false => None,
                        true => self.durable_start(i)?,
                    };
                    let id = match wait {
                        Some(synced) => {
                            let tx = self.tx.clone();
                            let state = self.cx.state.clone();
                            tasks.spawn(async move {
                                // Not past the lease's end, however long the sync took.
                                let synced = match synced.await {
                                    Ok(Ok(())) => match state.map(|s| s.may_start()) {
                                        Some(Err(e)) => Ok(Err(e)),
                                        _ => Ok(Ok(())),
                                    },
                                    other => other,
                                };
                                match synced {
                                    // Interrupted while it waited: it does not begin, and
                                    // the journal says so (nothing to undo; resume runs it).
                                    Ok(Ok(())) if task.cancel.is_cancelled() => {
                                        (i, task.did_not_begin(1))
                                    }
                                    Ok(Ok(())) => task.run().await,
                                    failed => {
                                        let error = match failed {
                                            Ok(Err(e)) => e,
                                            _ => io::Error::other("the sync thread stopped"),
                                        };
                                        let said = error.to_string();
                                        let _ = tx.send(Msg::JournalFailed(error));
                                        let error = said;
                                        (i, Report {
                                            result: Err(Failure::permanent(format!(
                                                "not started: its start could not be made durable ({error})"
                                            ))),
                                            attempts: 0,
                                            cancelled: false,
                                        })
                                    }
                                }
                            })
                        }
                        None => tasks.spawn(task.run()),
                    }
                    .id();
                    task_steps.insert(id, i);
                }
                if self.promise.is_some() && !self.stopping {
                    self.promise_next()?;
                }
            }
            if tasks.is_empty() {
                break;
            }
            self.sink.flush();
            // Everything this tick recorded goes out together (one transaction in a database).
            self.journal.flush()?;
            let watch = self.journal.watch_every();
            tokio::select! {
                joined = tasks.join_next_with_id() => {
                    // Take every task that has already ended, so their dependents start in one
                    // tick and share one commit.
                    let mut joined = joined;
                    while let Some(result) = joined {
                        while let Ok(msg) = rx.try_recv() {
                            self.message(msg)?;
                        }
                        match result {
                            Ok((id, (i, report))) => {
                                task_steps.remove(&id);
                                // A step stopped by the supervisor at the lease's end did not
                                // fail: the run stops, and its end is not recorded as one.
                                self.fenced()?;
                                self.finished(i, report)?;
                            }
                            Err(e) => {
                                // A task that panicked is a bug; its step fails, the run goes on.
                                if let Some(i) = task_steps.remove(&e.id()) {
                                    let report = Report {
                                        result: Err(Failure::permanent(format!("internal error: {e}"))),
                                        attempts: 1,
                                        cancelled: false,
                                    };
                                    self.finished(i, report)?;
                                }
                            }
                        }
                        joined = tasks.try_join_next_with_id();
                    }
                }
                Some(msg) = rx.recv() => self.message(msg)?,
                // While steps run, a lapsed lease stops them (their tasks are dropped, which
                // kills their process groups): another session may be taking over.
                () = tokio::time::sleep(watch.unwrap_or_default()), if watch.is_some() => {
                    self.fenced()?;
                }
                () = signals.token().cancelled(), if !self.interrupted => {
                    self.interrupt(signals.received().unwrap_or("a signal"))?;
                }
            }
        }
        Ok(())
    }

    /// What a step with a durable start waits for before it begins: nothing when the intent
    /// promised ahead is durable already, else the sync that covers its intent or start record
    /// (one request a step; the sync thread serves those of a tick with one fdatasync).
    fn durable_start(&mut self, i: usize) -> io::Result<Option<crate::state::Durable>> {
        let Some(batch) = self.promised.remove(&i) else {
            return self.journal.commit_later().map(Some);
        };
        let Some(synced) = self.promises[batch].as_mut() else {
            return Ok(None);
        };
        match synced.try_recv() {
            Ok(Ok(())) => {
                self.promises[batch] = None;
                Ok(None)
            }
            Ok(Err(e)) => Err(e),
            // Not yet: a sync of its own, which covers the intent as well (the batch's receiver
            // may be wanted by another step of it).
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                self.journal.commit_later().map(Some)
            }
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                Err(io::Error::other("the journal's sync thread stopped"))
            }
        }
    }

    /// Promises ahead the starts of the ready steps that will take the next free slots: their
    /// intents are made durable while the running steps run (see [`crate::journal::intent`]).
    /// When one of the next two slots' worth of steps has no intent, the next four slots' worth
    /// are promised with one sync. Promised one free slot ahead, a step often came to its slot
    /// before its sync returned (a fifth of 1,000 `true` steps, two at a time); two ahead, about
    /// one in a hundred does; in batches of four, those steps take one sync per four or five.
    /// Only while this session's steps are short ([`SHORT_MS`]).
    fn promise_next(&mut self) -> io::Result<()> {
        let Some(boot_id) = self.promise.clone() else {
            return Ok(());
        };
        if self.typical_ms.is_none_or(|t| t >= SHORT_MS) {
            return Ok(());
        }
        let slots = self.cx.concurrency.clamp(1, 8);
        let next: Vec<usize> = self
            .ready
            .next(WINDOW * slots)
            .into_iter()
            .filter(|&i| self.promisable(i))
            .collect();
        if next
            .iter()
            .take(REFILL * slots)
            .all(|i| self.promised.contains_key(i))
        {
            return Ok(());
        }
        let t_ms = self.clock.ms();
        let batch = self.promises.len();
        let mut wrote = false;
        // However the priorities move, no more than the window waits promised: after a restart
        // each one is in doubt.
        let room = (WINDOW * slots).saturating_sub(self.promised.len());
        let fresh: Vec<usize> = next
            .into_iter()
            .filter(|i| !self.promised.contains_key(i))
            .take(room)
            .collect();
        for i in fresh {
            self.journal.append(&Record::StepIntent {
                t_ms,
                step: self.plan.steps[i].id.clone(),
                boot_id: boot_id.clone(),
            })?;
            self.promised.insert(i, batch);
            wrote = true;
        }
        if wrote {
            let synced = self.journal.commit_later()?;
            self.promises.push(Some(synced));
        }
        Ok(())
    }

    /// Whether a step's start is promised ahead: one that needs a durable start and will most
    /// likely begin when it comes to a slot. Not one with a `when` (it may be skipped) or out of
    /// the run's mode (it will be), for after a restart every promised step that had not begun
    /// is in doubt; nor an approval, which makes its wait durable as it begins anyway.
    fn promisable(&self, i: usize) -> bool {
        let step = &self.plan.steps[i];
        needs_durable_start(step, self.cx.mode)
            && step.when.is_none()
            && !step.out_of_mode
            && !step.is_approval()
    }

    /// The first signal: no new step starts, running ones are cancelled (a second signal exits
    /// at once: see [`Signals`]).
    fn interrupt(&mut self, signal: &str) -> io::Result<()> {
        self.interrupted = true;
        self.stopping = true;
        self.cancel.cancel();
        self.emit(&Record::Interrupted {
            t_ms: self.clock.ms(),
            signal: signal.to_string(),
            at: wall(self.cx.mode),
        })?;
        self.journal.commit()
    }

    /// [`JournalWriter::fence`]: an error stops the run (see [`Executor::stopping_on`]).
    fn fenced(&mut self) -> io::Result<()> {
        self.journal.fence()
    }

    /// The run stops on `error` (a lease lost, a journal that cannot be written): the tasks of
    /// the running steps are gone, which killed their process groups. Said on stderr and in the
    /// journal, as far as it still takes records (a shared journal's local copy always does).
    fn stopping_on(&mut self, error: io::Error) -> io::Error {
        let running: Vec<&str> = self
            .states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == Status::Running)
            .map(|(i, _)| self.plan.steps[i].id.as_str())
            .collect();
        let message = if running.is_empty() {
            format!("the run stops: {error}")
        } else {
            format!(
                "the run stops: {error}; stopped while running (their processes are killed): {}",
                running.join(", ")
            )
        };
        crate::eprintln_quiet!("ripcord: {message}");
        let note = Record::RunNote {
            t_ms: self.clock.ms(),
            message,
        };
        let _ = self.journal.append(&note);
        let _ = self.journal.flush();
        error
    }

    fn emit(&mut self, record: &Record) -> io::Result<()> {
        self.journal.append(record)?;
        self.sink.record(record);
        Ok(())
    }

    fn message(&mut self, msg: Msg) -> io::Result<()> {
        // Nothing a task says is recorded once the lease lapsed: a try that failed because the
        // supervisor stopped it at the lease's end is not a failure of the step.
        if !matches!(msg, Msg::JournalFailed(_)) {
            self.fenced()?;
        }
        let t_ms = self.clock.ms();
        let record = match msg {
            Msg::JournalFailed(error) => return Err(error),
            // After an interrupt nothing starts, a retry neither: unacknowledged, it does not
            // run (its task sees the cancellation).
            Msg::Attempt { .. } if self.interrupted => return Ok(()),
            Msg::Attempt { step, attempt, ack } => {
                self.states[step].acted += 1;
                self.emit(&Record::StepStarted {
                    t_ms,
                    step: self.plan.steps[step].id.clone(),
                    attempt,
                })?;
                // A retry is a new effect: its start is durable before it runs, like the first
                // attempt's (the task waits for this acknowledgement).
                if needs_durable_start(&self.plan.steps[step], self.cx.mode) {
                    self.journal.commit()?;
                } else {
                    self.journal.flush()?;
                }
                let _ = ack.send(());
                return Ok(());
            }
            Msg::AttemptFailed {
                step,
                attempt,
                error,
                retry_in,
                outputs,
                nothing_ran,
            } => {
                if nothing_ran {
                    self.states[step].acted = self.states[step].acted.saturating_sub(1);
                }
                Record::AttemptFailed {
                    t_ms,
                    step: self.plan.steps[step].id.clone(),
                    attempt,
                    error: self.cx.masker.text(&error),
                    retry_in_ms: retry_in.map(|d| d.as_millis() as u64),
                    // Masked whole, then cut: a secret across the cut is masked too.
                    stderr_tail: crate::journal::record::output_tail(
                        &self.cx.masker.json_map(&outputs),
                    ),
                    nothing_ran,
                }
            }
            Msg::Approved {
                step,
                by,
                approver,
                comment,
                via,
                simulated,
            } => Record::Approval {
                t_ms,
                step: self.plan.steps[step].id.clone(),
                approver,
                at: (!simulated).then(now_rfc3339),
                simulated,
                by,
                comment: comment.map(|c| self.cx.masker.text(&c)),
                via: via.map(str::to_string),
            },
            Msg::Rejected { step, by, comment } => Record::ApprovalRejected {
                t_ms,
                step: self.plan.steps[step].id.clone(),
                by,
                comment: comment.map(|c| self.cx.masker.text(&c)),
            },
            Msg::Refused { step, by, reason } => Record::AnswerRefused {
                t_ms,
                step: self.plan.steps[step].id.clone(),
                by,
                reason,
            },
        };
        self.emit(&record)?;
        // An answer is evidence: it is durable as soon as it is taken.
        self.journal.commit()
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            plan: &self.plan,
            inputs: &self.cx.inputs,
            run: run_json(self.cx),
            states: &self.states,
            instances: &self.instances,
        }
    }

    /// Decides what a ready step does: skip, fail before starting, or run.
    fn prepare(&mut self, i: usize) -> Prepared {
        let step = &self.plan.steps[i];
        // Left out of a pre-flight by its word or its action's (no read-only check): decided
        // before anything is rendered, as what it reads may come from steps left out too.
        if self.cx.mode == Mode::Check {
            let action = &step.action;
            let spec = self.cx.providers.spec(&action.provider, &action.action);
            if known_check(step, spec.as_deref()) == Some(false) {
                return Prepared::NoCheck(provider::sim::outputs(step, spec.as_deref()));
            }
        }
        let mut exprs = Vec::new();
        if let Some(w) = &step.with {
            w.exprs(&mut exprs);
        }
        exprs.extend(step.when.as_ref().and_then(|c| c.expr()));
        // A pre-flight lists every failed check once: one that reads a failed one's outputs
        // would only add a confusing second failure about values never given.
        if self.cx.mode == Mode::Check {
            let failed = self.scope().failed_sources(&exprs);
            if !failed.is_empty() {
                return Prepared::NotChecked(format!(
                    "not checked: it reads the outputs of {}, which failed or could not be checked",
                    failed.join(", ")
                ));
            }
        }
        let ctx = self.scope().context(Some(i), &exprs);
        // A failure to render says which step outputs it read that were never given.
        let fail = |this: &Self, message: String| {
            // Only a failure about a missing value (undefined in a real run, null in a
            // dry-run) can be the missing output's doing; `default(...)` may have handled it.
            let about_missing = message.contains("undefined") || message.contains("null");
            let missing = if about_missing {
                this.scope().missing_outputs(&exprs)
            } else {
                Vec::new()
            };
            Prepared::Fail(match (missing.is_empty(), this.cx.mode) {
                (true, _) => message,
                (false, Mode::Real) => format!(
                    "{message} (not given by their step: {})",
                    missing.join(", ")
                ),
                (false, _) => format!(
                    "{message} (not simulated, so read as null: {}; give them in their step's \
                     `sim.outputs`)",
                    missing.join(", ")
                ),
            })
        };
        if let Some(when) = &step.when {
            match render::eval_condition(&self.env, when, &ctx) {
                Ok(false) => return Prepared::Skip,
                Ok(true) => {}
                Err(e) => return fail(self, format!("cannot evaluate `when`: {e}")),
            }
        }
        let params = match &step.with {
            Some(p) => match render::render_with(&self.env, &step.action, p, &ctx) {
                Ok(v) => v,
                Err(e) => return fail(self, format!("cannot render `with`: {e}")),
            },
            None => Json::Object(Map::new()),
        };
        let action = &step.action;
        let spec = self.cx.providers.spec(&action.provider, &action.action);
        if let Some(spec) = &spec {
            let problems = crate::provider::params::check_rendered(spec, &params);
            if !problems.is_empty() {
                return fail(self, format!("{}: {}", spec.name(), problems.join("; ")));
            }
        }
        // `check: false` keeps a step out of a pre-flight; `check: true` runs it for real there
        // (it only reads); otherwise its action's read-only check, where it has one.
        let checkable = known_check(step, spec.as_deref())
            .unwrap_or_else(|| catalog::has_check(&action.provider, &action.action, &params));
        if self.cx.mode == Mode::Check && !checkable {
            return Prepared::NoCheck(provider::sim::outputs(step, spec.as_deref()));
        }
        let kind = match (action.provider.as_str(), action.action.as_str()) {
            ("approval", "ask") => Kind::Approval(self.approval_how(step, &params)),
            ("assert", "that") => Kind::Assert(self.assertion(step, &params, &ctx)),
            _ => Kind::Provider,
        };
        let dry = self.cx.mode == Mode::DryRun;
        Prepared::Launch(Box::new(Task {
            index: i,
            step: step.clone(),
            kind,
            params,
            run_id: self.cx.run_id.clone(),
            dry,
            fail: dry && (named(&self.cx.fail, step) || step.sim.fail),
            seed: self.cx.seed,
            fail_rate: if dry { self.cx.fail_rate } else { 0.0 },
            spec,
            // Asked for its probe, unless it runs for real in a pre-flight (`check: true`).
            check: self.cx.mode == Mode::Check && step.check != Some(true),
            providers: self.cx.providers.clone(),
            groups: self.cx.groups.clone(),
            cancel: self.cancel.child_token(),
            tx: self.tx.clone(),
            progress: self.sink.progress(),
        }))
    }

    fn approval_how(&self, step: &PlannedStep, params: &Json) -> Approval {
        if self.cx.mode == Mode::DryRun {
            return Approval::Simulated;
        }
        let policy = ApprovalPolicy::of(params);
        let ask = format!("{}@{}.{}", step.id, std::process::id(), self.clock.ms());
        // Answered from another shell, maybe in another directory: the state named in full.
        let hint = format!(
            "ripcord approve {} {}{}",
            self.cx.run_id,
            crate::cli::shell_word(&step.id),
            self.cx
                .state
                .as_ref()
                .map_or_else(String::new, |s| s.again().to_string())
        );
        Approval::Live(Box::new(ApprovalWait {
            policy,
            starter: self.cx.started_by.person().to_string(),
            me: self.cx.by.clone(),
            preapproved: self.cx.yes || named(&self.cx.approve, step),
            prompt: io::stdin().is_terminal(),
            question: self.cx.masker.text(
                params
                    .get("prompt")
                    .and_then(Json::as_str)
                    .unwrap_or("continue?"),
            ),
            ask,
            state: self.cx.state.clone(),
            run_id: self.cx.run_id.clone(),
            hint,
        }))
    }

    /// The verdict of `assert.that`, with the values it read when false.
    fn assertion(
        &self,
        step: &PlannedStep,
        params: &Json,
        ctx: &minijinja::Value,
    ) -> Result<(), String> {
        let message = params.get("message").and_then(Json::as_str);
        match params.get("that") {
            Some(Json::Bool(true)) => Ok(()),
            Some(Json::Bool(false)) => {
                let expr = step.with.as_ref().and_then(|w| {
                    let mut exprs = Vec::new();
                    if let crate::expr::param::Param::Map(entries) = w {
                        entries
                            .iter()
                            .filter(|(k, _)| k == "that")
                            .for_each(|(_, p)| p.exprs(&mut exprs));
                    }
                    exprs.first().map(|e| (*e).clone())
                });
                let mut text = match (&expr, message) {
                    (_, Some(m)) => format!("assertion failed: {m}"),
                    (Some(e), None) => format!("assertion failed: {}", e.text),
                    (None, None) => "assertion failed".to_string(),
                };
                if let Some(e) = expr {
                    // Each value the condition read, but not a whole inventory: a long one
                    // (a map of sites, a list of servers) is cut, the message says the rest.
                    let values: Vec<String> = render::explain(&self.env, &e, ctx)
                        .into_iter()
                        .map(|v| {
                            // Masked before it is cut: a cut secret would not be recognised.
                            let v = self.cx.masker.text(&v);
                            if v.chars().count() > 160 {
                                let cut: String = v.chars().take(150).collect();
                                format!("{cut}…")
                            } else {
                                v
                            }
                        })
                        .collect();
                    if !values.is_empty() {
                        text.push_str(&format!(" ({})", values.join(", ")));
                    }
                }
                Err(text)
            }
            other => Err(format!(
                "`that` must give true or false, not {}",
                other.map_or("nothing".to_string(), Json::to_string)
            )),
        }
    }

    fn finished(&mut self, i: usize, report: Report) -> io::Result<()> {
        let (status, outputs, error) = match report.result {
            Ok(outputs) => (StepStatus::Succeeded, outputs, None),
            // What it had written before it was stopped is kept as evidence.
            Err(f) if report.cancelled => (
                StepStatus::Cancelled,
                f.outputs,
                Some("cancelled by interrupt".to_string()),
            ),
            Err(f) => (StepStatus::Failed, f.outputs, Some(f.message)),
        };
        if let Some(started) = self.states[i].started_ms {
            let took = self.clock.ms().saturating_sub(started);
            self.typical_ms = Some(self.typical_ms.map_or(took, |t| (3 * t + took) / 4));
        }
        self.finish(i, status, outputs, error, report.attempts)?;
        // `finish` gave back the slots of a step that never ran an attempt.
        if report.attempts > 0 {
            self.ready.release(&self.plan, i);
        }
        Ok(())
    }

    /// Records a step's end and counts down its dependents. Steps that never ran a task
    /// (skipped, failed to render) give their slot back here.
    fn finish(
        &mut self,
        i: usize,
        status: StepStatus,
        outputs: OutputMap,
        error: Option<String>,
        attempts: u32,
    ) -> io::Result<()> {
        let t = self.clock.ms();
        let started = self.states[i].started_ms.unwrap_or(t);
        if attempts == 0 {
            self.ready.release(&self.plan, i);
        }
        // Promised and never begun (skipped, failed to render): it waits no more.
        self.promised.remove(&i);
        let masked = if self.cx.masker.is_empty() {
            outputs.clone()
        } else {
            match self.cx.masker.json(&Json::Object(outputs.clone())) {
                Json::Object(m) => m,
                _ => Map::new(),
            }
        };
        let error = error.map(|e| self.cx.masker.text(&e));
        self.emit(&Record::StepFinished {
            t_ms: t,
            step: self.plan.steps[i].id.clone(),
            status,
            attempts,
            started_ms: started,
            outputs: masked,
            error: error.clone(),
        })?;
        let state = &mut self.states[i];
        state.status = Status::Done(status);
        state.outputs = outputs;
        state.attempts = attempts;
        state.started_ms = Some(started);
        state.finished_ms = Some(t);
        state.error = error;
        let step = &self.plan.steps[i];
        // A pre-flight reports every problem: a failed check fails the run but stops nothing.
        let check = self.cx.mode == Mode::Check;
        if status == StepStatus::Failed && step.on_failure == OnFailure::Abort {
            self.stopping |= !check;
            self.aborted = true;
        }
        if satisfies(step, &self.states[i].status) || (check && status == StepStatus::Failed) {
            let dependents: Vec<usize> = self.plan.dependents(i).collect();
            for d in dependents {
                self.indegree[d] -= 1;
                if self.indegree[d] == 0 && self.states[d].status == Status::Pending {
                    self.ready.push(&self.plan, d);
                }
            }
        }
        Ok(())
    }
}

enum Approval {
    Simulated,
    Live(Box<ApprovalWait>),
}

/// Who may approve a step, and how many must.
#[derive(Debug, Clone)]
struct ApprovalPolicy {
    /// Account names allowed to answer; empty: anyone.
    approvers: Vec<String>,
    min: u32,
    not_by_operator: bool,
}

impl ApprovalPolicy {
    fn of(params: &Json) -> ApprovalPolicy {
        ApprovalPolicy {
            approvers: params
                .get("approvers")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            min: params
                .get("min_approvals")
                .and_then(Json::as_u64)
                .map_or(1, |n| n.clamp(1, u64::from(u32::MAX)) as u32),
            not_by_operator: params
                .get("not_by_operator")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        }
    }
}

/// A live approval: what it waits for and where answers come from.
struct ApprovalWait {
    policy: ApprovalPolicy,
    /// The person who started the run.
    starter: String,
    /// Who runs this session: the one answering the terminal prompt or giving --approve/--yes.
    me: Identity,
    preapproved: bool,
    prompt: bool,
    /// The question, secrets masked (it is printed).
    question: String,
    ask: String,
    state: Option<Arc<dyn StateBackend>>,
    run_id: String,
    /// `ripcord approve RUN STEP ...`, to print.
    hint: String,
}

impl ApprovalWait {
    /// Whether `who` may answer; the reason when not.
    fn may_answer(&self, who: &Identity) -> Result<(), String> {
        let person = who.person();
        let p = &self.policy;
        if !p.approvers.is_empty() && !p.approvers.iter().any(|a| a == person) {
            return Err(format!(
                "{person} is not one of the approvers ({})",
                p.approvers.join(", ")
            ));
        }
        if p.not_by_operator && person == self.starter {
            return Err(format!(
                "{person} started the run, and this approval must come from someone else \
                 (not_by_operator)"
            ));
        }
        // Whoever drives the run now (a resume, a takeover) is an operator of it too.
        if p.not_by_operator && person == self.me.person() {
            return Err(format!(
                "{person} runs this session of the run, and this approval must come from \
                 someone else (not_by_operator)"
            ));
        }
        Ok(())
    }
}

enum Kind {
    Provider,
    Approval(Approval),
    Assert(Result<(), String>),
}

/// One step's attempts, off the scheduler loop.
struct Task {
    index: usize,
    step: PlannedStep,
    kind: Kind,
    params: Json,
    run_id: String,
    dry: bool,
    fail: bool,
    seed: u64,
    fail_rate: f64,
    spec: Option<Arc<crate::provider::ActionSpec>>,
    /// A pre-flight: plugins are asked for their read-only check.
    check: bool,
    providers: Arc<Providers>,
    groups: Groups,
    cancel: CancellationToken,
    tx: mpsc::UnboundedSender<Msg>,
    progress: Option<indicatif::MultiProgress>,
}

/// Cancels an attempt at `timeout` and gives it the grace period to clean up (SIGTERM to its
/// process group, SIGKILL after the grace).
pub async fn with_timeout(
    attempt: impl std::future::Future<Output = provider::Outcome>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> provider::Outcome {
    tokio::pin!(attempt);
    tokio::select! {
        result = &mut attempt => result,
        () = tokio::time::sleep(timeout) => {
            cancel.cancel();
            let late = tokio::time::timeout(provider::process::GRACE + Duration::from_secs(1), attempt).await;
            // What the stopped attempt had written is the timeout's evidence.
            let outputs = match late {
                Ok(Err(f)) => f.outputs,
                _ => provider::OutputMap::new(),
            };
            Err(Failure { outputs, ..Failure::new(format!("timed out after {}", dur(timeout))) })
        }
    }
}

/// Whether a step's start must be durable before it runs: not when running it again after a
/// crash is harmless (an idempotent step, a read-only check, a dry-run), or when it touches
/// nothing outside ripcord (`assert.that`, `sleep.for`).
fn needs_durable_start(step: &PlannedStep, mode: Mode) -> bool {
    let action = &step.action;
    let effect_free = action.builtin
        && matches!(
            (action.provider.as_str(), action.action.as_str()),
            ("assert", "that") | ("sleep", "for")
        );
    !(step.idempotent || mode != Mode::Real || effect_free)
}

impl Task {
    fn needs_durable_start(&self) -> bool {
        let mode = match (self.dry, self.check) {
            (true, _) => Mode::DryRun,
            (false, true) => Mode::Check,
            (false, false) => Mode::Real,
        };
        needs_durable_start(&self.step, mode)
    }

    /// An attempt whose start is journaled but that an interrupt stopped before it began: said
    /// in the journal as an attempt that did nothing (as for `ssh.run` that never reached its
    /// host), so that rollback has nothing to undo for it. The step failed, and resume runs it.
    fn did_not_begin(&self, attempt: u32) -> Report {
        let error = "cancelled by interrupt before it began".to_string();
        let _ = self.tx.send(Msg::AttemptFailed {
            step: self.index,
            attempt,
            error: error.clone(),
            retry_in: None,
            outputs: OutputMap::new(),
            nothing_ran: true,
        });
        Report {
            result: Err(Failure {
                nothing_ran: true,
                ..Failure::permanent(error)
            }),
            attempts: attempt,
            cancelled: false,
        }
    }

    async fn run(self) -> (usize, Report) {
        let report = match &self.kind {
            Kind::Approval(how) => self.approval(how).await,
            _ => self.attempts().await,
        };
        (self.index, report)
    }

    async fn attempts(&self) -> Report {
        let policy = &self.step.retry;
        let mut delay = policy.delay;
        let mut attempt = 1;
        loop {
            if attempt > 1 {
                let (ack, acked) = oneshot::channel();
                let _ = self.tx.send(Msg::Attempt {
                    step: self.index,
                    attempt,
                    ack,
                });
                // No acknowledgement: interrupted, or the journal could not be written; an
                // attempt that is not recorded must not run.
                let acked = acked.await.is_ok();
                if self.cancel.is_cancelled() {
                    if acked {
                        // Its start is journaled: the journal says it did nothing.
                        let mut report = self.did_not_begin(attempt);
                        report.cancelled = true;
                        return report;
                    }
                    return Report {
                        result: Err(Failure::permanent(
                            "cancelled by interrupt before its retry",
                        )),
                        attempts: attempt - 1,
                        cancelled: true,
                    };
                }
                if !acked {
                    return Report {
                        result: Err(Failure::permanent(
                            "the retry's start could not be journaled; not retried",
                        )),
                        attempts: attempt - 1,
                        cancelled: false,
                    };
                }
            }
            let cancel = self.cancel.child_token();
            let result = with_timeout(
                self.attempt(attempt, cancel.clone()),
                self.step.timeout,
                &cancel,
            )
            .await;
            let failure = match result {
                Ok(outputs) => {
                    return Report {
                        result: Ok(outputs),
                        attempts: attempt,
                        cancelled: false,
                    };
                }
                Err(f) => f,
            };
            if self.cancel.is_cancelled() {
                return Report {
                    result: Err(failure),
                    attempts: attempt,
                    cancelled: true,
                };
            }
            let last = attempt >= policy.attempts || !failure.retryable;
            let _ = self.tx.send(Msg::AttemptFailed {
                step: self.index,
                attempt,
                error: failure.message.clone(),
                retry_in: (!last).then_some(delay),
                outputs: failure.outputs.clone(),
                nothing_ran: failure.nothing_ran,
            });
            if last {
                return Report {
                    result: Err(failure),
                    attempts: attempt,
                    cancelled: false,
                };
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => {
                    return Report { result: Err(failure), attempts: attempt, cancelled: true };
                }
            }
            delay = policy.next_delay(delay);
            attempt += 1;
        }
    }

    async fn attempt(&self, attempt: u32, cancel: CancellationToken) -> provider::Outcome {
        let action = &self.step.action;
        if let Kind::Assert(verdict) = &self.kind {
            if self.dry {
                tokio::time::sleep(self.step.sim.duration).await;
            }
            return match verdict {
                // `--fail` rehearses an assertion failing too.
                Ok(()) if self.fail => {
                    Err(Failure::permanent("simulated failure (--fail or sim.fail)"))
                }
                Ok(()) => Ok(OutputMap::new()),
                Err(e) => Err(Failure::permanent(e.clone())),
            };
        }
        if self.dry {
            let draw = provider::sim::Draw::of(self.seed, &self.step.id, attempt);
            return provider::sim::simulate(
                &self.step,
                self.spec.as_deref(),
                self.fail,
                self.fail_rate,
                draw,
            )
            .await;
        }
        let plugin;
        let provider: &dyn provider::Provider = match self.providers.builtin(&action.provider) {
            Some(p) => p,
            None => match self.providers.plugin(&action.provider) {
                Ok(p) => {
                    plugin = p;
                    plugin.as_ref()
                }
                Err(why) => return Err(Failure::permanent(why)),
            },
        };
        let request = provider::Request {
            action: action.clone(),
            params: self.params.clone(),
            step: self.step.id.clone(),
            attempt,
            run_id: self.run_id.clone(),
            timeout: self.step.timeout,
            cancel,
            check: self.check,
            groups: self.groups.clone(),
        };
        // A probe's outputs are what it found, nothing simulated: a `check: true` step that
        // reads an output the probe does not give fails rather than judge a made-up value.
        provider.invoke(request).await
    }

    async fn approval(&self, how: &Approval) -> Report {
        let wait = match how {
            Approval::Simulated => {
                tokio::time::sleep(self.step.sim.duration).await;
                let _ = self.tx.send(Msg::Approved {
                    step: self.index,
                    by: None,
                    approver: "dry-run".into(),
                    comment: None,
                    via: None,
                    simulated: true,
                });
                return approved(&["dry-run".to_string()], true);
            }
            Approval::Live(wait) => wait,
        };
        let prompt = &wait.question;
        let mut tally = Tally::default();
        if wait.preapproved
            && let Some(done) = self.answer(wait, &mut tally, &wait.me, true, None, IN_ADVANCE)
        {
            return done;
        }
        let need = wait.policy.min as usize - tally.approvers.len();
        crate::eprintln_quiet!(
            "waiting for approval of `{}` ({need} more needed): {prompt}\n  answer from any shell: {}\n  (add --reject to say no, --comment TEXT to say why)",
            self.step.id,
            wait.hint,
        );
        let (answers_tx, mut answers_rx) = mpsc::unbounded_channel();
        if wait.prompt {
            let question = format!("approve `{}`? {prompt} [y/N] ", self.step.id);
            let progress = self.progress.clone();
            tokio::task::spawn_blocking(move || {
                let _ = answers_tx.send(ask(&question, progress.as_ref()));
            });
        }
        let deadline = tokio::time::sleep(self.step.timeout);
        tokio::pin!(deadline);
        let mut poll = tokio::time::interval(Duration::from_millis(200));
        let mut seen = HashSet::new();
        loop {
            tokio::select! {
                Some(answer) = answers_rx.recv() => {
                    let Some(yes) = answer else { continue };
                    let source = AT_THE_TERMINAL;
                    if let Some(done) = self.answer(wait, &mut tally, &wait.me, yes, None, source) {
                        return done;
                    }
                }
                _ = poll.tick() => {
                    let Some(state) = wait.state.clone() else { continue };
                    // Off the loop's thread: a slow state database must not hold up the run
                    // (its other steps, its lease checks).
                    let run_id = wait.run_id.clone();
                    let read = tokio::task::spawn_blocking(move || state.answers(&run_id));
                    let Ok(Ok(all)) = read.await else { continue };
                    for a in &all {
                        if a.ask != wait.ask || a.step != self.step.id || !seen.insert(a.id.clone()) {
                            continue;
                        }
                        let done = self.answer(
                            wait, &mut tally, &a.by, a.approve, a.comment.clone(), WITH_APPROVE,
                        );
                        if let Some(done) = done {
                            return done;
                        }
                    }
                }
                () = &mut deadline => return failed(
                    format!(
                        "not approved within {} ({} of {} approvals)",
                        dur(self.step.timeout),
                        tally.approvers.len(),
                        wait.policy.min
                    ),
                    false,
                ),
                () = self.cancel.cancelled() => return failed("cancelled by interrupt".into(), true),
            }
        }
    }

    /// Takes one answer: refused (not allowed, or twice from one person), a rejection (the step
    /// fails), or an approval (the step succeeds once enough have come). `Some` ends the wait.
    fn answer(
        &self,
        wait: &ApprovalWait,
        tally: &mut Tally,
        who: &Identity,
        approve: bool,
        comment: Option<String>,
        source: &'static str,
    ) -> Option<Report> {
        let refuse = |reason: String| {
            crate::eprintln_quiet!(
                "answer from {who} ({source}) not taken for `{}`: {reason}",
                self.step.id
            );
            let _ = self.tx.send(Msg::Refused {
                step: self.index,
                by: who.clone(),
                reason,
            });
            None
        };
        if let Err(reason) = wait.may_answer(who) {
            return refuse(reason);
        }
        if !approve {
            let _ = self.tx.send(Msg::Rejected {
                step: self.index,
                by: who.clone(),
                comment: comment.clone(),
            });
            let why = comment.map_or_else(String::new, |c| format!(": {c}"));
            return Some(failed(format!("rejected by {who}{why}"), false));
        }
        let person = who.person().to_string();
        if tally.approvers.contains(&person) {
            return refuse(format!("{person} has approved already"));
        }
        tally.approvers.push(person);
        let _ = self.tx.send(Msg::Approved {
            step: self.index,
            by: Some(who.clone()),
            approver: who.to_string(),
            comment,
            via: Some(source),
            simulated: false,
        });
        (tally.approvers.len() >= wait.policy.min as usize)
            .then(|| approved(&tally.approvers, false))
    }
}

/// How an answer came, as the journal says it.
pub const IN_ADVANCE: &str = "given in advance (--yes or --approve)";
const AT_THE_TERMINAL: &str = "at the terminal";
const WITH_APPROVE: &str = "with ripcord approve";

/// The distinct people who approved so far.
#[derive(Default)]
struct Tally {
    approvers: Vec<String>,
}

fn approved(approvers: &[String], simulated: bool) -> Report {
    let at = if simulated {
        String::new()
    } else {
        now_rfc3339()
    };
    Report {
        result: Ok(OutputMap::from_iter([
            ("approved_at".to_string(), json!(at)),
            ("simulated".to_string(), json!(simulated)),
            ("approver".to_string(), json!(approvers.join(", "))),
        ])),
        attempts: 1,
        cancelled: false,
    }
}

fn failed(message: String, cancelled: bool) -> Report {
    Report {
        result: Err(Failure::permanent(message)),
        attempts: 1,
        cancelled,
    }
}

/// Asks on the terminal (stderr, stdin). The progress display is hidden meanwhile, not
/// suspended: suspending holds its lock for the whole read, and every event of the run would
/// wait for the operator's answer.
fn ask(question: &str, progress: Option<&indicatif::MultiProgress>) -> Option<bool> {
    if let Some(p) = progress {
        let _ = p.clear();
        p.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut err = io::stderr();
    let _ = write!(err, "\n{question}");
    let _ = err.flush();
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    if let Some(p) = progress {
        p.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    read.ok()?;
    Some(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
