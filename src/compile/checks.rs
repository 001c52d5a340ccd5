//! Checks over a body's steps once references resolve: secrets stay off command lines,
//! `script:` values can be quoted, expressions type-check, a module's `outputs:`, unused inputs.

use super::*;

impl Compiler<'_> {
    /// A secret input in `shell.run`'s or `ssh.run`'s `argv` or `script` would be readable by
    /// every user in /proc/PID/cmdline (of this host or the remote one): secrets go through
    /// `env:` or `stdin:`.
    pub(super) fn check_secrets_stay_off_command_lines<'d>(
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
            for (action, p) in shell_params(d) {
                let Param::Map(entries) = p else { continue };
                for (key, value) in entries.iter().filter(|(k, _)| on_command_line(action, k)) {
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
                                    .help(if key == "argv" || key == "script" {
                                        format!(
                                            "pass it through `env:` (e.g. `env: {{ TOKEN: \"${{{{ inputs.{name} }}}}\" }}` and use $TOKEN) or `stdin:`"
                                        )
                                    } else {
                                        "`ssh` is run with it as an argument: take host names, users, ports and file names from inputs that are not secret".to_string()
                                    }),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Each `${{ }}` in `shell.run`'s (or `ssh.run`'s) `script:` is quoted for where it stands (see
    /// [`script`]); where that cannot be known, the runbook is refused.
    pub(super) fn check_script_quoting<'d>(&mut self, decls: impl Iterator<Item = &'d Decl>) {
        for d in decls {
            for (_, p) in shell_params(d) {
                let Param::Map(entries) = p else { continue };
                let Some((_, Param::Str(t))) = entries.iter().find(|(k, _)| k == "script") else {
                    continue;
                };
                let exprs = t.parts.iter().filter_map(|part| match part {
                    expr::Part::Expr(e) => Some(e),
                    expr::Part::Lit(_) => None,
                });
                for (e, q) in exprs.zip(expr::script::quoting(&t.parts)) {
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
    pub(super) fn check_expression_types<'d>(
        &mut self,
        decls: impl Iterator<Item = &'d Decl>,
        inputs: &[ResolvedInput],
    ) {
        let decls: Vec<&Decl> = decls.collect();
        let inputs: Vec<types::Typed> = inputs
            .iter()
            .map(|i| types::Typed {
                name: &i.name,
                ty: i.ty,
                value: i.value.as_ref(),
            })
            .collect();
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
            // A step with a `when` may not run in a dry-run (`not run.dry_run`): what its
            // expressions make of simulated outputs would be a false alarm.
            let no_outputs = HashMap::new();
            let outputs = if d.when.is_some() {
                &no_outputs
            } else {
                &sim_outputs
            };
            for problem in types::check(&exprs, &inputs, outputs) {
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
    pub(super) fn check_outputs(
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

    pub(super) fn warn_unused_inputs(&mut self, runbook: &Runbook, decls: &[Decl]) {
        let mut used: HashSet<String> = HashSet::new();
        let mut note = |e: &Expr| {
            for r in &e.refs {
                if let Ref::Input(name) = r {
                    used.insert(name.clone());
                }
            }
        };
        for d in decls {
            decl_exprs(d).into_iter().for_each(&mut note);
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
}

/// The `with:` of a step and of its undo where the action runs a command (`shell.run`,
/// `ssh.run`), each with its action.
fn shell_params(d: &Decl) -> Vec<(&ActionRef, &Param)> {
    let shell =
        |a: &ActionRef| a.builtin && crate::provider::catalog::runs_command(&a.provider, &a.action);
    let mut params: Vec<(&ActionRef, &Param)> = Vec::new();
    if let Some(a) = d.action.as_ref().filter(|a| shell(a)) {
        params.extend(d.with.as_ref().map(|p| (a, p)));
    }
    if let Some(u) = d.undo.as_ref().filter(|u| shell(&u.action)) {
        params.extend(u.with.as_ref().map(|p| (&u.action, p)));
    }
    params
}

/// The params of a command-running action that end up on a command line: its argv or script,
/// and for `ssh.run` also the `ssh` command line's host, user, port and file names.
fn on_command_line(action: &ActionRef, key: &str) -> bool {
    match key {
        "argv" | "script" => true,
        "host" | "user" | "port" | "identity" | "known_hosts" => action.provider == "ssh",
        _ => false,
    }
}

/// Every expression of a step: its `with:`, `when:`, `for_each:`, and its undo's.
fn decl_exprs(d: &Decl) -> Vec<&Expr> {
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
    exprs
}
