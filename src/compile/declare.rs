//! Each step on its own: the runbook's header and pools, a step's id, action, params against
//! the action's schema, `when`, `undo` and the settings of [`super::settings`].

use super::*;

impl Compiler<'_> {
    pub(super) fn header(&mut self, runbook: &Runbook) -> Header {
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
    pub(super) fn pools(&mut self, runbook: &Runbook) -> Vec<Pool> {
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
    /// `check: true` runs a step for real in `run --check`: only for a step that only reads.
    /// Refused where that cannot be so, or where it would bypass a safer check: an approval, an
    /// irreversible step, a step with an undo (it changes something), an action that has a
    /// read-only probe of its own (a plugin's declared check, `tcp.connect`, `http.request`).
    fn check_check_true(
        &mut self,
        step: &Step,
        action: Option<&ActionRef>,
        spec: Option<&ActionSpec>,
        has_undo: bool,
    ) {
        let Some(check) = step.check.as_ref().filter(|c| c.value) else {
            return;
        };
        let why = match action {
            _ if step.irreversible == Some(true) => Some("an irreversible step changes something"),
            _ if has_undo => Some("a step with an `undo:` changes something"),
            Some(a) if a.builtin && a.provider == "approval" => {
                Some("an approval is never given by a pre-flight")
            }
            Some(a) if a.builtin && matches!(a.provider.as_str(), "tcp" | "http") => {
                Some("its action has a read-only check of its own, which `run --check` uses")
            }
            Some(a) if !a.builtin && spec.is_some_and(|s| s.check) => {
                Some("its action has a read-only check of its own, which `run --check` uses")
            }
            _ => None,
        };
        if let Some(why) = why {
            self.error(
                "ripcord::check-true",
                format!("`check: true` on step `{}`: {why}", step.id.value),
                Span::of(check),
                "runs the step for real in `run --check`",
            );
        }
    }

    /// Whether `step` runs in the run's mode; its `modes:` checked against the runbook's.
    pub(super) fn in_mode(&mut self, step: &Step) -> bool {
        let Some(modes) = &step.modes else {
            return true;
        };
        if modes.value.is_empty() {
            self.error(
                "ripcord::modes",
                "`modes: []` would never run the step",
                Span::of(modes),
                "list the modes it runs in, or remove the step",
            );
            return true;
        }
        if self.modes.is_empty() {
            self.error(
                "ripcord::modes",
                "`modes:` on a step needs the runbook's own `modes:` (e.g. `modes: [planned, unplanned, test]`)",
                Span::of(modes),
                "the runbook declares no modes",
            );
            return true;
        }
        for m in &modes.value {
            if !self.modes.contains(&m.value) {
                let known: Vec<&str> = self.modes.iter().map(String::as_str).collect();
                let mut diag = Diag::error("ripcord::modes", format!("unknown mode `{}`", m.value))
                    .label(Span::of(m), "not one of the runbook's `modes:`");
                diag = match suggest(&m.value, known.iter().copied()) {
                    Some(s) => diag.help(format!("did you mean `{s}`?")),
                    None => diag.help(format!("the runbook's modes: {}", known.join(", "))),
                };
                self.push(diag);
            }
        }
        match &self.mode {
            Some(mode) => modes.value.iter().any(|m| &m.value == mode),
            None => true,
        }
    }

    pub(super) fn step(
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
        // Not in the run's mode: skipped, as a `when` that is false.
        let in_mode = self.in_mode(step);
        let when = if in_mode {
            when
        } else {
            Some(Condition::Always(false))
        };
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
                if_started: u.if_started.as_ref().is_some_and(|b| b.value),
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
        let mut sim = self.sim(step, d, spec.as_deref(), action.as_ref());
        if !in_mode {
            // Takes no time in this mode's plan.
            sim.duration = Duration::ZERO;
            sim.explicit = true;
        }
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
        self.check_check_true(step, action.as_ref(), spec.as_deref(), undo.is_some());
        Decl {
            out_of_mode: !in_mode,
            check: step.check.as_ref().map(|c| c.value),
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

    pub(super) fn check_id(&mut self, id: &Spanned<String>) {
        if !is_name(&id.value) {
            self.error(
                "ripcord::step-id",
                format!("invalid step id `{}`", id.value),
                Span::of(id),
                "ids are [a-z0-9][a-z0-9_-]*",
            );
        }
    }

    pub(super) fn action(
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
    pub(super) fn action_ref(
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
                            .help(if why.starts_with("no plugin") {
                                format!("install `ripcord-plugin-{provider}` or pass --plugin-dir; dry-runs work without it")
                            } else {
                                "the plugin was found but cannot be used: fix it (or its description); dry-runs simulate its steps without it".to_string()
                            }),
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
}

/// A step's `needs`, each with where it is written.
pub(super) fn needs_of(step: &Step) -> Vec<(String, Span)> {
    step.needs
        .iter()
        .flat_map(|n| n.value.iter())
        .map(|n| (n.value.clone(), Span::of(n)))
        .collect()
}
