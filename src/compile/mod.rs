//! The compiler: a loaded [`Runbook`] becomes an immutable [`Plan`].
//!
//! In order: the header (version, name, rto, concurrency, pools); inputs and their values; each
//! step on its own (id, action, defaults, durations, retry, params against the action's schema,
//! every `${{ }}` expression); then across steps: ids unique, every `needs` and reference
//! resolves, `steps.X` references add edges, and the graph is acyclic (each cycle reported as
//! its whole circle); last, `for_each` expansion and the plan's DAG. All problems are collected
//! and reported together; expansion only runs on a graph without errors.

pub mod cycle;
pub mod inputs;

mod checks;
mod declare;
mod expand;
mod inline;
mod limits;
mod modules;
mod refs;
mod settings;

pub use crate::diag::suggest;
pub use crate::runbook::is_name;
pub use limits::{MAX_EDGES, MAX_INCLUDE_DEPTH, MAX_STEPS};
pub use settings::parse_percent;

use declare::needs_of;
use refs::{Context, dependency_order, reads_of};
use settings::sleep_estimate;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;
use serde_saphyr::Spanned;

use crate::diag::{Diag, SourceFile};
use crate::plan::{ActionRef, Group, Plan, PlannedStep, Pool, RetryPolicy, SimHints, UndoSpec};
use std::sync::Arc;

use crate::provider::catalog::{ActionSpec, EXTERNAL_SIM_DEFAULT, Outputs};
use crate::provider::{Lookup, Providers};
use crate::runbook::{
    OnFailure, Runbook, Source, Span, Step, Value, ValueKind, duration, load_file_as,
};

use crate::expr::param::{Condition, Param};
use crate::expr::{self, Expr, Ref, types};
use crate::plan::ResolvedInput;
use crate::provider::params;

/// The default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// The timeout of a step that sets none (and has no `defaults.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Names `run.X` may use in expressions.
pub const RUN_FIELDS: &[&str] = &["id", "dry_run", "check", "name", "mode"];
/// Jinja globals an expression may call without declaring them.
const JINJA_GLOBALS: &[&str] = &["range", "dict", "namespace", "debug"];

pub struct CompileOptions<'a> {
    /// `--input key=value` pairs, in command-line order (the last one wins).
    pub inputs: &'a [(String, String)],
    /// `--input-file`s, in command-line order (a later file wins; `--input` wins over all).
    pub input_files: &'a [inputs::InputFile],
    /// Whether a required input without a value is an error (plan, run) or stays unknown
    /// (validate).
    pub require_inputs: bool,
    /// Whether this is for a session that runs steps (run, run --check, resume, rollback):
    /// inputs' `command:`s run, and an input a step uses must have a value. Otherwise
    /// (validate, plan, graph, dry-run) a command's value is a stand-in or unknown.
    pub run_commands: bool,
    /// `--mode`: one of the runbook's `modes:` (default: the first).
    pub mode: Option<&'a str>,
    /// Built-in actions and external plugins, whose descriptions check params and outputs.
    pub providers: &'a Providers,
}

pub struct Compiled {
    pub plan: Plan,
    pub warnings: Vec<Diag>,
}

/// Compiles `source` (and the modules it includes); on failure, every error found (and any
/// warnings).
///
/// Takes the source: its steps are dropped as they are compiled.
pub fn compile(source: Source, options: &CompileOptions) -> Result<Compiled, Vec<Diag>> {
    let root = Path::new(source.file.name());
    let mut cx = Compiler {
        file: source.file.clone(),
        diags: Vec::new(),
        providers: options.providers,
        missing_plugins: HashSet::new(),
        pools: Vec::new(),
        modules: HashMap::new(),
        chain: vec![(
            std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
            source.file.name().to_string(),
        )],
        sources: vec![source.file.clone()],
        modes: Vec::new(),
        cleanup_modes: Vec::new(),
        locks: Vec::new(),
        mode: None,
    };
    let mut source = source;
    let runbook = &mut source.runbook;
    let header = cx.header(runbook);
    cx.choose_mode(runbook, options.mode);
    let pools = cx.pools(runbook);
    let inputs = inputs::resolve(
        runbook,
        &cx.file,
        options.inputs,
        options.input_files,
        options.require_inputs,
        options.run_commands,
        &mut cx.diags,
    );
    let body = cx.body(runbook, &inputs, &pools);
    if cx.diags.iter().any(Diag::is_error) {
        return Err(cx.diags);
    }
    // A module's steps, now fed the includer's values, may put a secret on a command line.
    let inlined: Vec<&Decl> = body.decls.iter().filter(|d| d.group.is_some()).collect();
    cx.check_secrets_stay_off_command_lines(inlined.into_iter(), &inputs);
    let plan = cx.expand(header, inputs, body);
    if !cx.diags.iter().any(Diag::is_error) {
        cx.refuse_outputs_of_skipped(&plan);
    }
    if options.require_inputs && !cx.diags.iter().any(Diag::is_error) {
        cx.render_fan_outs(&plan, options.run_commands);
    }
    if cx.diags.iter().any(Diag::is_error) {
        return Err(cx.diags);
    }
    let mut plan = plan;
    plan.description = runbook.description.clone();
    plan.modes = cx.modes.clone();
    plan.cleanup_modes = cx.cleanup_modes.clone();
    plan.locks = cx.locks.clone();
    plan.mode = cx.mode.clone();
    plan.rollback = runbook.rollback.unwrap_or_default();
    plan.finish();
    Ok(Compiled {
        plan,
        warnings: cx.diags,
    })
}

