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

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::Value as Json;
use serde_saphyr::Spanned;

use crate::diag::{Diag, SourceFile};
use crate::plan::{ActionRef, Plan, PlannedStep, Pool, RetryPolicy, SimHints, UndoSpec};
use std::sync::Arc;

use crate::provider::catalog::{ActionSpec, EXTERNAL_SIM_DEFAULT, Outputs};
use crate::provider::{Lookup, Providers};
use crate::runbook::{OnFailure, Runbook, Source, Span, Step, Value, ValueKind, duration};

use expr::{Expr, Ref};
use inputs::ResolvedInput;
use param::{Condition, Param};

/// The default `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 10;
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

/// Compiles `source`; on failure, every error found (and any warnings).
pub fn compile(source: &Source, options: &CompileOptions) -> Result<Compiled, Vec<Diag>> {
    let mut cx = Compiler {
        file: &source.file,
        text: source.file.inner(),
        diags: Vec::new(),
        providers: options.providers,
        missing_plugins: HashSet::new(),
    };
    let runbook = &source.runbook;
    let header = cx.header(runbook);
    let inputs = inputs::resolve(
        runbook,
        cx.file,
        options.inputs,
        options.require_inputs,
        &mut cx.diags,
    );
    let defaults = runbook.defaults.as_ref();
    let mut decls: Vec<Decl> = runbook
        .steps
        .value
        .iter()
        .map(|step| cx.step(step, defaults, &header.pools))
        .collect();
    if decls.is_empty() {
        cx.error(
            "ripcord::no-steps",
            "the runbook has no steps",
            Span::of(&runbook.steps),
            "`steps:` is empty",
        );
    }
    let ids = cx.index_ids(&decls);
    cx.resolve_references(&mut decls, &ids, &inputs);
    cx.check_secrets_stay_off_command_lines(&decls, &inputs);
    cx.check_outputs(runbook, &decls, &ids, &inputs);
    let has_errors = cx.diags.iter().any(Diag::is_error);
    if !has_errors {
        // With errors, an input may look unused only because its expression failed.
        cx.warn_unused_inputs(runbook, &decls);
    }
    if has_errors || cx.report_cycles(&decls) {
        return Err(cx.diags);
    }
    let plan = cx.expand(header, inputs, decls);
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
    pools: Vec<Pool>,
}

/// A declared step after the per-step checks, before expansion.
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
    pool: Option<usize>,
    on_failure: OnFailure,
    needs: Vec<(String, Span)>,
    /// Steps this one waits for, with the span that made the edge (a need or a reference).
    deps: Vec<(usize, Span)>,
}

enum ForEach {
    Items(Vec<Json>),
    Expr(Expr),
}

