//! The compiler: a loaded [`Runbook`] becomes an immutable [`Plan`].
//!
//! In order: the header (version, name, rto, concurrency, pools); inputs and their values; each
//! step on its own (id, action, defaults, durations, retry, params against the action's schema,
//! every `${{ }}` expression); then across steps: ids unique, every `needs` and reference
//! resolves, `steps.X` references add edges, and the graph is acyclic (each cycle reported as
//! its whole circle); last, `for_each` expansion and the plan's DAG. All problems are collected
//! and reported together; expansion only runs on a graph without errors.

pub mod cycle;
pub mod expr;
pub mod inputs;
pub mod param;
pub mod params;
pub mod script;
pub mod types;

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

use expr::{Expr, Ref};
use inputs::ResolvedInput;
use param::{Condition, Param};

/// The default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 10;

/// Budgets of a compiled runbook, so that a small file cannot make `validate` take minutes or
/// gigabytes: steps after modules are inlined and `for_each` expanded, dependency edges between
/// them, and how deep includes nest.
pub const MAX_STEPS: usize = 100_000;
pub const MAX_EDGES: usize = 1_000_000;
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// The timeout of a step that sets none (and has no `defaults.timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Names `run.X` may use in expressions.
pub const RUN_FIELDS: &[&str] = &["id", "dry_run", "name", "mode"];
/// Jinja globals an expression may call without declaring them.
const JINJA_GLOBALS: &[&str] = &["range", "dict", "namespace", "debug"];

pub struct CompileOptions<'a> {
    /// `--input key=value` pairs, in command-line order (the last one wins).
    pub inputs: &'a [(String, String)],
    /// Whether a required input without a value is an error (plan, run) or stays unknown
    /// (validate).
    pub require_inputs: bool,
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
    };
    let mut source = source;
    let runbook = &mut source.runbook;
    let header = cx.header(runbook);
    let pools = cx.pools(runbook);
    let inputs = inputs::resolve(
        runbook,
        &cx.file,
        options.inputs,
        options.require_inputs,
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
    if cx.diags.iter().any(Diag::is_error) {
        return Err(cx.diags);
    }
    let mut plan = plan;
    plan.description = runbook.description.clone();
    plan.rollback = runbook.rollback.unwrap_or_default();
    plan.finish();
    Ok(Compiled {
        plan,
        warnings: cx.diags,
    })
}