struct Header {
    name: String,
    rto: Option<Duration>,
    concurrency: usize,
}

/// A declared step after the per-step checks, before expansion.
#[derive(Clone)]
struct Decl {
    /// `check:` as written: `false` leaves it out of `run --check`, `true` runs it for real there.
    check: Option<bool>,
    /// Not in the run's mode (its `when` is then `false`).
    out_of_mode: bool,
    id: String,
    span: Span,
    name: Option<String>,
    action: Option<ActionRef>,
    spec: Option<Arc<ActionSpec>>,
    with: Option<Param>,
    when: Option<Condition>,
    for_each: Option<ForEach>,
    undo: Option<UndoSpec>,
    retry: RetryPolicy,
    timeout: Duration,
    sim: SimHints,
    idempotent: bool,
    irreversible: bool,
    pool: Option<usize>,
    on_failure: OnFailure,
    needs: Vec<(String, Span)>,
    /// Steps this one waits for, with the span that made the edge (a need or a reference).
    deps: Vec<(usize, Span)>,
    /// The file the step is declared in.
    file: SourceFile,
    /// An `include:` step, before it is replaced by the module's steps.
    include: Option<Inclusion>,
    /// After inlining: the innermost module inclusion the step came from.
    group: Option<usize>,
}

#[derive(Clone)]
struct Inclusion {
    /// `None` when the module could not be loaded or compiled (already reported).
    module: Option<Rc<Module>>,
}

/// A compiled module: its steps inlined, ready to be inlined again under a prefix.
struct Module {
    /// As shown in diagnostics.
    display: String,
    inputs: Vec<ResolvedInput>,
    body: Body,
}

/// A runbook's (or module's) steps after its includes are inlined.
#[derive(Default)]
struct Body {
    decls: Vec<Decl>,
    /// `outputs:` of a module, over the inlined steps.
    outputs: Vec<(String, expr::Template)>,
    groups: Vec<Group>,
}

#[derive(Clone)]
enum ForEach {
    Items(Vec<Json>),
    Expr(Expr),
}

struct Compiler<'a> {
    /// The file being compiled: the runbook, or a module it includes.
    file: SourceFile,
    diags: Vec<Diag>,
    providers: &'a Providers,
    /// External providers already reported as missing (once each).
    missing_plugins: HashSet<String>,
    /// Every pool declared by the runbook or a module (the runbook's size wins).
    pools: Vec<Pool>,
    /// Modules compiled so far, by canonical path (`None`: it had errors).
    modules: HashMap<PathBuf, Option<Rc<Module>>>,
    /// The files being compiled, outermost first, to report include cycles.
    chain: Vec<(PathBuf, String)>,
    sources: Vec<SourceFile>,
    /// The runbook's `modes:` (modules' steps name them too).
    modes: Vec<String>,
    cleanup_modes: Vec<String>,
    locks: Vec<String>,
    /// The run's mode: `--mode`, else the first of `modes:`.
    mode: Option<String>,
}