struct Compiler<'a> {
    file: &'a SourceFile,
    text: &'a str,
    diags: Vec<Diag>,
    providers: &'a Providers,
    /// External providers already reported as missing (once each).
    missing_plugins: HashSet<String>,
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
                .in_file(self.file)
                .label(span, label),
        );
    }

    fn push(&mut self, diag: Diag) {
        self.diags.push(diag.in_file(self.file));
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
            pools.push(Pool {
                name: pool.value.clone(),
                size: size.value.max(1) as usize,
            });
        }
        Header {
            name: name.value.clone(),
            rto,
            concurrency,
            pools,
        }
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
        let text = self.text;

        let mut expr_errors = Vec::new();
        let with = step
            .with
            .as_ref()
            .map(|w| Param::compile(w, text, &mut expr_errors));
        if let Some(spec) = &spec {
            for p in params::check(&spec.params, step.with.as_ref(), id_span) {
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
                for p in params::check(&spec.params, u.with.as_ref(), Span::of(&u.uses)) {
                    self.push(
                        Diag::error(
                            "ripcord::param",
                            format!("{} (undo of `{}`)", p.message, step.id.value),
                        )
                        .label(p.span, "here"),
                    );
                }
            }
            Some(UndoSpec { action, with })
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
        let retry = self.retry(step.retry.as_ref().or(d.and_then(|d| d.retry.as_ref())));
        let sim = self.sim(step, d, spec.as_deref(), action.as_ref());
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
                .in_file(self.file)
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
                found
            });
        let on_failure = step
            .on_failure
            .as_ref()
            .or(d.and_then(|d| d.on_failure.as_ref()))
            .map(|o| o.value)
            .unwrap_or_default();
        let needs = step
            .needs
            .iter()
            .flat_map(|n| n.value.iter())
            .map(|n| (n.value.clone(), Span::of(n)))
            .collect();
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
            pool,
            on_failure,
            needs,
            deps: Vec::new(),
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
            (None, Some(include)) => {
                self.push(
                    Diag::error(
                        "ripcord::include-unsupported",
                        "modules (`include:`) are not supported by this version of ripcord yet",
                    )
                    .label(Span::of(include), "module included here")
                    .help("inline the module's steps for now"),
                );
                (None, None)
            }
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
            ValueKind::Str(s) => match expr::parse_template(s, v.span, self.text) {
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
        SimHints {
            duration: explicit.unwrap_or(action_default),
            explicit: explicit.is_some(),
            outputs,
            fail: sim
                .and_then(|s| s.fail)
                .or(fallback.and_then(|s| s.fail))
                .unwrap_or(false),
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
    fn check_secrets_stay_off_command_lines(&mut self, decls: &[Decl], inputs: &[ResolvedInput]) {
        let secret = |name: &str| inputs.iter().any(|i| i.secret && i.name == name);
        for d in decls {
            let mut params: Vec<&Param> = Vec::new();
            let shell = |a: &ActionRef| a.provider == "shell" && a.action == "run";
            if d.action.as_ref().is_some_and(shell) {
                params.extend(d.with.as_ref());
            }
            if let Some(u) = d.undo.as_ref().filter(|u| shell(&u.action)) {
                params.extend(u.with.as_ref());
            }
            for p in params {
                let Param::Map(entries) = p else { continue };
                for (key, value) in entries.iter().filter(|(k, _)| k == "argv" || k == "script") {
                    let mut exprs = Vec::new();
                    value.exprs(&mut exprs);
                    for e in exprs {
                        for r in &e.refs {
                            if let Ref::Input(name) = r
                                && secret(name)
                            {
                                self.push(
                                    Diag::error(
                                        "ripcord::secret-in-argv",
                                        format!("secret input `{name}` in `{key}` would be visible to every user on the host"),
                                    )
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

    /// `outputs:` (what a module exposes): each a template over inputs and step results.
    fn check_outputs(
        &mut self,
        runbook: &Runbook,
        decls: &[Decl],
        ids: &HashMap<String, usize>,
        inputs: &[ResolvedInput],
    ) {
        for (name, value) in runbook.outputs.iter().flat_map(|o| o.iter()) {
            if !inputs::is_identifier(&name.value) {
                self.error(
                    "ripcord::output-name",
                    format!("invalid output name `{}`", name.value),
                    Span::of(name),
                    "output names are identifiers: [A-Za-z_][A-Za-z0-9_]*",
                );
            }
            match expr::parse_template(&value.value, Span::of(value), self.text) {
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
                }
                Err(e) => self.error("ripcord::expression", e.message, e.span, "here"),
            }
        }
    }

    fn unknown_step(&mut self, id: &str, span: Span, ids: &HashMap<String, usize>, what: &str) {
        let mut diag = Diag::error(
            "ripcord::unknown-step",
            format!("{what} refers to unknown step `{id}`"),
        )
        .label(span, "no step has this id");
        if let Some(s) = suggest(id, ids.keys().map(String::as_str)) {
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
            exprs.extend(d.when.as_ref().and_then(Condition::expr));
            if let Some(ForEach::Expr(e)) = &d.for_each {
                exprs.push(e);
            }
            exprs.into_iter().for_each(&mut note);
        }
        for (_, value) in runbook.outputs.iter().flat_map(|o| o.iter()) {
            if let Ok(template) = expr::parse_template(&value.value, Span::of(value), self.text) {
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
                    .in_file(self.file)
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
    fn expand(&mut self, header: Header, inputs: Vec<ResolvedInput>, decls: Vec<Decl>) -> Plan {
        let inputs_json: serde_json::Map<String, Json> = inputs
            .iter()
            .filter_map(|i| Some((i.name.clone(), i.value.clone()?)))
            .collect();
        let mut steps: Vec<PlannedStep> = Vec::with_capacity(decls.len());
        let mut instances: Vec<std::ops::Range<usize>> = Vec::with_capacity(decls.len());
        for d in &decls {
            let items = match &d.for_each {
                None => vec![None],
                Some(ForEach::Items(items)) => items.iter().cloned().map(Some).collect(),
                Some(ForEach::Expr(e)) => self.eval_for_each(e, &inputs, &inputs_json),
            };
            let first = steps.len();
            let mut keys: HashSet<String> = HashSet::new();
            for (n, item) in items.into_iter().enumerate() {
                let id = match &item {
                    None => d.id.clone(),
                    Some(item) => {
                        let key = item_key(item, n);
                        if !keys.insert(key.clone()) {
                            self.error(
                                "ripcord::for-each",
                                format!("for_each of `{}` has the item `{key}` twice", d.id),
                                d.span,
                                "each item must be unique: it names the step",
                            );
                        }
                        format!("{}[{key}]", d.id)
                    }
                };
                steps.push(PlannedStep {
                    id,
                    base: d.id.clone(),
                    name: d.name.clone(),
                    action: d
                        .action
                        .clone()
                        .expect("steps without an action were reported as errors"),
                    with: d.with.clone(),
                    when: d.when.clone(),
                    item,
                    retry: d.retry.clone(),
                    timeout: d.timeout,
                    sim: d.sim.clone(),
                    idempotent: d.idempotent,
                    pool: d.pool,
                    on_failure: d.on_failure,
                    undo: d.undo.clone(),
                    span: d.span,
                });
            }
            instances.push(first..steps.len());
        }
        let mut graph: DiGraph<(), ()> = DiGraph::with_capacity(steps.len(), steps.len());
        for _ in &steps {
            graph.add_node(());
        }
        for (i, d) in decls.iter().enumerate() {
            for &(j, _) in &d.deps {
                for a in instances[j].clone() {
                    for b in instances[i].clone() {
                        graph.add_edge(NodeIndex::new(a), NodeIndex::new(b), ());
                    }
                }
            }
        }
        Plan {
            name: header.name,
            description: None,
            file: self.file.clone(),
            rto: header.rto,
            concurrency: header.concurrency,
            pools: header.pools,
            rollback: Default::default(),
            inputs,
            steps,
            graph,
            order: Vec::new(),
            remaining: Vec::new(),
        }
    }

    /// Items of `for_each: "${{ expr }}"`, evaluated over the inputs. When an input it needs has
    /// no value yet (validate without --input), one placeholder instance `id[*]` stands in.
    fn eval_for_each(
        &mut self,
        e: &Expr,
        inputs: &[ResolvedInput],
        values: &serde_json::Map<String, Json>,
    ) -> Vec<Option<Json>> {
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
                self.error(
                    "ripcord::for-each",
                    format!("for_each value cannot be used: {err}"),
                    e.span,
                    "here",
                );
                return Vec::new();
            }
            Err(err) => {
                self.error(
                    "ripcord::for-each",
                    format!("for_each failed to evaluate: {err}"),
                    e.span,
                    "here",
                );
                return Vec::new();
            }
        };
        match value {
            Json::Array(items) => items.into_iter().map(Some).collect(),
            other => {
                self.error(
                    "ripcord::for-each",
                    format!("for_each must give a list, but `{}` gives {other}", e.text),
                    e.span,
                    "not a list",
                );
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
