//! Compile-time check of a step's `with:` against its action's parameter schema: unknown and
//! missing params, and the types of literal values. Values that are `${{ }}` expressions are
//! checked when they are rendered, before the step runs.

use serde_json::Value as Json;

use crate::runbook::{Span, Value, ValueKind};

use super::suggest;

pub struct Problem {
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

/// Checks `with` (absent: an empty map) against an object `schema`. `at` is where to point
/// when a param is missing.
pub fn check(schema: &Json, with: Option<&Value>, at: Span) -> Vec<Problem> {
    check_params(schema, with, at, Unrendered::Skipped)
}

/// Whether a `${{ }}` in a value is an expression still to be rendered (at validate: its
/// value is checked when rendered), or text (rendered params: an input's value that happens to
/// contain `${{` is checked like any other, never let through).
#[derive(Clone, Copy, PartialEq)]
enum Unrendered {
    Skipped,
    Checked,
}

fn check_params(schema: &Json, with: Option<&Value>, at: Span, how: Unrendered) -> Vec<Problem> {
    let mut problems = Vec::new();
    let empty = Vec::new();
    let entries = match with.map(|w| &w.kind) {
        None | Some(ValueKind::Null) => &empty,
        Some(ValueKind::Map(entries)) => entries,
        Some(_) => {
            let w = with.expect("matched Some above");
            problems.push(Problem {
                span: w.span,
                message: format!("`with` must be a map of params, not a {}", w.type_name()),
                help: None,
            });
            return problems;
        }
    };
    let props = schema["properties"].as_object();
    let closed = schema["additionalProperties"] == Json::Bool(false);
    for (key, value) in entries {
        match props.and_then(|p| p.get(&key.name)) {
            Some(prop) => check_value(prop, value, &key.name, &mut problems, how),
            None if closed => {
                let names = props.map(|p| p.keys().map(String::as_str).collect::<Vec<_>>());
                let names = names.unwrap_or_default();
                let help = match suggest(&key.name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("known params: {}", names.join(", ")),
                };
                problems.push(Problem {
                    span: key.span,
                    message: format!("unknown param `{}`", key.name),
                    help: Some(help),
                });
            }
            None => {}
        }
    }
    let has = |name: &str| entries.iter().any(|(k, _)| k.name == name);
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if !has(name) {
            problems.push(Problem {
                span: with.map_or(at, |w| w.span),
                message: format!("missing required param `{name}`"),
                help: None,
            });
        }
    }
    // `oneOf: [{required: [a]}, {required: [b, c]}]`: exactly one alternative, with every name
    // it requires.
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let sets: Vec<Vec<&str>> = alternatives
            .iter()
            .map(|a| {
                a["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Json::as_str).collect())
                    .unwrap_or_default()
            })
            .collect();
        let matching = sets.iter().filter(|set| set.iter().all(|n| has(n))).count();
        let list = sets
            .iter()
            .map(|set| {
                set.iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect::<Vec<_>>()
            .join(if sets.iter().any(|s| s.len() > 1) {
                ", or "
            } else {
                " or "
            });
        let partial: Vec<String> = sets
            .iter()
            .filter(|set| set.iter().any(|n| has(n)) && !set.iter().all(|n| has(n)))
            .map(|set| {
                let missing: Vec<String> = set
                    .iter()
                    .filter(|n| !has(n))
                    .map(|n| format!("`{n}`"))
                    .collect();
                format!("missing {}", missing.join(" and "))
            })
            .collect();
        if matching == 0 {
            problems.push(Problem {
                span: with.map_or(at, |w| w.span),
                message: format!("needs {list}"),
                help: (!partial.is_empty()).then(|| partial.join("; ")),
            });
        } else if matching > 1 {
            problems.push(Problem {
                span: with.map_or(at, |w| w.span),
                message: format!("give only one of {list}"),
                help: None,
            });
        }
    }
    problems
}

/// Checks rendered params (JSON) against `schema`; the problems as sentences.
pub fn check_rendered(schema: &Json, params: &Json) -> Vec<String> {
    let value = Value::from_json(params);
    check_params(schema, Some(&value), Span::default(), Unrendered::Checked)
        .into_iter()
        .map(|p| p.message)
        .collect()
}

fn is_expression(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("${{"))
}

fn check_value(schema: &Json, v: &Value, name: &str, problems: &mut Vec<Problem>, how: Unrendered) {
    if how == Unrendered::Skipped && is_expression(v) {
        return;
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let fits = alternatives.iter().any(|alt| {
            let mut p = Vec::new();
            check_value(alt, v, name, &mut p, how);
            p.is_empty()
        });
        if !fits {
            let kinds: Vec<String> = alternatives.iter().map(describe).collect();
            problems.push(Problem {
                span: v.span,
                message: format!(
                    "param `{name}` must be {}, not a {}",
                    kinds.join(" or "),
                    v.type_name()
                ),
                help: None,
            });
        }
        return;
    }
    if !type_fits(&schema["type"], v) {
        problems.push(Problem {
            span: v.span,
            message: format!(
                "param `{name}` must be {}, not a {}",
                describe(schema),
                v.type_name()
            ),
            help: None,
        });
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(&v.to_json())
    {
        let list: Vec<String> = options.iter().map(Json::to_string).collect();
        problems.push(Problem {
            span: v.span,
            message: format!("param `{name}` must be one of {}", list.join(", ")),
            help: None,
        });
    }
    // Bounds of a number that is not an integer (integers are checked below).
    if let ValueKind::Float(n) = &v.kind {
        let n = *n;
        let below = schema["minimum"].as_f64().filter(|min| n < *min);
        let above = schema["maximum"].as_f64().filter(|max| n > *max);
        if let Some(min) = below {
            problems.push(Problem {
                span: v.span,
                message: format!("param `{name}` must be at least {min}"),
                help: None,
            });
        }
        if let Some(max) = above {
            problems.push(Problem {
                span: v.span,
                message: format!("param `{name}` must be at most {max}"),
                help: None,
            });
        }
    }
    match &v.kind {
        ValueKind::Int(i) => {
            let low = schema["minimum"].as_i64().is_some_and(|m| *i < m);
            let high = schema["maximum"].as_i64().is_some_and(|m| *i > m);
            if low || high {
                problems.push(Problem {
                    span: v.span,
                    message: format!(
                        "param `{name}` must be between {} and {}",
                        schema["minimum"], schema["maximum"]
                    ),
                    help: None,
                });
            }
        }
        ValueKind::Seq(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                problems.push(Problem {
                    span: v.span,
                    message: format!("param `{name}` needs at least {min} item(s)"),
                    help: None,
                });
            }
            if schema["items"].is_object() {
                for item in items {
                    check_value(&schema["items"], item, name, problems, how);
                }
            }
        }
        ValueKind::Map(entries) if schema["additionalProperties"].is_object() => {
            for (k, item) in entries {
                check_value(
                    &schema["additionalProperties"],
                    item,
                    &format!("{name}.{}", k.name),
                    problems,
                    how,
                );
            }
        }
        _ => {}
    }
}

fn type_fits(ty: &Json, v: &Value) -> bool {
    match ty {
        Json::String(t) => kind_fits(t, v),
        Json::Array(ts) => ts.iter().filter_map(Json::as_str).any(|t| kind_fits(t, v)),
        _ => true,
    }
}

fn kind_fits(ty: &str, v: &Value) -> bool {
    matches!(
        (ty, &v.kind),
        ("string", ValueKind::Str(_))
            | ("integer", ValueKind::Int(_))
            | ("number", ValueKind::Int(_) | ValueKind::Float(_))
            | ("boolean", ValueKind::Bool(_))
            | ("array", ValueKind::Seq(_))
            | ("object", ValueKind::Map(_))
            | ("null", ValueKind::Null)
    )
}

/// "a string", "a list of strings", "an integer"...
fn describe(schema: &Json) -> String {
    let one = |t: &str| match t {
        "array" => match &schema["items"]["type"] {
            Json::String(item) => format!("a list of {item}s"),
            Json::Array(_) => "a list of scalars".to_string(),
            _ => "a list".to_string(),
        },
        "object" => "a map".to_string(),
        "integer" => "an integer".to_string(),
        t => format!("a {t}"),
    };
    match &schema["type"] {
        Json::String(t) => one(t),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .map(one)
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value".to_string(),
    }
}

#[cfg(test)]
mod rendered_tests {
    use super::*;