impl Compiler<'_> {
    fn error(
        &mut self,
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) {
        self.diags.push(
            Diag::error(code, message)
                .in_file(&self.file)
                .label(span, label),
        );
    }

    fn push(&mut self, diag: Diag) {
        self.diags.push(diag.in_file(&self.file));
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }

    /// The steps of `runbook` (the file being compiled), checked together, their includes
    /// inlined. Empty when the file has errors.
    ///
    /// The steps are taken out of `runbook`, each dropped once it is declared: at 100,000 steps
    /// the YAML model and the declarations would not fit in memory together.
    fn body(&mut self, runbook: &mut Runbook, inputs: &[ResolvedInput], pools: &[Pool]) -> Body {
        let errors_before = self.error_count();
        let steps = std::mem::take(&mut runbook.steps.value);
        let defaults = runbook.defaults.as_ref();
        let mut decls: Vec<Decl> = Vec::with_capacity(steps.len());
        for step in steps {
            decls.push(match (&step.uses, &step.include) {
                (None, Some(include)) => self.include_step(&step, include),
                _ => self.step(&step, defaults, pools),
            });
        }
        if decls.is_empty() {
            self.error(
                "ripcord::no-steps",
                "the runbook has no steps",
                Span::of(&runbook.steps),
                "`steps:` is empty",
            );
        }
        let ids = self.index_ids(&decls);
        self.resolve_references(&mut decls, &ids, inputs);
        self.check_secrets_stay_off_command_lines(decls.iter(), inputs);
        self.check_script_quoting(decls.iter());
        self.check_expression_types(decls.iter(), inputs);
        let outputs = self.check_outputs(runbook, &decls, &ids, inputs);
        let ok = self.error_count() == errors_before;
        if self.error_count() == 0 {
            // With errors, an input may look unused only because its expression failed.
            self.warn_unused_inputs(runbook, &decls);
        }
        if !ok || self.report_cycles(&decls) {
            return Body::default();
        }
        self.inline(decls, outputs)
    }
}

