//! Rendering `${{ }}` just before a step starts, over a context the executor builds (see
//! `exec::scope`): templates, `shell.run`'s quoted `script:`, conditions, and the values an
//! assertion read.

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value as Json;

use super::param::{Condition, Param};
use super::{self as expr, Expr, Ref, Template};

/// The expression environment of a run: fuel-limited, undefined values are errors.
pub fn environment() -> Environment<'static> {
    let mut env = expr::environment();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env
}

/// The environment of a session: `simulated` (a dry-run or a check) has only the outputs its
/// steps simulate: one it does not give is undefined and not an error, so `default(...)` still
/// stands in for it as in a real run, and what is left reads as null.
pub fn environment_for(simulated: bool) -> Environment<'static> {
    let mut env = environment();
    if simulated {
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
    }
    env
}

fn eval(env: &Environment, e: &Expr, ctx: &minijinja::Value) -> Result<minijinja::Value, String> {
    env.compile_expression(&e.source)
        .and_then(|c| c.eval(ctx))
        .map_err(|err| {
            let detail = err
                .detail()
                .map(str::to_string)
                .unwrap_or_else(|| err.kind().to_string());
            format!("`${{{{ {} }}}}`: {detail}", e.text)
        })
}

fn to_json(v: &minijinja::Value) -> Result<Json, String> {
    serde_json::to_value(v).map_err(|e| format!("cannot use the value: {e}"))
}

pub fn render_template(
    env: &Environment,
    t: &Template,
    ctx: &minijinja::Value,
) -> Result<Json, String> {
    if let Some(e) = t.whole_expr() {
        return to_json(&eval(env, e, ctx)?);
    }
    let mut out = String::new();
    for part in &t.parts {
        match part {
            expr::Part::Lit(s) => out.push_str(s),
            expr::Part::Expr(e) => out.push_str(&text_of(&eval(env, e, ctx)?)?),
        }
    }
    Ok(Json::String(out))
}

/// A value put into a string: a string as itself, anything else as JSON (`true`, `null`,
/// `[1,"a b"]`), as the tools a runbook calls read it.
fn text_of(v: &minijinja::Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) => Ok(s.to_string()),
        None => Ok(match to_json(v)? {
            Json::String(s) => s,
            other => other.to_string(),
        }),
    }
}

/// `shell.run`'s `script:`, each `${{ }}` quoted for where it stands, so that its value reaches
/// the shell as data, byte for byte (see [`super::script`]).
pub fn render_script(
    env: &Environment,
    t: &Template,
    ctx: &minijinja::Value,
) -> Result<Json, String> {
    let places = super::script::quoting(&t.parts);
    let mut places = places.into_iter();
    let mut out = String::new();
    for part in &t.parts {
        match part {
            expr::Part::Lit(s) => out.push_str(s),
            expr::Part::Expr(e) => {
                let quoting = places.next().and_then(Result::ok).ok_or_else(|| {
                    format!("`${{{{ {} }}}}` cannot be quoted safely here", e.text)
                })?;
                let text = text_of(&eval(env, e, ctx)?)?;
                out.push_str(
                    &super::script::quote(&text, quoting)
                        .map_err(|why| format!("`${{{{ {} }}}}`: {why}", e.text))?,
                );
            }
        }
    }
    Ok(Json::String(out))
}

/// A step's (or undo's) `with:`: as [`render_param`], with `shell.run`'s and `ssh.run`'s
/// `script` quoted.
pub fn render_with(
    env: &Environment,
    action: &crate::plan::ActionRef,
    p: &Param,
    ctx: &minijinja::Value,
) -> Result<Json, String> {
    let shell =
        action.builtin && crate::provider::catalog::runs_command(&action.provider, &action.action);
    match p {
        Param::Map(entries) if shell => Ok(Json::Object(
            entries
                .iter()
                .map(|(k, p)| {
                    let v = match p {
                        Param::Str(t) if k == "script" => render_script(env, t, ctx)?,
                        _ => render_param(env, p, ctx)?,
                    };
                    Ok((k.clone(), v))
                })
                .collect::<Result<_, String>>()?,
        )),
        _ => render_param(env, p, ctx),
    }
}

pub fn render_param(env: &Environment, p: &Param, ctx: &minijinja::Value) -> Result<Json, String> {
    Ok(match p {
        Param::Null => Json::Null,
        Param::Bool(b) => Json::Bool(*b),
        Param::Int(i) => Json::from(*i),
        Param::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Param::Str(t) => render_template(env, t, ctx)?,
        Param::Seq(items) => Json::Array(
            items
                .iter()
                .map(|p| render_param(env, p, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Param::Map(entries) => Json::Object(
            entries
                .iter()
                .map(|(k, p)| Ok((k.clone(), render_param(env, p, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
    })
}

pub fn eval_condition(
    env: &Environment,
    c: &Condition,
    ctx: &minijinja::Value,
) -> Result<bool, String> {
    match c {
        Condition::Always(b) => Ok(*b),
        Condition::Expr(e) => Ok(eval(env, e, ctx)?.is_true()),
    }
}

/// For a failed assertion: each value the expression read, `name = value`.
pub fn explain(env: &Environment, e: &Expr, ctx: &minijinja::Value) -> Vec<String> {
    let mut out = Vec::new();
    for r in &e.refs {
        let (shown, source) = match r {
            Ref::Input(n) => (format!("inputs.{n}"), format!("inputs.{n}")),
            Ref::Step { id, path } => {
                let tail: String = path.iter().map(|p| format!(".{p}")).collect();
                (
                    format!("steps.{id}{tail}"),
                    format!("steps.{}{tail}", expr::mangle(id)),
                )
            }
            Ref::Item => ("item".into(), "item".into()),
            Ref::Run(f) => (format!("run.{f}"), format!("run.{f}")),
            Ref::Unknown(_) => continue,
        };
        let value = env
            .compile_expression(&source)
            .and_then(|c| c.eval(ctx))
            .map(|v| to_json(&v).map(|j| j.to_string()).unwrap_or_else(|e| e))
            .unwrap_or_else(|_| "undefined".into());
        out.push(format!("{shown} = {value}"));
    }
    out
}