    /// A rendered value is checked whatever it contains: text that looks like `${{` (from an
    /// input) does not skip the enum.
    #[test]
    fn a_rendered_value_with_braces_is_still_checked() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "state": { "type": "string", "enum": ["ready", "drain"] } }
        });
        let bad = serde_json::json!({ "state": "ready;set server x state maint ${{" });
        assert_eq!(check_rendered(&schema, &bad).len(), 1);
        let good = serde_json::json!({ "state": "drain" });
        assert!(check_rendered(&schema, &good).is_empty());
    }

    /// `oneOf` alternatives are whole sets of names; number bounds hold.
    #[test]
    fn one_of_needs_every_name_of_one_alternative_and_bounds_hold() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "dsn": { "type": "string" }, "primary": { "type": "string" },
                "standby": { "type": "string" },
                "weight": { "type": "integer", "minimum": 0, "maximum": 256 }
            },
            "oneOf": [ { "required": ["dsn"] }, { "required": ["primary", "standby"] } ]
        });
        let problems = |v: serde_json::Value| check_rendered(&schema, &v);
        assert_eq!(problems(serde_json::json!({ "primary": "a" })).len(), 1);
        assert!(problems(serde_json::json!({ "primary": "a", "standby": "b" })).is_empty());
        assert!(problems(serde_json::json!({ "dsn": "a" })).is_empty());
        assert_eq!(
            problems(serde_json::json!({ "dsn": "a", "primary": "a", "standby": "b" })).len(),
            1
        );
        assert_eq!(
            problems(serde_json::json!({ "dsn": "a", "weight": 300 })).len(),
            1
        );
        assert_eq!(
            problems(serde_json::json!({ "dsn": "a", "weight": -1 })).len(),
            1
        );
    }
}
