//! Expansion: every `for_each` becomes its instances and the declared dependencies become the
//! plan's graph (within the budgets of [`super::limits`]).

use super::limits::Wiring;
use super::*;

impl Compiler<'_> {
    /// Expands for_each and builds the plan's graph.
    pub(super) fn expand(
        &mut self,
        header: Header,
        inputs: Vec<ResolvedInput>,
        body: Body,
    ) -> Plan {
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
            let by_host = hosts_are_unique(&items);
            for (n, item) in items.iter().enumerate() {
                ids.push(match item {
                    None => d.id.clone(),
                    Some(item) => {
                        let key = item_key(item, n, by_host);
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
                check: d.check,
                out_of_mode: d.out_of_mode,
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
        let wiring = Wiring::count(&deps, &instances, &fans_out);
        if too_many.is_some() || wiring.over.is_some() {
            let (i, message, help) = match (too_many, wiring.over) {
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
            // Errors: the plan is not used, so nothing is built.
            steps.truncate(0);
            instances.iter_mut().for_each(|r| *r = 0..0);
        }
        let (graph, barriers) = wiring.build(&deps, &instances, steps.len());
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
            modes: Vec::new(),
            cleanup_modes: Vec::new(),
            locks: Vec::new(),
            mode: None,
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
    pub(super) fn eval_for_each(
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

/// The name of a for_each instance: the item itself when it is a scalar, else its position.
pub(super) fn item_key(item: &Json, position: usize, by_host: bool) -> String {
    let scalar = |v: &Json| match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    match item {
        // A host of an inventory list (`{name: app1, host: 10.0.0.5}`): named by its name,
        // else by its host when no two items share one (several ports on one host).
        Json::Object(map) => map
            .get("name")
            .and_then(scalar)
            .or_else(|| map.get("host").filter(|_| by_host).and_then(scalar))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| position.to_string()),
        other => scalar(other).unwrap_or_else(|| position.to_string()),
    }
}

/// Whether the `host`s of a for_each's map items without a `name` are all different.
fn hosts_are_unique(items: &[Option<Json>]) -> bool {
    let mut seen = HashSet::new();
    items
        .iter()
        .flatten()
        .filter(|i| i.get("name").is_none())
        .filter_map(|i| i.get("host").map(Json::to_string))
        .all(|h| seen.insert(h))
}