impl Compiler<'_> {
    /// Each instance of a `for_each` whose `with:` reads only inputs (that have values), the
    /// item and the run is rendered and checked against its action's params now: a host
    /// missing from an inventory, a misspelt variable, is found before anything runs, not
    /// when the run reaches that host after changing the others. (Nothing rendered is shown.)
    /// A step that reads the outputs of a step that never runs in this mode (or whose `when:`
    /// is `false`) would fail half-way through the run: refused now, naming the mode.
    fn refuse_outputs_of_skipped(&mut self, plan: &Plan) {
        let never = |s: &PlannedStep| matches!(s.when, Some(Condition::Always(false)));
        let mut skipped: HashMap<&str, bool> = HashMap::new();
        for s in &plan.steps {
            let all = skipped.entry(s.base.as_str()).or_insert(true);
            *all &= never(s);
        }
        let mut told: HashSet<(&str, &str)> = HashSet::new();
        for step in plan.steps.iter().filter(|s| !never(s)) {
            let mut exprs = Vec::new();
            if let Some(w) = &step.with {
                w.exprs(&mut exprs);
            }
            exprs.extend(step.when.as_ref().and_then(Condition::expr));
            // (`| default(...)` says the step may not have run.)
            for e in exprs.into_iter().filter(|e| !e.source.contains("default")) {
                for r in &e.refs {
                    let Ref::Step { id, path } = r else { continue };
                    if path.first().map(String::as_str) != Some("outputs")
                        || skipped.get(id.as_str()) != Some(&true)
                        || !told.insert((step.base.as_str(), id.as_str()))
                    {
                        continue;
                    }
                    let file = plan.file_of(step);
                    let when = match &self.mode {
                        Some(mode) => format!("in mode `{mode}`"),
                        None => "ever".to_string(),
                    };
                    self.diags.push(
                        Diag::error(
                            "ripcord::outputs-of-skipped",
                            format!(
                                "step `{}` reads the outputs of `{id}`, which does not run {when}",
                                step.base
                            ),
                        )
                        .in_file(file)
                        .label(e.span, "read here")
                        .help("give the reading step the same `modes:`, or read the outputs with `| default(...)` where the step may not have run"),
                    );
                }
            }
        }
    }

    fn render_fan_outs(&mut self, plan: &Plan, real: bool) {
        let env = expr::render::environment();
        // Inputs whose values are known here: not a command's stand-in (plan, dry-run).
        let inputs: serde_json::Map<String, Json> = plan
            .inputs
            .iter()
            .filter(|i| real || i.origin != crate::plan::InputOrigin::Command)
            .filter_map(|i| Some((i.name.clone(), i.value.clone()?)))
            .collect();
        // Made once: an inventory of thousands of hosts is not copied per instance.
        let inputs_value = minijinja::Value::from(minijinja::value::Serde(&inputs));
        let run = serde_json::json!({
            "id": "00000000-000000-0000", "dry_run": false, "check": false, "name": plan.name,
            "mode": self.mode.clone().unwrap_or_default(),
        });
        let run_value = minijinja::Value::from(minijinja::value::Serde(&run));
        // Five items a step at most: a wrong inventory can have thousands.
        let mut reported: HashMap<&str, usize> = HashMap::new();
        for step in &plan.steps {
            let (Some(item), Some(with)) = (&step.item, &step.with) else {
                continue;
            };
            // An instance with a `when:` may be skipped at run time (a host without the
            // variable, guarded by `is defined`); one out of the run's mode never runs.
            if !matches!(step.when, None | Some(Condition::Always(true))) {
                continue;
            }
            if reported.get(step.base.as_str()).is_some_and(|n| *n >= 5) {
                continue;
            }
            let mut exprs = Vec::new();
            with.exprs(&mut exprs);
            let knowable = exprs.iter().flat_map(|e| &e.refs).all(|r| match r {
                Ref::Input(name) => inputs.contains_key(name),
                Ref::Item | Ref::Run(_) => true,
                Ref::Step { .. } | Ref::Unknown(_) => false,
            });
            if !knowable {
                continue;
            }
            let ctx = minijinja::context! {
                inputs => inputs_value.clone(),
                item => minijinja::Value::from(minijinja::value::Serde(item)),
                run => run_value.clone(),
            };
            let problem = match expr::render::render_with(&env, &step.action, with, &ctx) {
                Err(e) => Some(format!("cannot render `with`: {e}")),
                Ok(params) => self
                    .providers
                    .spec(&step.action.provider, &step.action.action)
                    .map(|spec| crate::provider::params::check_rendered(&spec, &params))
                    .filter(|problems| !problems.is_empty())
                    .map(|problems| problems.join("; ")),
            };
            let Some(problem) = problem else { continue };
            *reported.entry(step.base.as_str()).or_default() += 1;
            let file = plan.file_of(step);
            self.diags.push(
                Diag::error(
                    "ripcord::for-each-params",
                    format!("step `{}` (one of `{}`'s items): {problem}", step.id, step.base),
                )
                .in_file(file)
                .label(step.span, "its `with:` does not fit this item")
                .help("check the item's entry in the inputs (an inventory host without the variable, a group naming a host that is not listed); nothing has started"),
            );
        }
    }
}

