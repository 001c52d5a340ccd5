//! Inlining: an `include:` step is replaced by its module's steps under its id as a prefix,
//! references rewritten, `needs` on the module meaning all of its steps.

use super::*;

impl Compiler<'_> {
    /// Replaces each include step by its module's steps, ids prefixed `ID.`: the module's
    /// `inputs.NAME` become the include's `with` values (else the input's default), its
    /// `steps.X` become `steps.ID.X`, and the includer's `steps.ID.outputs.NAME` become the
    /// module's output expressions. The module's first steps wait for what the include waits
    /// for; what waits for the include waits for the module's last steps (so for all of it).
    /// Steps are visited in dependency order, so an include's outputs are known before any
    /// step that reads them.
    pub(super) fn inline(
        &mut self,
        decls: Vec<Decl>,
        outputs: Vec<(String, expr::Template)>,
    ) -> Body {
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
    pub(super) fn inline_one(
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
            // An include's `check: false` leaves all of its steps out of a pre-flight, even one
            // that says `check: true` (`check: true` on an include is refused at validate).
            if d.check == Some(false) {
                m.check = Some(false);
            }
            if d.out_of_mode {
                // Takes no time in this mode's plan, as a step of the runbook's own.
                m.out_of_mode = true;
                m.sim.duration = std::time::Duration::ZERO;
                m.sim.explicit = true;
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
    pub(super) fn both(&mut self, outer: &Condition, own: Option<Condition>) -> Option<Condition> {
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
    pub(super) fn rewrite_decl(
        &mut self,
        d: &mut Decl,
        f: &mut dyn FnMut(&expr::Token) -> expr::Rewrite,
    ) {
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
}