/// The closest candidate to `word` within a small edit distance, else the only candidate that
/// `word` (3 characters or more) is the start of: `prev` -> `previous`.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let limit = (word.len() / 3).max(2);
    let close = candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c);
    close.or_else(|| {
        let mut prefixed = candidates
            .iter()
            .filter(|c| word.len() >= 3 && c.starts_with(word));
        match (prefixed.next(), prefixed.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}

/// Whether `s` is a valid step, runbook or pool name: `[a-z0-9][a-z0-9_-]*`.
pub fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

struct Header {
    name: String,
    rto: Option<Duration>,
    concurrency: usize,
}

/// A declared step after the per-step checks, before expansion.
#[derive(Clone)]
struct Decl {
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

    fn duration(&mut self, text: &Spanned<String>, what: &str) -> Option<Duration> {
        match duration::parse(&text.value) {
            Ok(d) => Some(d),
            Err(msg) => {
                self.error(
                    "ripcord::duration",
                    format!("invalid {what}: {msg}"),
                    Span::of(text),
                    "not a duration",
                );
                None
            }
        }
    }

    fn header(&mut self, runbook: &Runbook) -> Header {
        if runbook.version.value != 1 {
            self.push(
                Diag::error(
                    "ripcord::version",
                    format!("unsupported format version {}", runbook.version.value),
                )
                .label(Span::of(&runbook.version), "only version 1 exists")
                .help("write `version: 1`"),
            );
        }
        let name = &runbook.name;
        if !is_name(&name.value) {
            self.error(
                "ripcord::name",
                format!("invalid runbook name `{}`", name.value),
                Span::of(name),
                "names are [a-z0-9][a-z0-9_-]*",
            );
        }
        let rto = runbook.rto.as_ref().and_then(|r| self.duration(r, "rto"));
        let concurrency = match &runbook.concurrency {
            Some(c) if c.value == 0 => {
                self.error(
                    "ripcord::concurrency",
                    "concurrency must be at least 1",
                    Span::of(c),
                    "0 would never start a step",
                );
                DEFAULT_CONCURRENCY
            }
            Some(c) => c.value as usize,
            None => DEFAULT_CONCURRENCY,
        };
        Header {
            name: name.value.clone(),
            rto,
            concurrency,
        }
    }

    /// The pools `runbook` declares, each also added to the plan's pools unless one of that
    /// name exists (declared by the runbook, or a module included earlier).
    fn pools(&mut self, runbook: &Runbook) -> Vec<Pool> {
        let mut pools = Vec::new();
        for (pool, size) in runbook.pools.iter().flat_map(|p| p.iter()) {
            if !is_name(&pool.value) {
                self.error(
                    "ripcord::pool-name",
                    format!("invalid pool name `{}`", pool.value),
                    Span::of(pool),
                    "names are [a-z0-9][a-z0-9_-]*",
                );
            }
            if size.value == 0 {
                self.error(
                    "ripcord::pool-size",
                    format!("pool `{}` has size 0", pool.value),
                    Span::of(size),
                    "a pool needs at least 1 slot",
                );
            }
            let declared = Pool {
                name: pool.value.clone(),
                size: size.value.max(1) as usize,
            };
            if !self.pools.iter().any(|p| p.name == declared.name) {
                self.pools.push(declared.clone());
            }
            pools.push(declared);
        }
        pools
    }

    /// The checks of one step that need nothing but the step, its defaults and the pools.
    fn step(
        &mut self,
        step: &Step,
        defaults: Option<&crate::runbook::StepDefaults>,
        pools: &[Pool],
    ) -> Decl {
        let id_span = Span::of(&step.id);
        if !is_name(&step.id.value) {
            self.error(
                "ripcord::step-id",
                format!("invalid step id `{}`", step.id.value),
                id_span,
                "ids are [a-z0-9][a-z0-9_-]*",
            );
        }
        let (action, spec) = self.action(step, id_span);
        let d = defaults;
        let file = self.file.clone();
        let text: &str = file.inner();

        let mut expr_errors = Vec::new();
        let with = step
            .with
            .as_ref()
            .map(|w| Param::compile(w, text, &mut expr_errors));
        if let Some(spec) = &spec {
            for p in params::check(spec, step.with.as_ref(), id_span) {
                let mut diag = Diag::error(
                    "ripcord::param",
                    format!("{} (step `{}`, {})", p.message, step.id.value, spec.name()),
                )
                .label(p.span, "here");
                if let Some(help) = p.help {
                    diag = diag.help(help);
                }
                self.push(diag);
            }
        }
        let when = step
            .when
            .as_ref()
            .or(d.and_then(|d| d.when.as_ref()))
            .and_then(|w| {
                Condition::compile(w, text)
                    .map_err(|e| expr_errors.push(e))
                    .ok()
            });
        let for_each = step
            .for_each
            .as_ref()
            .and_then(|v| self.for_each(v, &mut expr_errors));
        let undo = step.undo.as_ref().and_then(|u| {
            let (action, undo_spec) = self.action_ref(&u.uses)?;
            let with = u
                .with
                .as_ref()
                .map(|w| Param::compile(w, text, &mut expr_errors));
            if let Some(spec) = undo_spec {
                for p in params::check(&spec, u.with.as_ref(), Span::of(&u.uses)) {
                    self.push(
                        Diag::error(
                            "ripcord::param",
                            format!("{} (undo of `{}`)", p.message, step.id.value),
                        )
                        .label(p.span, "here"),
                    );
                }
            }
            let when = u.when.as_ref().and_then(|w| {
                Condition::compile(w, text)
                    .map_err(|e| expr_errors.push(e))
                    .ok()
            });
            Some(UndoSpec {
                action,
                with,
                when,
                // Filled in below, once the step's own are known.
                retry: self.retry(None),
                timeout: DEFAULT_TIMEOUT,
            })
        });
        for e in expr_errors {
            self.error("ripcord::expression", e.message, e.span, "here");
        }

        let timeout = step
            .timeout
            .as_ref()
            .or(d.and_then(|d| d.timeout.as_ref()))
            .and_then(|t| {
                let v = self.duration(t, "timeout")?;
                if v.is_zero() {
                    self.error(
                        "ripcord::duration",
                        "timeout must be longer than 0",
                        Span::of(t),
                        "0",
                    );
                }
                Some(v)
            })
            .unwrap_or(DEFAULT_TIMEOUT);
        let retry = self.retry(step.retry.as_deref().or(d.and_then(|d| d.retry.as_ref())));
        let mut undo = undo;
        if let (Some(spec), Some(written)) = (&mut undo, &step.undo) {
            spec.retry = match &written.retry {
                Some(r) => self.retry(Some(r)),
                None => retry.clone(),
            };
            spec.timeout = match &written.timeout {
                Some(t) => self.duration(t, "timeout").unwrap_or(timeout),
                None => timeout,
            };
        }
        let sim = self.sim(step, d, spec.as_deref(), action.as_ref());
        // A dry-run simulates one attempt of the estimated duration, under the step's timeout.
        if sim.explicit && sim.duration >= timeout {
            self.diags.push(
                Diag::warning(
                    "ripcord::timeout-below-estimate",
                    format!(
                        "step `{}` is expected to take {} but times out after {}",
                        step.id.value,
                        duration::format(sim.duration),
                        duration::format(timeout)
                    ),
                )
                .in_file(&self.file)
                .label(id_span, "this step")
                .help("raise its `timeout:` (or lower `sim.duration` if the estimate is wrong)"),
            );
        }
        let pool = step
            .pool
            .as_ref()
            .or(d.and_then(|d| d.pool.as_ref()))
            .and_then(|p| {
                let found = pools.iter().position(|x| x.name == p.value);
                if found.is_none() {
                    let names: Vec<&str> = pools.iter().map(|x| x.name.as_str()).collect();
                    let mut diag = Diag::error(
                        "ripcord::pool-unknown",
                        format!("unknown pool `{}`", p.value),
                    )
                    .label(Span::of(p), "not declared under `pools:`");
                    diag = match suggest(&p.value, names.iter().copied()) {
                        Some(s) => diag.help(format!("did you mean `{s}`?")),
                        None => diag.help(format!("declare it: `pools: {{ {}: 4 }}`", p.value)),
                    };
                    self.push(diag);
                }
                // The plan's pool of that name (a runbook's size wins over its module's).
                found.and_then(|_| self.pools.iter().position(|x| x.name == p.value))
            });
        let on_failure = step
            .on_failure
            .as_ref()
            .or(d.and_then(|d| d.on_failure.as_ref()))
            .map(|o| o.value)
            .unwrap_or_default();
        let needs = needs_of(step);
        Decl {
            id: step.id.value.clone(),
            span: id_span,
            name: step.name.clone(),
            action,
            spec,
            with,
            when,
            for_each,
            undo,
            retry,
            timeout,
            sim,
            idempotent: step
                .idempotent
                .or(d.and_then(|d| d.idempotent))
                .unwrap_or(false),
            irreversible: step.irreversible.unwrap_or(false),
            pool,
            on_failure,
            needs,
            deps: Vec::new(),
            file,
            include: None,
            group: None,
        }
    }

    fn action(
        &mut self,
        step: &Step,
        id_span: Span,
    ) -> (Option<ActionRef>, Option<Arc<ActionSpec>>) {
        match (&step.uses, &step.include) {
            (Some(_), Some(include)) => {
                self.error(
                    "ripcord::uses-and-include",
                    format!("step `{}` has both `uses` and `include`", step.id.value),
                    Span::of(include),
                    "a step runs one action or includes one module",
                );
                (None, None)
            }
            // Include steps are compiled by `include_step`.
            (None, Some(_)) => (None, None),
            (None, None) => {
                self.push(
                    Diag::error(
                        "ripcord::no-action",
                        format!("step `{}` has no `uses:`", step.id.value),
                    )
                    .label(id_span, "this step does nothing")
                    .help(
                        "add `uses: provider.action` (e.g. `shell.run`) or `include: module.yaml`",
                    ),
                );
                (None, None)
            }
            (Some(uses), None) => match self.action_ref(uses) {
                Some((action, spec)) => (Some(action), spec),
                None => (None, None),
            },
        }
    }

    /// Parses `provider.action` and looks it up: a built-in provider, or a plugin that must
    /// have the action. A plugin that cannot be found is a warning (once): its params and outputs
    /// go unchecked, and a real run will refuse to start.
    fn action_ref(
        &mut self,
        uses: &Spanned<String>,
    ) -> Option<(ActionRef, Option<Arc<ActionSpec>>)> {
        let span = Span::of(uses);
        let Some((provider, action)) = uses.value.split_once('.').filter(|(p, a)| {
            is_name(p) && !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        }) else {
            self.push(
                Diag::error(
                    "ripcord::uses",
                    format!("`{}` is not `provider.action`", uses.value),
                )
                .label(span, "expected e.g. `shell.run` or `postgres.promote`"),
            );
            return None;
        };
        let builtin = crate::provider::catalog::is_builtin_provider(provider);
        let spec = match self.providers.lookup(provider, action) {
            Lookup::Found(spec) => Some(spec),
            Lookup::NoAction(actions) => {
                let mut diag = Diag::error(
                    "ripcord::unknown-action",
                    format!("provider `{provider}` has no action `{action}`"),
                )
                .label(span, "unknown action");
                diag = match suggest(action, actions.iter().map(String::as_str)) {
                    Some(s) => diag.help(format!("did you mean `{provider}.{s}`?")),
                    None => diag.help(format!("`{provider}` has: {}", actions.join(", "))),
                };
                self.push(diag);
                return None;
            }
            Lookup::NoPlugin(why) => {
                if self.missing_plugins.insert(provider.to_string()) {
                    self.push(
                        Diag::warning("ripcord::plugin-missing", format!("provider `{provider}` is not available: {why}"))
                            .label(span, "its params and outputs are not checked")
                            .help(format!("install `ripcord-plugin-{provider}` or pass --plugin-dir; dry-runs work without it")),
                    );
                }
                None
            }
        };
        let action = ActionRef {
            provider: provider.to_string(),
            action: action.to_string(),
            builtin,
        };
        Some((action, spec))
    }

    fn for_each(&mut self, v: &Value, errors: &mut Vec<expr::ExprError>) -> Option<ForEach> {
        match &v.kind {
            ValueKind::Seq(items) => {
                if let Some(bad) = items
                    .iter()
                    .find(|i| i.as_str().is_some_and(|s| s.contains("${{")))
                {
                    self.error(
                        "ripcord::for-each",
                        "items of a literal for_each list cannot be expressions",
                        bad.span,
                        "expression inside the list",
                    );
                    return None;
                }
                Some(ForEach::Items(items.iter().map(Value::to_json).collect()))
            }
            ValueKind::Str(s) => match expr::parse_template(s, v.span, self.file.inner()) {
                Ok(t) => match t.whole_expr() {
                    Some(e) => Some(ForEach::Expr(e.clone())),
                    None => {
                        self.error(
                            "ripcord::for-each",
                            "for_each must be a list or one expression giving a list",
                            v.span,
                            "e.g. `for_each: \"${{ inputs.vms }}\"`",
                        );
                        None
                    }
                },
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            _ => {
                self.error(
                    "ripcord::for-each",
                    format!("for_each must be a list, not a {}", v.type_name()),
                    v.span,
                    "expected a list",
                );
                None
            }
        }
    }

    fn retry(&mut self, retry: Option<&crate::runbook::Retry>) -> RetryPolicy {
        let mut policy = RetryPolicy {
            attempts: 1,
            delay: Duration::from_secs(1),
            backoff: 1.0,
            max_delay: None,
        };
        let Some(r) = retry else {
            return policy;
        };
        if let Some(a) = &r.attempts {
            if a.value == 0 {
                self.error(
                    "ripcord::retry",
                    "retry.attempts must be at least 1",
                    Span::of(a),
                    "counts the first attempt too",
                );
            }
            policy.attempts = a.value.max(1);
        }
        if let Some(d) = r
            .delay
            .as_ref()
            .and_then(|d| self.duration(d, "retry.delay"))
        {
            policy.delay = d;
        }
        if let Some(b) = &r.backoff {
            if !(b.value.is_finite() && b.value >= 1.0) {
                self.error(
                    "ripcord::retry",
                    "retry.backoff must be a number of at least 1.0",
                    Span::of(b),
                    "the delay is multiplied by it",
                );
            } else {
                policy.backoff = b.value;
            }
        }
        policy.max_delay = r
            .max_delay
            .as_ref()
            .and_then(|d| self.duration(d, "retry.max_delay"));
        policy
    }

    fn sim(
        &mut self,
        step: &Step,
        defaults: Option<&crate::runbook::StepDefaults>,
        spec: Option<&ActionSpec>,
        action: Option<&ActionRef>,
    ) -> SimHints {
        let sim = step.sim.as_ref();
        let fallback = defaults.and_then(|d| d.sim.as_ref());
        // Precedence: the step's sim.duration, a sleep's own literal duration, defaults.sim,
        // the action's default estimate.
        let own = sim
            .and_then(|s| s.duration.as_ref())
            .and_then(|d| self.duration(d, "sim.duration"));
        let sleep = spec.filter(|s| s.provider == "sleep").and_then(|_| {
            let text = step.with.as_ref()?.get("duration")?.as_str()?;
            duration::parse(text).ok()
        });
        let inherited = fallback
            .and_then(|s| s.duration.as_ref())
            .and_then(|d| self.duration(d, "sim.duration"));
        let action_default = match (spec, action) {
            (Some(spec), _) => spec.sim_default,
            (None, Some(_)) => EXTERNAL_SIM_DEFAULT,
            (None, None) => Duration::ZERO,
        };
        let explicit = own.or(sleep).or(inherited);
        let outputs = sim.and_then(|s| s.outputs.as_ref()).and_then(|o| {
            if matches!(o.kind, ValueKind::Map(_)) {
                Some(o.to_json())
            } else {
                self.error(
                    "ripcord::sim",
                    format!("sim.outputs must be a map, not a {}", o.type_name()),
                    o.span,
                    "expected KEY: VALUE pairs",
                );
                None
            }
        });
        let jitter = sim
            .and_then(|s| s.jitter.as_ref())
            .or(fallback.and_then(|s| s.jitter.as_ref()))
            .and_then(|j| match parse_percent(&j.value) {
                Some(f) => Some(f),
                None => {
                    self.error(
                        "ripcord::sim",
                        format!(
                            "sim.jitter `{}` is not a percentage from 0% to 100%",
                            j.value
                        ),
                        Span::of(j),
                        "like 20%",
                    );
                    None
                }
            })
            .unwrap_or(0.0);
        SimHints {
            duration: explicit.unwrap_or(action_default),
            explicit: explicit.is_some(),
            outputs,
            jitter,
            fail: sim
                .and_then(|s| s.fail)
                .or(fallback.and_then(|s| s.fail))
                .unwrap_or(false),
        }
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

    /// An `include:` step: the module compiled (once per file), `with` checked against its
    /// inputs. The step stays one node until [`Compiler::inline`] replaces it.
    fn include_step(&mut self, step: &Step, include: &Spanned<String>) -> Decl {
        let id_span = Span::of(&step.id);
        self.check_id(&step.id);
        let ignored = [
            ("retry", step.retry.is_some()),
            ("timeout", step.timeout.is_some()),
            ("sim", step.sim.is_some()),
            ("idempotent", step.idempotent.is_some()),
            ("irreversible", step.irreversible.is_some()),
            ("undo", step.undo.is_some()),
            ("for_each", step.for_each.is_some()),
            ("pool", step.pool.is_some()),
            ("on_failure", step.on_failure.is_some()),
        ];
        for (key, _) in ignored.iter().filter(|(_, set)| *set) {
            self.push(
                Diag::error(
                    "ripcord::include-field",
                    format!(
                        "`{key}` does not apply to an include step (`{}`)",
                        step.id.value
                    ),
                )
                .label(id_span, "this step includes a module")
                .help(format!(
                    "set `{key}` on the module's steps, or make it one of the module's inputs"
                )),
            );
        }
        let module = self.load_module(include);
        let file = self.file.clone();
        let text: &str = file.inner();
        let mut expr_errors = Vec::new();
        let with = step
            .with
            .as_ref()
            .map(|w| Param::compile(w, text, &mut expr_errors));
        let when = step.when.as_ref().and_then(|w| {
            Condition::compile(w, text)
                .map_err(|e| expr_errors.push(e))
                .ok()
        });
        for e in expr_errors {
            self.error("ripcord::expression", e.message, e.span, "here");
        }
        if let Some(module) = &module {
            self.check_module_inputs(step, include, module);
        }
        Decl {
            id: step.id.value.clone(),
            span: id_span,
            name: step.name.clone(),
            action: None,
            spec: None,
            with,
            when,
            for_each: None,
            undo: None,
            retry: self.retry(None),
            timeout: DEFAULT_TIMEOUT,
            sim: SimHints {
                duration: Duration::ZERO,
                explicit: false,
                outputs: None,
                fail: false,
                jitter: 0.0,
            },
            idempotent: false,
            irreversible: false,
            pool: None,
            on_failure: OnFailure::default(),
            needs: needs_of(step),
            deps: Vec::new(),
            file,
            include: Some(Inclusion { module }),
            group: None,
        }
    }

    fn check_id(&mut self, id: &Spanned<String>) {
        if !is_name(&id.value) {
            self.error(
                "ripcord::step-id",
                format!("invalid step id `{}`", id.value),
                Span::of(id),
                "ids are [a-z0-9][a-z0-9_-]*",
            );
        }
    }

    /// Loads and compiles the module `include` names (relative to the including file), once
    /// per file. Its diagnostics point into it, with a note at the including line.
    fn load_module(&mut self, include: &Spanned<String>) -> Option<Rc<Module>> {
        let span = Span::of(include);
        let dir = Path::new(self.file.name())
            .parent()
            .unwrap_or(Path::new(""));
        let path = dir.join(&include.value);
        let display = normalize(&path);
        // A module is a regular file: a FIFO or device (`/dev/stdin`) would block or never end.
        let regular = std::fs::metadata(&path).and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        });
        let key = match regular.and_then(|()| std::fs::canonicalize(&path)) {
            Ok(key) => key,
            Err(e) => {
                self.push(
                    Diag::error(
                        "ripcord::include-missing",
                        format!("cannot include {display}: {e}"),
                    )
                    .label(span, "included here")
                    .help("the path is relative to the file that includes it"),
                );
                return None;
            }
        };
        if let Some(at) = self.chain.iter().position(|(k, _)| *k == key) {
            let mut names: Vec<&str> = self.chain[at..].iter().map(|(_, d)| d.as_str()).collect();
            names.push(&display);
            let message = format!("include cycle: {}", names.join(" -> "));
            self.push(
                Diag::error("ripcord::include-cycle", message)
                    .label(span, format!("includes {display} again"))
                    .help("a module cannot include itself, directly or through other modules"),
            );
            return None;
        }
        if let Some(done) = self.modules.get(&key) {
            return done.clone();
        }
        if self.chain.len() >= MAX_INCLUDE_DEPTH {
            self.push(
                Diag::error(
                    "ripcord::include-depth",
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH} files"),
                )
                .label(span, format!("includes {display}"))
                .help("flatten the modules: a standard step needs a module, not a tower of them"),
            );
            return None;
        }
        let source = match load_file_as(&path, &display) {
            Ok(source) => source,
            Err(diag) => {
                let diag = (*diag).related(self.included_from(span));
                self.diags.push(diag);
                return None;
            }
        };
        let includer = std::mem::replace(&mut self.file, source.file.clone());
        self.chain.push((key.clone(), display.clone()));
        self.sources.push(source.file.clone());
        let (before, errors_before) = (self.diags.len(), self.error_count());
        let mut source = source;
        let runbook = &mut source.runbook;
        // A module is a runbook: the same checks, though only its steps, inputs, outputs and
        // pools matter once included (its rto and concurrency are the including runbook's).
        self.header(runbook);
        let pools = self.pools(runbook);
        let inputs = inputs::resolve(runbook, &self.file, &[], false, &mut self.diags);
        let body = self.body(runbook, &inputs, &pools);
        self.chain.pop();
        self.file = includer;
        let note = self.included_from(span);
        for d in &mut self.diags[before..] {
            d.related.push(note.clone());
        }
        let module = (self.error_count() == errors_before).then(|| {
            Rc::new(Module {
                display,
                inputs,
                body,
            })
        });
        self.modules.insert(key, module.clone());
        module
    }

    fn included_from(&self, span: Span) -> Diag {
        Diag::note("ripcord::included-from", "included from here")
            .in_file(&self.file)
            .label(span, "the module is included here")
    }

    /// `with:` of an include against the module's inputs: each key declared, each required
    /// input given, literal values of the declared type.
    fn check_module_inputs(&mut self, step: &Step, include: &Spanned<String>, module: &Module) {
        let id = &step.id.value;
        let entries: &[(crate::runbook::Key, Value)] = match step.with.as_ref().map(|w| &w.kind) {
            None => &[],
            Some(ValueKind::Map(entries)) => entries,
            Some(_) => {
                let w = step.with.as_ref().map_or(Span::of(&step.id), |w| w.span);
                self.error(
                    "ripcord::module-input",
                    format!("`with` of include `{id}` must be a map of the module's inputs"),
                    w,
                    "not a map",
                );
                return;
            }
        };
        let names: Vec<&str> = module.inputs.iter().map(|i| i.name.as_str()).collect();
        for (key, value) in entries {
            let Some(input) = module.inputs.iter().find(|i| i.name == key.name) else {
                let mut diag = Diag::error(
                    "ripcord::module-input-unknown",
                    format!("module {} has no input `{}`", module.display, key.name),
                )
                .label(key.span, "not an input of the module");
                diag = match suggest(&key.name, names.iter().copied()) {
                    Some(s) => diag.help(format!("did you mean `{s}`?")),
                    None if names.is_empty() => diag.help("the module declares no inputs"),
                    None => diag.help(format!("its inputs: {}", names.join(", "))),
                };
                self.push(diag);
                continue;
            };
            let mut templated = false;
            value.for_each_str(&mut |s, _| templated |= s.contains("${{"));
            if !templated && let Err(msg) = inputs::check_value(value, input.ty) {
                self.error(
                    "ripcord::module-input-type",
                    format!("input `{}` of module {} {msg}", key.name, module.display),
                    value.span,
                    format!("expected {}", input.ty.as_str()),
                );
            }
        }
        for input in &module.inputs {
            let given = entries.iter().any(|(k, _)| k.name == input.name);
            if input.required && input.value.is_none() && !given {
                let mut diag = Diag::error(
                    "ripcord::module-input-missing",
                    format!(
                        "include `{id}` does not give the module's required input `{}`",
                        input.name
                    ),
                )
                .label(
                    Span::of(include),
                    format!("{} needs `{}`", module.display, input.name),
                )
                .help(format!("add it: `with: {{ {}: ... }}`", input.name));
                if let Some(file) = module.body.decls.first().map(|d| d.file.clone()) {
                    diag = diag.related(
                        Diag::note("ripcord::module-input-missing", "declared required here")
                            .in_file(&file)
                            .label(input.span, "required"),
                    );
                }
                self.push(diag);
            }
        }
    }

    /// Replaces each include step by its module's steps, ids prefixed `ID.`: the module's
    /// `inputs.NAME` become the include's `with` values (else the input's default), its
    /// `steps.X` become `steps.ID.X`, and the includer's `steps.ID.outputs.NAME` become the
    /// module's output expressions. The module's first steps wait for what the include waits
    /// for; what waits for the include waits for the module's last steps (so for all of it).
    /// Steps are visited in dependency order, so an include's outputs are known before any
    /// step that reads them.
    fn inline(&mut self, decls: Vec<Decl>, outputs: Vec<(String, expr::Template)>) -> Body {
        if decls.iter().all(|d| d.include.is_none()) {
            return Body {
                decls,
                outputs,
                groups: Vec::new(),
            };
        }
        let n = decls.len();
        let order = dependency_order(&decls);
        // Per declared step: what it became.
        let mut done: Vec<Vec<Decl>> = (0..n).map(|_| Vec::new()).collect();
        let mut module_outputs: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        // For an include: the include's own deps (declared indices).
        let mut outer_deps: Vec<Option<Vec<(usize, Span)>>> = vec![None; n];
        // Steps once inlined: the budget is checked before each module is copied in, so that
        // modules including modules (each step count multiplying) stop at MAX_STEPS, not at
        // the memory's end.
        let mut total = decls.iter().filter(|d| d.include.is_none()).count();
        let mut decls: Vec<Option<Decl>> = decls.into_iter().map(Some).collect();
        for i in order {
            let Some(mut d) = decls[i].take() else {
                continue;
            };
            // The includer's reads of module outputs.
            self.rewrite_decl(&mut d, &mut reads_of(&module_outputs));
            // (An include whose module failed never gets here: its errors stop the compile.)
            let Some(Inclusion {
                module: Some(module),
            }) = d.include.take()
            else {
                done[i].push(d);
                continue;
            };
            total += module.body.decls.len();
            if total > MAX_STEPS {
                self.push(
                    Diag::error(
                        "ripcord::too-many-steps",
                        format!(
                            "including {} here makes more than {MAX_STEPS} steps",
                            module.display
                        ),
                    )
                    .label(d.span, format!("{} steps", module.body.decls.len()))
                    .help("each include copies the module's steps, and a module that includes others copies theirs: split the runbook"),
                );
                return Body {
                    decls: Vec::new(),
                    outputs: Vec::new(),
                    groups,
                };
            }
            let g = groups.len();
            groups.push(Group {
                id: d.id.clone(),
                name: d.name.clone(),
                file: module.display.clone(),
                parent: None,
            });
            groups.extend(module.body.groups.iter().map(|inner| Group {
                id: format!("{}.{}", d.id, inner.id),
                name: inner.name.clone(),
                file: inner.file.clone(),
                parent: Some(inner.parent.map_or(g, |p| p + g + 1)),
            }));
            let (steps, exposed) = self.inline_one(&d, &module, g);
            done[i] = steps;
            module_outputs.insert(d.id.clone(), exposed);
            outer_deps[i] = Some(d.deps);
        }
        // Flat indices, in file order.
        let mut start = vec![0; n];
        let mut next = 0;
        for i in 0..n {
            start[i] = next;
            next += done[i].len();
        }
        // What waiting for declared step `i` means: its module's last steps, or itself.
        let sinks: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                if outer_deps[i].is_none() {
                    return vec![start[i]];
                }
                let waited: HashSet<usize> = done[i]
                    .iter()
                    .flat_map(|m| m.deps.iter().map(|&(j, _)| j))
                    .collect();
                (0..done[i].len())
                    .filter(|k| !waited.contains(k))
                    .map(|k| start[i] + k)
                    .collect()
            })
            .collect();
        let mut flat = Vec::with_capacity(next);
        for (i, steps) in done.into_iter().enumerate() {
            for mut d in steps {
                let (local, declared) = match &outer_deps[i] {
                    // A module's step: its own deps are module-local; its first steps also
                    // wait for the include's.
                    Some(outer) => (
                        d.deps.iter().map(|&(j, s)| (start[i] + j, s)).collect(),
                        if d.deps.is_empty() {
                            outer.clone()
                        } else {
                            Vec::new()
                        },
                    ),
                    None => (Vec::new(), std::mem::take(&mut d.deps)),
                };
                let mut deps: Vec<(usize, Span)> = local;
                for (j, span) in declared {
                    deps.extend(sinks[j].iter().map(|&k| (k, span)));
                }
                d.deps = deps;
                flat.push(d);
            }
        }
        let mut exposed = Vec::new();
        for (name, template) in outputs {
            let mut reads = reads_of(&module_outputs);
            match template.map(&mut |e| expr::rewrite(e, &mut reads)) {
                Ok(t) => exposed.push((name, t)),
                Err(msg) => {
                    let at = template.exprs().next().map_or(Span::default(), |e| e.span);
                    self.error("ripcord::expression", msg, at, "here");
                }
            }
        }
        Body {
            decls: flat,
            outputs: exposed,
            groups,
        }
    }

    /// The steps of `module` as include step `d` inlines them (group `g`), and its outputs as
    /// expressions over them.
    fn inline_one(
        &mut self,
        d: &Decl,
        module: &Module,
        g: usize,
    ) -> (Vec<Decl>, HashMap<String, String>) {
        let given: HashMap<&str, &Param> = match &d.with {
            Some(Param::Map(entries)) => entries.iter().map(|(k, p)| (k.as_str(), p)).collect(),
            _ => HashMap::new(),
        };
        let values: HashMap<&str, String> = module
            .inputs
            .iter()
            .map(|input| {
                let source = match (given.get(input.name.as_str()), &input.value) {
                    (Some(p), _) => p.source(),
                    (None, Some(v)) => expr::json_source(v),
                    (None, None) => "none".into(),
                };
                (input.name.as_str(), source)
            })
            .collect();
        let prefix = &d.id;
        let mut into_includer = |t: &expr::Token| match t {
            expr::Token::Input(name) => match values.get(*name) {
                Some(source) => expr::Rewrite::Replace(source.clone()),
                None => expr::Rewrite::Keep,
            },
            expr::Token::Step { id, .. } => expr::Rewrite::Rename(format!("{prefix}.{id}")),
        };
        let mut steps = Vec::with_capacity(module.body.decls.len());
        for inner in &module.body.decls {
            let mut m = inner.clone();
            m.id = format!("{prefix}.{}", inner.id);
            m.group = Some(inner.group.map_or(g, |x| x + g + 1));
            self.rewrite_decl(&mut m, &mut into_includer);
            if let Some(ForEach::Expr(e)) = &m.for_each
                && e.refs
                    .iter()
                    .any(|r| matches!(r, Ref::Step { .. } | Ref::Run(_)))
            {
                self.push(
                    Diag::error(
                        "ripcord::for-each",
                        format!("`for_each` of `{}` must be known before the run, but an input of the module it reads comes from a step", m.id),
                    )
                    .label(d.span, "this include's `with` feeds it")
                    .help("give the module a list of inputs and literals"),
                );
            }
            if let Some(when) = &d.when {
                m.when = self.both(when, m.when.take());
            }
            steps.push(m);
        }
        let mut exposed = HashMap::new();
        for (name, template) in &module.body.outputs {
            match template.map(&mut |e| expr::rewrite(e, &mut into_includer)) {
                Ok(t) => {
                    exposed.insert(name.clone(), t.source());
                }
                Err(msg) => self.error("ripcord::expression", msg, d.span, "here"),
            }
        }
        (steps, exposed)
    }

    /// An include's `when` over one of its module's steps' own.
    fn both(&mut self, outer: &Condition, own: Option<Condition>) -> Option<Condition> {
        match (outer, own) {
            (Condition::Always(false), _) | (_, Some(Condition::Always(false))) => {
                Some(Condition::Always(false))
            }
            (Condition::Always(true), own) => own,
            (outer, None | Some(Condition::Always(true))) => Some(outer.clone()),
            (Condition::Expr(a), Some(Condition::Expr(b))) => match expr::and(a, &b) {
                Ok(e) => Some(Condition::Expr(e)),
                Err(msg) => {
                    self.error("ripcord::expression", msg, b.span, "here");
                    None
                }
            },
        }
    }

    /// Rewrites every expression of `d` (with, when, for_each, undo.with).
    fn rewrite_decl(&mut self, d: &mut Decl, f: &mut dyn FnMut(&expr::Token) -> expr::Rewrite) {
        let mut failed = Vec::new();
        let mut map =
            |e: &Expr| expr::rewrite(e, f).inspect_err(|msg| failed.push((msg.clone(), e.span)));
        if let Some(w) = &d.with {
            d.with = w.map(&mut map).ok();
        }
        if let Some(Condition::Expr(e)) = &d.when {
            d.when = map(e).ok().map(Condition::Expr);
        }
        if let Some(ForEach::Expr(e)) = &d.for_each {
            d.for_each = map(e).ok().map(ForEach::Expr);
        }
        if let Some(u) = &mut d.undo {
            if let Some(w) = &u.with {
                u.with = w.map(&mut map).ok();
            }
            if let Some(Condition::Expr(e)) = &u.when {
                u.when = map(e).ok().map(Condition::Expr);
            }
        }
        for (msg, span) in failed {
            self.diags.push(
                Diag::error(
                    "ripcord::expression",
                    format!("cannot inline the expression {msg}"),
                )
                .in_file(&d.file)
                .label(span, "here"),
            );
        }
    }

    /// Step ids to indices; duplicates reported.
    fn index_ids(&mut self, decls: &[Decl]) -> HashMap<String, usize> {
        let mut ids: HashMap<String, usize> = HashMap::with_capacity(decls.len());
        for (i, d) in decls.iter().enumerate() {
            if let Some(&first) = ids.get(&d.id) {
                self.push(
                    Diag::error(
                        "ripcord::duplicate-id",
                        format!("duplicate step id `{}`", d.id),
                    )
                    .label(d.span, "declared again here")
                    .label(decls[first].span, "first declared here"),
                );
            } else {
                ids.insert(d.id.clone(), i);
            }
        }
        ids
    }

    /// Checks every `needs` and expression reference; fills `deps`.
    fn resolve_references(
        &mut self,
        decls: &mut [Decl],
        ids: &HashMap<String, usize>,
        inputs: &[ResolvedInput],
    ) {
        for i in 0..decls.len() {
            let mut deps: Vec<(usize, Span)> = Vec::new();
            for (need, span) in decls[i].needs.clone() {
                match ids.get(&need) {
                    Some(&j) => deps.push((j, span)),
                    None => self.unknown_step(&need, span, ids, "needs"),
                }
            }
            let d = &decls[i];
            let mut exprs: Vec<&Expr> = Vec::new();
            if let Some(w) = &d.with {
                w.exprs(&mut exprs);
            }
            if let Some(e) = d.when.as_ref().and_then(Condition::expr) {
                exprs.push(e);
            }
            let mut found = Vec::new();
            for e in exprs {
                for r in &e.refs {
                    found.push((r.clone(), e.span, Context::Step));
                }
            }
            if let Some(ForEach::Expr(e)) = &d.for_each {
                found.extend(e.refs.iter().map(|r| (r.clone(), e.span, Context::ForEach)));
            }
            let mut undo_exprs = Vec::new();
            if let Some(w) = d.undo.as_ref().and_then(|u| u.with.as_ref()) {
                w.exprs(&mut undo_exprs);
            }
            undo_exprs.extend(d.undo.as_ref().and_then(|u| u.when.as_ref()?.expr()));
            for e in undo_exprs {
                found.extend(e.refs.iter().map(|r| (r.clone(), e.span, Context::Undo)));
            }
            for (r, span, context) in found {
                if let Some(dep) = self.check_ref(&r, span, context, i, decls, ids, inputs) {
                    deps.push((dep, span));
                }
            }
            // One edge per pair; the first span explains it.
            let mut seen = HashSet::new();
            deps.retain(|(j, _)| seen.insert(*j));
            decls[i].deps = deps;
        }
    }

    /// A secret input in `shell.run`'s `argv` or `script` would be readable by every user in
    /// /proc/PID/cmdline: secrets go through `env:` or `stdin:`.
    fn check_secrets_stay_off_command_lines<'d>(
        &mut self,
        decls: impl Iterator<Item = &'d Decl>,
        inputs: &[ResolvedInput],
    ) {
        let secret = |name: &str| inputs.iter().any(|i| i.secret && i.name == name);
        for d in decls {
            // Each item names a step (`id[item]`), and step ids are printed everywhere.
            if let Some(ForEach::Expr(e)) = &d.for_each {
                for r in &e.refs {
                    if let Ref::Input(name) = r
                        && secret(name)
                    {
                        self.diags.push(
                            Diag::error(
                                "ripcord::secret-in-for-each",
                                format!("secret input `{name}` in `for_each` would name steps, and step ids are printed in every log, plan and report"),
                            )
                            .in_file(&d.file)
                            .label(e.span, "names the steps")
                            .help("iterate over something that is not secret (host names), and pass the secret to each step through `env:`"),
                        );
                    }
                }
            }
            for p in shell_params(d) {
                let Param::Map(entries) = p else { continue };
                for (key, value) in entries.iter().filter(|(k, _)| k == "argv" || k == "script") {
                    let mut exprs = Vec::new();
                    value.exprs(&mut exprs);
                    for e in exprs {
                        for r in &e.refs {
                            if let Ref::Input(name) = r
                                && secret(name)
                            {
                                self.diags.push(
                                    Diag::error(
                                        "ripcord::secret-in-argv",
                                        format!("secret input `{name}` in `{key}` would be visible to every user on the host"),
                                    )
                                    .in_file(&d.file)
                                    .label(e.span, "on the command line")
                                    .help(format!(
                                        "pass it through `env:` (e.g. `env: {{ TOKEN: \"${{{{ inputs.{name} }}}}\" }}` and use $TOKEN) or `stdin:`"
                                    )),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Each `${{ }}` in `shell.run`'s `script:` is quoted for where it stands (see
    /// [`script`]); where that cannot be known, the runbook is refused.
    fn check_script_quoting<'d>(&mut self, decls: impl Iterator<Item = &'d Decl>) {
        for d in decls {
            for p in shell_params(d) {
                let Param::Map(entries) = p else { continue };
                let Some((_, Param::Str(t))) = entries.iter().find(|(k, _)| k == "script") else {
                    continue;
                };
                let exprs = t.parts.iter().filter_map(|part| match part {
                    crate::compile::expr::Part::Expr(e) => Some(e),
                    crate::compile::expr::Part::Lit(_) => None,
                });
                for (e, q) in exprs.zip(script::quoting(&t.parts)) {
                    if let Err(why) = q {
                        self.diags.push(
                            Diag::error(
                                "ripcord::script-expression",
                                format!("`${{{{ {} }}}}` {why} in `script:` cannot be quoted safely", e.text),
                            )
                            .in_file(&d.file)
                            .label(e.span, "here")
                            .help(format!(
                                "pass the value through `env:` (e.g. `env: {{ VALUE: \"${{{{ {} }}}}\" }}`) and use \"$VALUE\" in the script",
                                e.text
                            )),
                        );
                    }
                }
            }
        }
    }

    /// Expressions over inputs, evaluated against values of the inputs' types (see [`types`]).
    fn check_expression_types<'d>(
        &mut self,
        decls: impl Iterator<Item = &'d Decl>,
        inputs: &[ResolvedInput],
    ) {
        let decls: Vec<&Decl> = decls.collect();
        // What a dry-run's steps give: a plain step's `sim.outputs`, by id.
        let sim_outputs: HashMap<String, serde_json::Map<String, Json>> = decls
            .iter()
            .filter(|d| d.for_each.is_none())
            .filter_map(|d| match &d.sim.outputs {
                Some(Json::Object(o)) => Some((d.id.clone(), o.clone())),
                _ => None,
            })
            .collect();
        for d in decls {
            let mut exprs: Vec<&Expr> = Vec::new();
            if let Some(w) = &d.with {
                w.exprs(&mut exprs);
            }
            exprs.extend(d.when.as_ref().and_then(|c| c.expr()));
            if let Some(ForEach::Expr(e)) = &d.for_each {
                exprs.push(e);
            }
            if let Some(u) = &d.undo {
                if let Some(w) = &u.with {
                    w.exprs(&mut exprs);
                }
                exprs.extend(u.when.as_ref().and_then(|c| c.expr()));
            }
            for problem in types::check(&exprs, inputs, &sim_outputs) {
                self.diags.push(
                    Diag::error(
                        "ripcord::expression-type",
                        format!(
                            "`${{{{ {} }}}}` fails with values of their types: {}",
                            problem.expr.text, problem.message
                        ),
                    )
                    .in_file(&d.file)
                    .label(problem.expr.span, "here")
                    .help("inputs keep their declared type, step outputs the type of their `sim.outputs`: convert with a filter (`inputs.port | string`), or declare the input with the type the expression needs"),
                );
            }
        }
    }

    /// `outputs:` (what a module exposes): each a template over inputs and step results.
    fn check_outputs(
        &mut self,
        runbook: &Runbook,
        decls: &[Decl],
        ids: &HashMap<String, usize>,
        inputs: &[ResolvedInput],
    ) -> Vec<(String, expr::Template)> {
        let mut compiled = Vec::new();
        for (name, value) in runbook.outputs.iter().flat_map(|o| o.iter()) {
            if !inputs::is_identifier(&name.value) {
                self.error(
                    "ripcord::output-name",
                    format!("invalid output name `{}`", name.value),
                    Span::of(name),
                    "output names are identifiers: [A-Za-z_][A-Za-z0-9_]*",
                );
            }
            match expr::parse_template(&value.value, Span::of(value), self.file.inner()) {
                Ok(template) => {
                    for e in template.exprs() {
                        for r in &e.refs {
                            // `me` is out of range: outputs belong to no step.
                            self.check_ref(
                                r,
                                e.span,
                                Context::Output,
                                usize::MAX,
                                decls,
                                ids,
                                inputs,
                            );
                        }
                    }
                    compiled.push((name.value.clone(), template));
                }
                Err(e) => self.error("ripcord::expression", e.message, e.span, "here"),
            }
        }
        compiled
    }

    fn unknown_step(&mut self, id: &str, span: Span, ids: &HashMap<String, usize>, what: &str) {
        let mut diag = Diag::error(
            "ripcord::unknown-step",
            format!("{what} refers to unknown step `{id}`"),
        )
        .label(span, "no step has this id");
        if let Some((module, _)) = id.split_once('.').filter(|(m, _)| ids.contains_key(*m)) {
            diag = diag.help(format!(
                "a module's steps are its own: wait for all of it with `needs: [{module}]`, or read its `outputs:`"
            ));
        } else if let Some(s) = suggest(id, ids.keys().map(String::as_str)) {
            diag = diag.help(format!("did you mean `{s}`?"));
        }
        self.push(diag);
    }

    /// Checks one reference; returns the step it makes this one wait for, if any.
    #[allow(clippy::too_many_arguments)]
    fn check_ref(
        &mut self,
        r: &Ref,
        span: Span,
        context: Context,
        me: usize,
        decls: &[Decl],
        ids: &HashMap<String, usize>,
        inputs: &[ResolvedInput],
    ) -> Option<usize> {
        const USABLE: &str = "expressions can use inputs.NAME, steps.ID.outputs.KEY, steps.ID.status, item (in for_each) and run.id, run.dry_run";
        match r {
            Ref::Input(name) => {
                if !inputs.iter().any(|i| &i.name == name) {
                    let mut diag =
                        Diag::error("ripcord::unknown-input", format!("unknown input `{name}`"))
                            .label(span, "referenced here");
                    diag = match suggest(name, inputs.iter().map(|i| i.name.as_str())) {
                        Some(s) => diag.help(format!("did you mean `inputs.{s}`?")),
                        None => diag.help("declare it under `inputs:`"),
                    };
                    self.push(diag);
                }
                None
            }
            Ref::Item if context == Context::Output => {
                self.error(
                    "ripcord::item-outside-for-each",
                    "`item` is only defined in a step with `for_each`",
                    span,
                    "outputs belong to no step",
                );
                None
            }
            Ref::Item => {
                if decls[me].for_each.is_none() {
                    self.push(
                        Diag::error(
                            "ripcord::item-outside-for-each",
                            "`item` is only defined in a step with `for_each`",
                        )
                        .label(span, "used here")
                        .help(format!("step `{}` has no for_each", decls[me].id)),
                    );
                } else if context == Context::ForEach {
                    self.error(
                        "ripcord::for-each",
                        "for_each cannot refer to `item`",
                        span,
                        "item is what for_each defines",
                    );
                }
                None
            }
            Ref::Run(field) => {
                if !RUN_FIELDS.contains(&field.as_str()) {
                    self.push(
                        Diag::error(
                            "ripcord::unknown-name",
                            format!("unknown run field `run.{field}`"),
                        )
                        .label(span, "here")
                        .help(format!("run has: {}", RUN_FIELDS.join(", "))),
                    );
                } else if context == Context::ForEach {
                    self.error("ripcord::for-each", "for_each must be known before the run: it can use inputs and literals only", span, "run fields are not");
                }
                None
            }
            Ref::Unknown(name) => {
                let head = name.split('.').next().unwrap_or(name);
                if !JINJA_GLOBALS.contains(&head) {
                    let diag = Diag::error(
                        "ripcord::unknown-name",
                        format!("unknown name `{head}` in expression"),
                    )
                    .label(span, "here")
                    .help(USABLE);
                    self.push(diag);
                }
                None
            }
            Ref::Step { id, path } => {
                let Some(&j) = ids.get(id) else {
                    self.unknown_step(id, span, ids, "expression");
                    return None;
                };
                if context == Context::ForEach {
                    self.push(
                        Diag::error("ripcord::for-each", "for_each must be known before the run: it cannot use step outputs")
                            .label(span, "refers to a step")
                            .help("for_each can use inputs and literals, as Terraform's for_each must be known at plan time"),
                    );
                    return None;
                }
                if let Some(inclusion) = &decls[j].include {
                    self.check_module_read(id, path, inclusion, span);
                    return matches!(context, Context::Step).then_some(j);
                }
                if j == me && context != Context::Undo {
                    self.push(
                        Diag::error(
                            "ripcord::self-reference",
                            format!("step `{id}` refers to itself"),
                        )
                        .label(span, "a step cannot wait for its own result")
                        .help("only `undo.with` may read the step's own outputs"),
                    );
                    return None;
                }
                match path.first().map(String::as_str) {
                    None | Some("status") => {}
                    Some("outputs") => {
                        if let Some(key) = path.get(1) {
                            self.check_output_key(&decls[j], key, span);
                        }
                    }
                    Some(other) => self.push(
                        Diag::error(
                            "ripcord::step-field",
                            format!("steps.{id}.{other} does not exist"),
                        )
                        .label(span, "here")
                        .help(format!(
                            "a step exposes `steps.{id}.outputs.KEY` and `steps.{id}.status`"
                        )),
                    ),
                }
                // Undo runs during rollback and outputs are read after the run: neither adds edges.
                matches!(context, Context::Step).then_some(j)
            }
        }
    }

    /// A read of an include: only its module's outputs, `steps.ID.outputs.NAME`.
    fn check_module_read(&mut self, id: &str, path: &[String], inclusion: &Inclusion, span: Span) {
        let key = match (path.first().map(String::as_str), path.get(1)) {
            (Some("outputs"), Some(key)) if path.len() == 2 => key,
            _ => {
                self.push(
                    Diag::error(
                        "ripcord::module-read",
                        format!("`{id}` includes a module: only its outputs can be read"),
                    )
                    .label(span, "here")
                    .help(format!(
                        "read `steps.{id}.outputs.NAME` (NAME one of the module's `outputs:`), or wait for the whole module with `needs: [{id}]`"
                    )),
                );
                return;
            }
        };
        let Some(module) = &inclusion.module else {
            return;
        };
        if module.body.outputs.iter().any(|(name, _)| name == key) {
            return;
        }
        let names: Vec<&str> = module
            .body
            .outputs
            .iter()
            .map(|(n, _)| n.as_str())
            .collect();
        let mut diag = Diag::error(
            "ripcord::unknown-output",
            format!("module `{id}` ({}) has no output `{key}`", module.display),
        )
        .label(span, "referenced here");
        diag = match suggest(key, names.iter().copied()) {
            Some(s) => diag.help(format!("did you mean `{s}`?")),
            None if names.is_empty() => diag.help("the module declares no `outputs:`"),
            None => diag.help(format!("its outputs: {}", names.join(", "))),
        };
        self.push(diag);
    }

    fn check_output_key(&mut self, target: &Decl, key: &str, span: Span) {
        let Some(spec) = &target.spec else {
            return; // a plugin that could not be described: its outputs are unknown
        };
        let Outputs::Closed(keys) = &spec.outputs else {
            return;
        };
        let sim_keys = target.sim.outputs.as_ref().and_then(Json::as_object);
        // A plugin's `stderr` (its log) is kept as an output too.
        let plugin_log = !target.action.as_ref().is_some_and(|a| a.builtin) && key == "stderr";
        if keys.iter().any(|k| k == key)
            || plugin_log
            || sim_keys.is_some_and(|o| o.contains_key(key))
        {
            return;
        }
        let mut diag = Diag::error(
            "ripcord::unknown-output",
            format!(
                "step `{}` ({}) has no output `{key}`",
                target.id,
                spec.name()
            ),
        )
        .label(span, "referenced here");
        diag = match suggest(key, keys.iter().map(String::as_str)) {
            Some(s) => diag.help(format!("did you mean `{s}`?")),
            None if keys.is_empty() => diag.help(format!("{} has no outputs", spec.name())),
            None => diag.help(format!("{} outputs: {}", spec.name(), keys.join(", "))),
        };
        self.push(diag);
    }

    fn warn_unused_inputs(&mut self, runbook: &Runbook, decls: &[Decl]) {
        let mut used: HashSet<String> = HashSet::new();
        let mut note = |e: &Expr| {
            for r in &e.refs {
                if let Ref::Input(name) = r {
                    used.insert(name.clone());
                }
            }
        };
        for d in decls {
            let mut exprs = Vec::new();
            if let Some(w) = &d.with {
                w.exprs(&mut exprs);
            }
            if let Some(w) = d.undo.as_ref().and_then(|u| u.with.as_ref()) {
                w.exprs(&mut exprs);
            }
            exprs.extend(d.undo.as_ref().and_then(|u| u.when.as_ref()?.expr()));
            exprs.extend(d.when.as_ref().and_then(Condition::expr));
            if let Some(ForEach::Expr(e)) = &d.for_each {
                exprs.push(e);
            }
            exprs.into_iter().for_each(&mut note);
        }
        for (_, value) in runbook.outputs.iter().flat_map(|o| o.iter()) {
            if let Ok(template) =
                expr::parse_template(&value.value, Span::of(value), self.file.inner())
            {
                template.exprs().for_each(&mut note);
            }
        }
        for (name, _) in runbook.inputs.iter().flat_map(|i| i.value.iter()) {
            if !used.contains(name.value.as_str()) {
                self.diags.push(
                    Diag::warning(
                        "ripcord::unused-input",
                        format!("input `{}` is never used", name.value),
                    )
                    .in_file(&self.file)
                    .label(Span::of(name), "declared here"),
                );
            }
        }
    }

    /// Reports every cycle of the declared graph; true if there was one.
    fn report_cycles(&mut self, decls: &[Decl]) -> bool {
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(decls.len(), decls.len());
        for _ in decls {
            graph.add_node(());
        }
        let mut edge_span: HashMap<(usize, usize), Span> = HashMap::new();
        for (i, d) in decls.iter().enumerate() {
            for &(j, span) in &d.deps {
                graph.add_edge(NodeIndex::new(j), NodeIndex::new(i), ());
                edge_span.insert((j, i), span);
            }
        }
        let cycles = cycle::find_cycles(&graph);
        for circle in &cycles {
            let names: Vec<&str> = circle.iter().map(|&i| decls[i].id.as_str()).collect();
            let mut diag = if let [only] = names[..] {
                Diag::error("ripcord::cycle", format!("step `{only}` needs itself"))
            } else {
                Diag::error(
                    "ripcord::cycle",
                    format!("dependency cycle: {} -> {}", names.join(" -> "), names[0]),
                )
            };
            for k in 0..circle.len() {
                let (from, to) = (circle[k], circle[(k + 1) % circle.len()]);
                let span = edge_span[&(from, to)];
                diag = diag.label(
                    span,
                    format!("`{}` needs `{}`", decls[to].id, decls[from].id),
                );
            }
            self.push(diag.help("remove one of these dependencies to break the cycle"));
        }
        !cycles.is_empty()
    }

    /// Expands for_each and builds the plan's graph.
    fn expand(&mut self, header: Header, inputs: Vec<ResolvedInput>, body: Body) -> Plan {
        let Body { decls, groups, .. } = body;
        let inputs_json: serde_json::Map<String, Json> = inputs
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.value.clone()?)))
            .collect();
        let mut steps: Vec<PlannedStep> = Vec::with_capacity(decls.len());
        let mut instances: Vec<std::ops::Range<usize>> = Vec::with_capacity(decls.len());
        let mut decls = decls;
        for d in &mut decls {
            if let Some(estimate) = sleep_estimate(d, &inputs, &inputs_json) {
                d.sim.duration = estimate;
                d.sim.explicit = true;
            }
        }
        // What each declared step waits for, before the declarations are consumed.
        let deps: Vec<Vec<usize>> = decls
            .iter()
            .map(|d| d.deps.iter().map(|&(j, _)| j).collect())
            .collect();
        let fans_out: Vec<bool> = decls.iter().map(|d| d.for_each.is_some()).collect();
        let bases: Vec<String> = decls.iter().map(|d| d.id.clone()).collect();
        let places: Vec<(SourceFile, Span)> =
            decls.iter().map(|d| (d.file.clone(), d.span)).collect();
        let mut too_many: Option<usize> = None;
        for d in decls {
            let items = match &d.for_each {
                None => vec![None],
                Some(ForEach::Items(items)) => items.iter().cloned().map(Some).collect(),
                Some(ForEach::Expr(e)) => self.eval_for_each(e, &d.file, &inputs, &inputs_json),
            };
            let first = steps.len();
            // Past the budget nothing more is made (the error is reported below).
            if first + items.len() > MAX_STEPS {
                too_many.get_or_insert(instances.len());
                instances.push(first..first);
                continue;
            }
            let mut keys: HashSet<String> = HashSet::new();
            let mut ids = Vec::with_capacity(items.len());
            for (n, item) in items.iter().enumerate() {
                ids.push(match item {
                    None => d.id.clone(),
                    Some(item) => {
                        let key = item_key(item, n);
                        if !keys.insert(key.clone()) {
                            self.diags.push(
                                Diag::error(
                                    "ripcord::for-each",
                                    format!("for_each of `{}` has the item `{key}` twice", d.id),
                                )
                                .in_file(&d.file)
                                .label(d.span, "each item must be unique: it names the step"),
                            );
                        }
                        format!("{}[{key}]", d.id)
                    }
                });
            }
            // Moved, not copied: at 100,000 steps the declarations and the plan would
            // otherwise hold every parameter tree twice.
            let template = PlannedStep {
                id: String::new(),
                base: d.id,
                name: d.name,
                action: d
                    .action
                    .expect("steps without an action were reported as errors"),
                with: d.with,
                when: d.when,
                item: None,
                retry: d.retry,
                timeout: d.timeout,
                sim: d.sim,
                idempotent: d.idempotent,
                irreversible: d.irreversible,
                pool: d.pool,
                on_failure: d.on_failure,
                undo: d.undo,
                span: d.span,
                group: d.group,
            };
            let mut pairs = ids.into_iter().zip(items);
            let last = pairs.next_back();
            for (id, item) in pairs {
                steps.push(PlannedStep {
                    id,
                    item,
                    ..template.clone()
                });
            }
            if let Some((id, item)) = last {
                steps.push(PlannedStep {
                    id,
                    item,
                    ..template
                });
            }
            instances.push(first..steps.len());
        }
        // Every instance of a step waits for every instance of what it needs. What needs a
        // for_each step waits through one barrier node of it ("all N are done"), shared by all
        // that need it: N + M edges instead of N × M. Counted before any is made.
        let mut edges = 0usize;
        let mut over = None;
        let mut barrier_of: Vec<Option<usize>> = vec![None; instances.len()];
        let mut barriers: Vec<usize> = Vec::new();
        for (i, waits) in deps.iter().enumerate() {
            for &j in waits {
                let added = if fans_out[j] {
                    let into = if barrier_of[j].is_none() {
                        barrier_of[j] = Some(barriers.len());
                        barriers.push(j);
                        instances[j].len()
                    } else {
                        0
                    };
                    into + instances[i].len()
                } else {
                    instances[j].len().saturating_mul(instances[i].len())
                };
                edges = edges.saturating_add(added);
                if edges > MAX_EDGES && over.is_none() {
                    over = Some(i);
                }
            }
        }
        if too_many.is_some() || over.is_some() {
            let (i, message, help) = match (too_many, over) {
                (None, Some(i)) => (
                    i,
                    format!("the dependencies come to more than {MAX_EDGES} edges"),
                    "each instance of a step waits for every instance of what it needs: fewer instances, or fewer steps that need a for_each step one by one",
                ),
                _ => (
                    too_many.unwrap_or(0),
                    format!("for_each expands the runbook to more than {MAX_STEPS} steps"),
                    "split the runbook, or iterate over fewer items",
                ),
            };
            let (file, span) = &places[i];
            self.diags.push(
                Diag::error("ripcord::too-large", message)
                    .in_file(file)
                    .label(*span, "here")
                    .help(help),
            );
            steps.truncate(0);
            instances.iter_mut().for_each(|r| *r = 0..0);
        }
        if steps.is_empty() {
            barriers.clear();
            barrier_of.iter_mut().for_each(|b| *b = None);
        }
        let n = steps.len();
        let mut graph: DiGraph<(), ()> =
            DiGraph::with_capacity(n + barriers.len(), n.min(MAX_EDGES));
        for _ in 0..n + barriers.len() {
            graph.add_node(());
        }
        let node = NodeIndex::new;
        for (k, &j) in barriers.iter().enumerate() {
            for a in instances[j].clone() {
                graph.add_edge(node(a), node(n + k), ());
            }
        }
        for (i, waits) in deps.iter().enumerate() {
            for &j in waits {
                match barrier_of[j] {
                    Some(k) => {
                        for b in instances[i].clone() {
                            graph.add_edge(node(n + k), node(b), ());
                        }
                    }
                    None => {
                        for a in instances[j].clone() {
                            for b in instances[i].clone() {
                                graph.add_edge(node(a), node(b), ());
                            }
                        }
                    }
                }
            }
        }
        let barriers = barriers.into_iter().map(|j| bases[j].clone()).collect();
        Plan {
            name: header.name,
            description: None,
            file: self.file.clone(),
            sources: std::mem::take(&mut self.sources),
            groups,
            rto: header.rto,
            concurrency: header.concurrency,
            pools: std::mem::take(&mut self.pools),
            rollback: Default::default(),
            inputs,
            steps,
            graph,
            barriers,
            order: Vec::new(),
            remaining: Vec::new(),
            priority: Vec::new(),
        }
    }

    /// Items of `for_each: "${{ expr }}"`, evaluated over the inputs. When an input it needs has
    /// no value yet (validate without --input), one placeholder instance `id[*]` stands in.
    fn eval_for_each(
        &mut self,
        e: &Expr,
        file: &SourceFile,
        inputs: &[ResolvedInput],
        values: &serde_json::Map<String, Json>,
    ) -> Vec<Option<Json>> {
        let error = |message: String, label: &str| {
            Diag::error("ripcord::for-each", message)
                .in_file(file)
                .label(e.span, label.to_string())
        };
        let unknown = e.refs.iter().any(|r| matches!(r, Ref::Input(n) if inputs.iter().any(|i| &i.name == n && i.value.is_none())));
        if unknown {
            return vec![Some(Json::String("*".into()))];
        }
        let env = expr::environment();
        let ctx = minijinja::context! { inputs => minijinja::Value::from(minijinja::value::Serde(values)) };
        let result = env.compile_expression(&e.source).and_then(|c| c.eval(ctx));
        let value = match result.map(|v| serde_json::to_value(&v)) {
            Ok(Ok(v)) => v,
            Ok(Err(err)) => {
                self.diags.push(error(
                    format!("for_each value cannot be used: {err}"),
                    "here",
                ));
                return Vec::new();
            }
            Err(err) => {
                self.diags
                    .push(error(format!("for_each failed to evaluate: {err}"), "here"));
                return Vec::new();
            }
        };
        match value {
            Json::Array(items) => items.into_iter().map(Some).collect(),
            other => {
                self.diags.push(error(
                    format!("for_each must give a list, but `{}` gives {other}", e.text),
                    "not a list",
                ));
                Vec::new()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Step,
    ForEach,
    Undo,
    /// A runbook's `outputs:`.
    Output,
}

/// The name of a for_each instance: the item itself when it is a scalar, else its position.
fn item_key(item: &Json, position: usize) -> String {
    match item {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        _ => position.to_string(),
    }
}

/// The includer's reads of module outputs, `steps.ID.outputs.NAME`, as the outputs' expressions.
fn reads_of(
    module_outputs: &HashMap<String, HashMap<String, String>>,
) -> impl FnMut(&expr::Token) -> expr::Rewrite + '_ {
    |t| match t {
        expr::Token::Step {
            id,
            output: Some(key),
        } => match module_outputs.get(id).and_then(|o| o.get(*key)) {
            Some(source) => expr::Rewrite::Replace(source.clone()),
            None => expr::Rewrite::Keep,
        },
        _ => expr::Rewrite::Keep,
    }
}

/// Declared steps in an order where each comes after what it waits for (ties: file order).
/// The graph is acyclic: cycles are reported before this runs.
fn dependency_order(decls: &[Decl]) -> Vec<usize> {
    let mut waiting: Vec<usize> = decls.iter().map(|d| d.deps.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); decls.len()];
    for (i, d) in decls.iter().enumerate() {
        for &(j, _) in &d.deps {
            dependents[j].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..decls.len()).filter(|&i| waiting[i] == 0).collect();
    let mut order = Vec::with_capacity(decls.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &k in &dependents[i] {
            waiting[k] -= 1;
            if waiting[k] == 0 {
                ready.insert(k);
            }
        }
    }
    order
}

/// `runbooks/../modules/x.yaml` -> `modules/x.yaml`, for display (the file is opened by the
/// path as joined).
fn normalize(path: &Path) -> String {
    use std::path::Component;
    let mut parts: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(parts.last(), Some(Component::Normal(_))) => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    let joined: PathBuf = parts.iter().collect();
    joined.display().to_string()
}

/// A `sleep.for` without an estimate of its own sleeps for its `duration`: when that is an
/// expression over inputs with values (a module's `settle: ${{ inputs.settle }}`), the value.
fn sleep_estimate(
    d: &Decl,
    inputs: &[ResolvedInput],
    values: &serde_json::Map<String, Json>,
) -> Option<Duration> {
    let sleeps = d
        .action
        .as_ref()
        .is_some_and(|a| a.provider == "sleep" && a.action == "for");
    if !sleeps || d.sim.explicit {
        return None;
    }
    let Some(Param::Map(entries)) = &d.with else {
        return None;
    };
    let (_, Param::Str(template)) = entries.iter().find(|(k, _)| k == "duration")? else {
        return None;
    };
    let known = |r: &Ref| matches!(r, Ref::Input(n) if inputs.iter().any(|i| &i.name == n && i.value.is_some()));
    if !template.exprs().all(|e| e.refs.iter().all(known)) {
        return None;
    }
    let env = expr::environment();
    let ctx =
        minijinja::context! { inputs => minijinja::Value::from(minijinja::value::Serde(values)) };
    let mut text = String::new();
    for part in &template.parts {
        match part {
            expr::Part::Lit(s) => text.push_str(s),
            expr::Part::Expr(e) => {
                let value = env.compile_expression(&e.source).ok()?.eval(&ctx).ok()?;
                text.push_str(&value.to_string());
            }
        }
    }
    duration::parse(&text).ok()
}

/// A step's `needs`, each with where it is written.
fn needs_of(step: &Step) -> Vec<(String, Span)> {
    step.needs
        .iter()
        .flat_map(|n| n.value.iter())
        .map(|n| (n.value.clone(), Span::of(n)))
        .collect()
}

/// The `with:` of a step and of its undo, where they run `shell.run`.
fn shell_params(d: &Decl) -> Vec<&Param> {
    let shell = |a: &ActionRef| a.provider == "shell" && a.action == "run";
    let mut params: Vec<&Param> = Vec::new();
    if d.action.as_ref().is_some_and(shell) {
        params.extend(d.with.as_ref());
    }
    if let Some(u) = d.undo.as_ref().filter(|u| shell(&u.action)) {
        params.extend(u.with.as_ref());
    }
    params
}

/// `20%` as 0.2; none for anything that is not a percentage from 0 to 100.
pub fn parse_percent(text: &str) -> Option<f64> {
    let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (0.0..=100.0).contains(&n).then_some(n / 100.0)
}
