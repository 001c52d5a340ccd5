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

/// Two placeholders of a declared type (`variant` 0 or 1): an error that both give, and that is
/// about types, is the expression's; one that depends on the value (a division by zero, a
/// string that is not a number) is left to run time.
fn placeholder(ty: InputType, variant: usize) -> Option<Json> {
    Some(match (ty, variant) {
        (InputType::String, 0) => json!("7"),
        (InputType::String, _) => json!("text"),
        (InputType::Integer, 0) => json!(7),
        (InputType::Integer, _) => json!(2),
        (InputType::Number, 0) => json!(7.5),
        (InputType::Number, _) => json!(2.5),
        (InputType::Boolean, 0) => json!(true),
        (InputType::Boolean, _) => json!(false),
        (InputType::Duration, 0) => json!("7s"),
        (InputType::Duration, _) => json!("2m"),
        (InputType::List | InputType::Map, _) => return None,
    })
}

/// Whether an evaluation error is about the types of the operands (`string + number`), rather
/// than about a value.
fn about_types(err: &minijinja::Error) -> bool {
    err.kind() == minijinja::ErrorKind::InvalidOperation
        && err
            .detail()
            .is_some_and(|d| d.contains("unsupported types") || d.contains("not iterable"))
}

/// Each expression of `exprs` that fails, on the types of its operands, when evaluated over
/// `inputs` (their values, or two placeholders of their types).
pub fn check<'a>(exprs: &[&'a Expr], inputs: &[ResolvedInput]) -> Vec<TypeError<'a>> {
    let env = crate::exec::render::environment();
    let values = |variant: usize| -> Map<String, Json> {
        inputs
            .iter()
            .filter_map(|i| {
                let v = i.value.clone().or_else(|| placeholder(i.ty, variant))?;
                Some((i.name.clone(), v))
            })
            .collect()
    };
    let run = json!({ "id": "20260101-000000-0000", "dry_run": false, "name": "runbook", "mode": "real" });
    let contexts: Vec<minijinja::Value> = (0..2)
        .map(|v| {
            minijinja::Value::from(minijinja::value::Serde(
                json!({ "inputs": values(v), "run": run }),
            ))
        })
        .collect();
    let known = values(0);
    let mut out = Vec::new();
    for &e in exprs {
        let judged = e.refs.iter().all(|r| match r {
            Ref::Input(name) => known.contains_key(name),
            Ref::Run(_) => true,
            _ => false,
        });
        if !judged || e.refs.is_empty() {
            continue;
        }
        let Ok(compiled) = env.compile_expression(&e.source) else {
            continue; // a syntax error is reported where the expression is parsed
        };
        let errors: Vec<minijinja::Error> = contexts
            .iter()
            .filter_map(|ctx| compiled.eval(ctx).err())
            .collect();
        // Both fail, on the types: the expression's error. Undefined values, divisions by
        // zero, strings that are not numbers depend on the value: left to run time.
        if errors.len() == contexts.len() && errors.iter().all(about_types) {
            let err = &errors[0];
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