impl Compiler<'_> {
    /// The runbook's `modes:` (names, no repeats) and the run's: `--mode` (an unknown one is an
    /// error, exit 2), else the first.
    fn choose_mode(&mut self, runbook: &Runbook, wanted: Option<&str>) {
        let mut modes: Vec<String> = Vec::new();
        if let Some(declared) = &runbook.modes {
            if declared.value.is_empty() {
                self.error(
                    "ripcord::modes",
                    "`modes:` is empty",
                    Span::of(declared),
                    "list the ways to run it, the default first",
                );
            }
            for m in &declared.value {
                if !crate::runbook::is_name(&m.value) {
                    self.error(
                        "ripcord::modes",
                        format!("invalid mode name `{}`", m.value),
                        Span::of(m),
                        "mode names are [a-z0-9][a-z0-9_-]*",
                    );
                } else if modes.contains(&m.value) {
                    self.error(
                        "ripcord::modes",
                        format!("mode `{}` is listed twice", m.value),
                        Span::of(m),
                        "again here",
                    );
                } else {
                    modes.push(m.value.clone());
                }
            }
        }
        self.mode = match wanted {
            None => modes.first().cloned(),
            Some(w) if modes.iter().any(|m| m == w) => Some(w.to_string()),
            Some(w) => {
                let mut diag = Diag::error(
                    "ripcord::mode-unknown",
                    format!("--mode {w}: the runbook has no mode `{w}`"),
                );
                diag = match (
                    modes.is_empty(),
                    suggest(w, modes.iter().map(String::as_str)),
                ) {
                    (true, _) => diag.help("this runbook declares no `modes:`"),
                    (false, Some(s)) => diag.help(format!("did you mean `{s}`?")),
                    (false, None) => diag.help(format!("its modes: {}", modes.join(", "))),
                };
                self.diags.push(diag);
                None
            }
        };
        let mut cleanup = Vec::new();
        for m in runbook.cleanup_modes.iter().flat_map(|c| &c.value) {
            if modes.contains(&m.value) {
                cleanup.push(m.value.clone());
            } else {
                let mut diag = Diag::error(
                    "ripcord::modes",
                    format!(
                        "`cleanup_modes:` names `{}`, which is not one of `modes:`",
                        m.value
                    ),
                )
                .label(Span::of(m), "not a mode of this runbook");
                if let Some(s) = suggest(&m.value, modes.iter().map(String::as_str)) {
                    diag = diag.help(format!("did you mean `{s}`?"));
                }
                self.diags.push(diag);
            }
        }
        // A test run's rollback is its cleanup, unless the runbook says otherwise.
        if runbook.cleanup_modes.is_none() && modes.iter().any(|m| m == "test") {
            cleanup.push("test".to_string());
        }
        self.cleanup_modes = cleanup;
        self.modes = modes;
        let mut locks: Vec<String> = Vec::new();
        for l in runbook.locks.iter().flat_map(|l| &l.value) {
            if !crate::state::Scope::is_resource_name(&l.value) {
                self.error(
                    "ripcord::locks",
                    format!("invalid lock scope `{}`", l.value),
                    Span::of(l),
                    "a scope is 1-200 of letters, digits and `._:/@-` (e.g. \"service:orders\")",
                );
            } else if !locks.contains(&l.value) {
                locks.push(l.value.clone());
            }
        }
        // One order for every runbook: two runs naming the same scopes in another order take
        // them alike (and the first to arrive gets them all).
        locks.sort();
        self.locks = locks;
    }
}

/// For a new run (real or a pre-flight): an input without a value (none given, no `env:`
/// variable set, no default) that a step of this mode uses stops the run before anything
/// starts, rather than failing that step half-way (an unset token, a forgotten
/// `--input-file`). Not counted: uses in an `undo:` (a rollback takes its values again), in
/// steps out of the run's mode (or `when: false`), and expressions that test for the value
/// themselves (`is defined`, `default(...)`). Resume and rollback do not ask: the steps that
/// remain may not need it.
pub fn refuse_valueless_inputs(plan: &Plan) -> Vec<Diag> {
    let valueless: HashSet<&str> = plan
        .inputs
        .iter()
        .filter(|i| i.value.is_none() && i.origin == crate::plan::InputOrigin::Missing)
        .map(|i| i.name.as_str())
        .collect();
    let mut diags = Vec::new();
    if valueless.is_empty() {
        return diags;
    }
    let mut told: HashSet<&str> = HashSet::new();
    for step in &plan.steps {
        if matches!(step.when, Some(Condition::Always(false))) {
            continue;
        }
        let mut exprs = Vec::new();
        if let Some(w) = &step.with {
            w.exprs(&mut exprs);
        }
        // A `when:` that tests for an input guards the whole step's use of it.
        let when = step.when.as_ref().and_then(Condition::expr);
        let guarded: HashSet<&str> = when
            .filter(|w| w.source.contains("is defined") || w.source.contains("default"))
            .map(|w| {
                w.refs
                    .iter()
                    .filter_map(|r| match r {
                        Ref::Input(n) => Some(n.as_str()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        exprs.extend(when);
        for e in exprs {
            if e.source.contains("is defined") || e.source.contains("default") {
                continue;
            }
            for r in &e.refs {
                let Ref::Input(name) = r else { continue };
                if guarded.contains(name.as_str()) {
                    continue;
                }
                let Some(name) = valueless.get(name.as_str()) else {
                    continue;
                };
                if !told.insert(name) {
                    continue;
                }
                let secret = plan.inputs.iter().any(|i| i.name == *name && i.secret);
                let file = plan.file_of(step);
                diags.push(
                    Diag::error(
                        "ripcord::input-missing",
                        format!("input `{name}` has no value, and step `{}` uses it", step.id),
                    )
                    .in_file(file)
                    .label(e.span, "used here")
                    .help(format!(
                        "give it with --input {name}=… or in an --input-file{}, or declare a default; nothing has started",
                        if secret { " (a secret: better its `env:` variable or `command:`)" } else { "" }
                    )),
                );
            }
        }
    }
    diags
}
