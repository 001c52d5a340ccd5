//! Compiled parameters: the `with:` tree with every string parsed into a [`Template`], and
//! `when:` conditions. The executor renders them just before a step starts.

use crate::runbook::{Value, ValueKind};

use super::{Expr, ExprError, Template, parse_template};

#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Template),
    Seq(Vec<Param>),
    Map(Vec<(String, Param)>),
}

/// `when:`: a literal, or an expression that decides at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Always(bool),
    Expr(Expr),
}

impl Param {
    /// Compiles every string leaf of `value`; all errors are reported, not just the first.
    pub fn compile(value: &Value, file_text: &str, errors: &mut Vec<ExprError>) -> Param {
        match &value.kind {
            ValueKind::Null => Param::Null,
            ValueKind::Bool(b) => Param::Bool(*b),
            ValueKind::Int(i) => Param::Int(*i),
            ValueKind::Float(f) => Param::Float(*f),
            ValueKind::Str(s) => match parse_template(s, value.span, file_text) {
                Ok(t) => Param::Str(t),
                Err(e) => {
                    errors.push(e);
                    Param::Null
                }
            },
            ValueKind::Seq(items) => Param::Seq(
                items
                    .iter()
                    .map(|v| Param::compile(v, file_text, errors))
                    .collect(),
            ),
            ValueKind::Map(entries) => Param::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), Param::compile(v, file_text, errors)))
                    .collect(),
            ),
        }
    }

    /// The same tree with each expression rewritten.
    pub fn map(&self, f: &mut dyn FnMut(&Expr) -> Result<Expr, String>) -> Result<Param, String> {
        Ok(match self {
            Param::Str(t) => Param::Str(t.map(f)?),
            Param::Seq(items) => {
                Param::Seq(items.iter().map(|p| p.map(f)).collect::<Result<_, _>>()?)
            }
            Param::Map(entries) => Param::Map(
                entries
                    .iter()
                    .map(|(k, p)| Ok((k.clone(), p.map(f)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// The tree as one expression that renders to the same value (a module input's value,
    /// substituted into the module's expressions).
    pub fn source(&self) -> String {
        match self {
            Param::Null => "none".into(),
            Param::Bool(b) => b.to_string(),
            Param::Int(i) => i.to_string(),
            Param::Float(f) => {
                serde_json::Number::from_f64(*f).map_or_else(|| "none".into(), |n| n.to_string())
            }
            Param::Str(t) => t.source(),
            Param::Seq(items) => {
                let items: Vec<String> = items.iter().map(Param::source).collect();
                format!("[{}]", items.join(", "))
            }
            Param::Map(entries) => {
                let entries: Vec<String> = entries
                    .iter()
                    .map(|(k, p)| {
                        format!("{}: {}", serde_json::Value::String(k.clone()), p.source())
                    })
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
        }
    }

    /// Every expression in the tree.
    pub fn exprs<'a>(&'a self, out: &mut Vec<&'a Expr>) {
        match self {
            Param::Str(t) => out.extend(t.exprs()),
            Param::Seq(items) => items.iter().for_each(|p| p.exprs(out)),
            Param::Map(entries) => entries.iter().for_each(|(_, p)| p.exprs(out)),
            _ => {}
        }
    }
}

impl Condition {
    /// `when: true`, `when: "${{ expr }}"`, or a bare expression `when: inputs.x == 'y'`.
    pub fn compile(value: &Value, file_text: &str) -> Result<Condition, ExprError> {
        match &value.kind {
            ValueKind::Bool(b) => Ok(Condition::Always(*b)),
            ValueKind::Str(s) => {
                let template = parse_template(s, value.span, file_text)?;
                if template.is_literal() {
                    return super::compile_expr(s.trim(), value.span).map(Condition::Expr);
                }
                match template.whole_expr() {
                    Some(e) => Ok(Condition::Expr(e.clone())),
                    None => Err(ExprError {
                        message: "`when` must be one expression, `${{ ... }}`, not text around it"
                            .into(),
                        span: value.span,
                    }),
                }
            }
            _ => Err(ExprError {
                message: format!(
                    "`when` must be a boolean or an expression, not {}",
                    value.a_type()
                ),
                span: value.span,
            }),
        }
    }

    pub fn expr(&self) -> Option<&Expr> {
        match self {
            Condition::Expr(e) => Some(e),
            Condition::Always(_) => None,
        }
    }
}
