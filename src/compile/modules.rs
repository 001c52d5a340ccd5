//! `include:` steps: each module loaded (once per file, include cycles and depth refused) and
//! compiled, and the including step's `with` checked against the module's inputs.

use super::*;

impl Compiler<'_> {
    /// An `include:` step: the module compiled (once per file), `with` checked against its
    /// inputs. The step stays one node until [`Compiler::inline`] replaces it.
    pub(super) fn include_step(&mut self, step: &Step, include: &Spanned<String>) -> Decl {
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
        if let Some(check) = step.check.as_ref().filter(|c| c.value) {
            self.error(
                "ripcord::check-true",
                format!(
                    "`check: true` on the include `{}` would run every step of the module for real in `run --check`",
                    step.id.value
                ),
                Span::of(check),
                "set it on the module's read-only steps instead",
            );
        }
        // Not in the run's mode: none of the module's steps runs.
        let in_mode = self.in_mode(step);
        let when = if in_mode {
            when
        } else {
            Some(Condition::Always(false))
        };
        Decl {
            out_of_mode: !in_mode,
            check: step.check.as_ref().map(|c| c.value),
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

    /// Loads and compiles the module `include` names (relative to the including file), once
    /// per file. Its diagnostics point into it, with a note at the including line.
    pub(super) fn load_module(&mut self, include: &Spanned<String>) -> Option<Rc<Module>> {
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
            Err(diags) => {
                for diag in diags {
                    let diag = diag.related(self.included_from(span));
                    self.diags.push(diag);
                }
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
        // Keys that belong to the including runbook alone.
        for (code, key, value, why) in [
            (
                "ripcord::modes",
                "modes",
                &runbook.modes,
                ": its steps' `modes:` name the including runbook's",
            ),
            ("ripcord::locks", "locks", &runbook.locks, ""),
            (
                "ripcord::modes",
                "cleanup_modes",
                &runbook.cleanup_modes,
                "",
            ),
        ] {
            if let Some(value) = value {
                self.error(
                    code,
                    format!("a module has no `{key}:` of its own{why}"),
                    Span::of(value),
                    format!("declare `{key}:` in the runbook that includes this module"),
                );
            }
        }
        let pools = self.pools(runbook);
        let inputs = inputs::resolve(runbook, &self.file, &[], &[], false, false, &mut self.diags);
        let decls = runbook
            .inputs
            .as_ref()
            .map_or(&[][..], |s| s.value.0.as_slice());
        for (name, decl) in decls {
            if let Some(command) = &decl.command {
                self.diags.push(
                    Diag::error(
                        "ripcord::input-command",
                        format!(
                            "module input `{}` has a `command`: a module's inputs come from the runbook that includes it",
                            name.value
                        ),
                    )
                    .in_file(&self.file)
                    .label(Span::of(command), "only a runbook's own inputs run commands")
                    .help("declare the `command:` on an input of the including runbook, and pass that input in the include's `with:`"),
                );
            }
        }
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

    pub(super) fn included_from(&self, span: Span) -> Diag {
        Diag::note("ripcord::included-from", "included from here")
            .in_file(&self.file)
            .label(span, "the module is included here")
    }

    /// `with:` of an include against the module's inputs: each key declared, each required
    /// input given, literal values of the declared type.
    pub(super) fn check_module_inputs(
        &mut self,
        step: &Step,
        include: &Spanned<String>,
        module: &Module,
    ) {
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
}

/// `runbooks/../modules/x.yaml` -> `modules/x.yaml`, for display (the file is opened by the
/// path as joined).
pub(super) fn normalize(path: &Path) -> String {
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
