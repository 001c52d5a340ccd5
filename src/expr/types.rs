//! Expressions over inputs, evaluated at validate against values of the inputs' declared types,
//! so that `inputs.host + ':' + inputs.port` (a string and an integer) is an error at its
//! file:line:col instead of a failed render in the middle of a failover. An input with a value
//! (a default, `--input`, its `env:`) is evaluated with it; one without, with a placeholder of its
//! type. A step's `status`, and an output its `sim.outputs` gives, are judged too, as a dry-run
//! would evaluate them. Expressions that read `item`, a for_each step, an output no `sim`
//! gives, or a map or list input with no value are left to run time: their values are not known
//! well enough here to judge without false alarms.

use std::collections::HashMap;

use serde_json::{Map, Value as Json, json};

use super::{Expr, Ref};
use crate::runbook::InputType;

/// An input as the check sees it: its declared type, and its value when one is known.
pub struct Typed<'a> {
    pub name: &'a str,
    pub ty: InputType,
    pub value: Option<&'a Json>,
}

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

/// A second value of the JSON type of `v` (a step's `sim.outputs` value is the first).
fn other_of_type(v: &Json) -> Option<Json> {
    Some(match v {
        Json::String(_) => json!("text"),
        Json::Number(n) if n.is_i64() || n.is_u64() => json!(2),
        Json::Number(_) => json!(2.5),
        Json::Bool(b) => json!(!b),
        Json::Null => Json::Null,
        Json::Array(_) | Json::Object(_) => return None,
    })
}

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "map",
    }
}

/// Each expression of `exprs` that fails, on the types of its operands, when evaluated over
/// `inputs` (their values, or two placeholders of their types) and the steps' `sim.outputs`
/// (`sim_outputs`: a plain step's id -> its simulated outputs; the value, and another of its
/// type). An expression reading anything else (`item`, a for_each step, an output no `sim`
/// gives) is left to run time.
pub fn check<'a>(
    exprs: &[&'a Expr],
    inputs: &[Typed],
    sim_outputs: &HashMap<String, Map<String, Json>>,
) -> Vec<TypeError<'a>> {
    let env = super::render::environment();
    let values = |variant: usize| -> Map<String, Json> {
        inputs
            .iter()
            .filter_map(|i| {
                let v = i.value.cloned().or_else(|| placeholder(i.ty, variant))?;
                Some((i.name.to_string(), v))
            })
            .collect()
    };
    let known = values(0);
    let output = |id: &str, path: &[String], variant: usize| -> Option<Json> {
        match path {
            [what] if what == "status" => Some(json!(["succeeded", "failed"][variant])),
            [what, key] if what == "outputs" => {
                let v = sim_outputs.get(id)?.get(key)?;
                if variant == 0 {
                    Some(v.clone())
                } else {
                    other_of_type(v)
                }
            }
            _ => None,
        }
    };
    let run = json!({ "id": "20260101-000000-0000", "dry_run": false, "check": false, "name": "runbook", "mode": "planned" });
    // Simulated outputs exist only in a dry-run: an expression reading them is judged as a
    // dry-run would evaluate it.
    let dry_run = json!({ "id": "20260101-000000-0000", "dry_run": true, "check": false, "name": "runbook", "mode": "planned" });
    let mut out = Vec::new();
    for &e in exprs {
        let judged = e.refs.iter().all(|r| match r {
            Ref::Input(name) => known.contains_key(name),
            Ref::Run(_) => true,
            Ref::Step { id, path } => {
                output(id, path, 0).is_some() && output(id, path, 1).is_some()
            }
            _ => false,
        });
        if !judged || e.refs.is_empty() {
            continue;
        }
        let Ok(compiled) = env.compile_expression(&e.source) else {
            continue; // a syntax error is reported where the expression is parsed
        };
        let context = |variant: usize| {
            let mut steps = Map::new();
            for r in &e.refs {
                let Ref::Step { id, path } = r else { continue };
                let view = steps
                    .entry(super::mangle(id))
                    .or_insert_with(|| json!({ "outputs": {} }));
                let v = output(id, path, variant).expect("judged above");
                match path.as_slice() {
                    [_, key] => {
                        view["outputs"][key] = v;
                    }
                    _ => view["status"] = v,
                }
            }
            minijinja::Value::from(minijinja::value::Serde(json!({
                "inputs": values(variant),
                "run": if steps.is_empty() { &run } else { &dry_run },
                "steps": steps,
            })))
        };
        let errors: Vec<minijinja::Error> = (0..2)
            .filter_map(|v| compiled.eval(context(v)).err())
            .collect();
        // Both fail, on the types: the expression's error. Undefined values, divisions by
        // zero, strings that are not numbers depend on the value: left to run time.
        if errors.len() == 2 && errors.iter().all(about_types) {
            let err = &errors[0];
            let detail = err
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| err.kind().to_string());
            // Which operand is which type: the error alone says "string and number".
            let mut operands: Vec<String> = Vec::new();
            for r in &e.refs {
                let (shown, v) = match r {
                    Ref::Input(name) => (format!("inputs.{name}"), known.get(name).cloned()),
                    Ref::Step { id, path } => (
                        format!("steps.{id}.{}", path.join(".")),
                        output(id, path, 0),
                    ),
                    _ => continue,
                };
                let ty = v.as_ref().map_or("unknown", type_name);
                let line = format!("{shown} is {}", crate::runbook::value::with_article(ty));
                if !operands.contains(&line) {
                    operands.push(line);
                }
            }
            let message = if operands.is_empty() {
                detail
            } else {
                format!("{detail} ({})", operands.join(", "))
            };
            out.push(TypeError { expr: e, message });
        }
    }
    out
}
