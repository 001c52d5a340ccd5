//! A step's settings: durations, `for_each` items, the retry policy, and what a dry-run
//! simulates (`sim`), with the estimate of a `sleep.for` step.

use super::*;

impl Compiler<'_> {
    pub(super) fn duration(&mut self, text: &Spanned<String>, what: &str) -> Option<Duration> {
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

    pub(super) fn for_each(
        &mut self,
        v: &Value,
        errors: &mut Vec<expr::ExprError>,
    ) -> Option<ForEach> {
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
                    format!("for_each must be a list, not {}", v.a_type()),
                    v.span,
                    "expected a list",
                );
                None
            }
        }
    }

    pub(super) fn retry(&mut self, retry: Option<&crate::runbook::Retry>) -> RetryPolicy {
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

    pub(super) fn sim(
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
                    format!("sim.outputs must be a map, not {}", o.a_type()),
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
}

/// A `sleep.for` without an estimate of its own sleeps for its `duration`: when that is an
/// expression over inputs with values (a module's `settle: ${{ inputs.settle }}`), the value.
pub(super) fn sleep_estimate(
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

/// `20%` as 0.2; none for anything that is not a percentage from 0 to 100.
pub fn parse_percent(text: &str) -> Option<f64> {
    let n: f64 = text.trim().strip_suffix('%')?.trim().parse().ok()?;
    (0.0..=100.0).contains(&n).then_some(n / 100.0)
}
