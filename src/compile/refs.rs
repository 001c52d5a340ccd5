//! References across steps: ids unique, every `needs` and `steps.X` resolves (a reference adds
//! an edge), outputs read exist, and the graph is acyclic (each cycle reported whole).

use super::*;

impl Compiler<'_> {
    /// Step ids to indices; duplicates reported.
    pub(super) fn index_ids(&mut self, decls: &[Decl]) -> HashMap<String, usize> {
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
    pub(super) fn resolve_references(
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

    pub(super) fn unknown_step(
        &mut self,
        id: &str,
        span: Span,
        ids: &HashMap<String, usize>,
        what: &str,
    ) {
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
    pub(super) fn check_ref(
        &mut self,
        r: &Ref,
        span: Span,
        context: Context,
        me: usize,
        decls: &[Decl],
        ids: &HashMap<String, usize>,
        inputs: &[ResolvedInput],
    ) -> Option<usize> {
        const USABLE: &str = "expressions can use inputs.NAME, steps.ID.outputs.KEY, steps.ID.status, item (in for_each) and run.id, run.dry_run, run.check, run.name, run.mode";
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
    pub(super) fn check_module_read(
        &mut self,
        id: &str,
        path: &[String],
        inclusion: &Inclusion,
        span: Span,
    ) {
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

    pub(super) fn check_output_key(&mut self, target: &Decl, key: &str, span: Span) {
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

    /// Reports every cycle of the declared graph; true if there was one.
    pub(super) fn report_cycles(&mut self, decls: &[Decl]) -> bool {
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
}

/// The includer's reads of module outputs, `steps.ID.outputs.NAME`, as the outputs' expressions.
pub(super) fn reads_of(
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
pub(super) fn dependency_order(decls: &[Decl]) -> Vec<usize> {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Context {
    Step,
    ForEach,
    Undo,
    /// A runbook's `outputs:`.
    Output,
}
