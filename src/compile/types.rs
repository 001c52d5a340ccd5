//! Expressions over inputs, evaluated at validate against values of the inputs' declared types,
//! so that `inputs.host + ':' + inputs.port` (a string and an integer) is an error at its
//! file:line:col instead of a failed render in the middle of a failover. An input with a value
//! (a default, `--input`, its `env:`) is evaluated with it; one without, with a placeholder of its
//! type. Expressions that read step results, `item` or a map or list input with no value are
//! left to run time: their values are not known well enough here to judge without false alarms.

use serde_json::{Map, Value as Json, json};

use super::expr::{Expr, Ref};
use super::inputs::ResolvedInput;
use crate::runbook::InputType;

/// A problem: the expression, and what evaluating it said.
pub struct TypeError<'a> {
    pub expr: &'a Expr,
    pub message: String,
}

/// The placeholder of a declared type.
fn placeholder(ty: InputType) -> Option<Json> {
    Some(match ty {
        InputType::String => json!("text"),
        InputType::Integer => json!(1),
        InputType::Number => json!(1.5),
        InputType::Boolean => json!(true),
        InputType::Duration => json!("1s"),
        InputType::List | InputType::Map => return None,
    })
}

/// Each expression of `exprs` that fails when evaluated over `inputs`.
pub fn check<'a>(exprs: &[&'a Expr], inputs: &[ResolvedInput]) -> Vec<TypeError<'a>> {
    let env = crate::exec::render::environment();
    let values: Map<String, Json> = inputs
        .iter()
        .filter_map(|i| {
            let v = i.value.clone().or_else(|| placeholder(i.ty))?;
            Some((i.name.clone(), v))
        })
        .collect();
    let run = json!({ "id": "20260101-000000-0000", "dry_run": false, "name": "runbook", "mode": "real" });
    let ctx = minijinja::Value::from(minijinja::value::Serde(
        json!({ "inputs": values, "run": run }),
    ));
    let mut out = Vec::new();
    for &e in exprs {
        let judged = e.refs.iter().all(|r| match r {
            Ref::Input(name) => values.contains_key(name),
            Ref::Run(_) => true,
            _ => false,
        });
        if !judged || e.refs.is_empty() {
            continue;
        }
        let result = env.compile_expression(&e.source).and_then(|c| c.eval(&ctx));
        if let Err(err) = result {
            // Undefined: a key a map input's actual value lacks, an index past a list's end:
            // data, not a type error, and left to run time.
            if err.kind() == minijinja::ErrorKind::UndefinedError {
                continue;
            }
            let detail = err
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| err.kind().to_string());
            out.push(TypeError {
                expr: e,
                message: detail,
            });
        }
    }
    out
}
