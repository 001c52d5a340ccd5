//! The expression language, shared by compile and exec. This file parses: `${{ expr }}`
//! templates: splitting strings into literal and expression parts, compiling each
//! expression with minijinja, and listing what it refers to (`inputs.X`, `steps.ID...`, `item`,
//! `run.X`) so the compiler can check references and add edges before anything runs.
//!
//! Step ids may contain `-` (`check-lag`), which Jinja would read as subtraction. As in GitHub
//! Actions, `steps.check-lag` means the step: before compiling, every `steps.ID` is rewritten to
//! `steps.<mangled ID>`, a reversible identifier (see [`mangle`]). Render contexts use the same
//! mangled keys.

pub mod param;
pub mod render;
pub mod script;
pub mod types;

use std::sync::LazyLock;

use minijinja::Environment;

use crate::runbook::Span;

/// An expression environment with fuel, shared by compile-time checks and rendering.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(50_000));
    env.set_recursion_limit(64);
    env
}

static ENV: LazyLock<Environment<'static>> = LazyLock::new(environment);

/// A string with zero or more `${{ }}` parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Lit(String),
    Expr(Expr),
}

/// One compiled-checked expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    /// As the user wrote it, trimmed.
    pub text: String,
    /// Rewritten for minijinja (step ids mangled).
    pub source: String,
    pub span: Span,
    pub refs: Vec<Ref>,
}

/// Something an expression refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ref {
    Input(String),
    /// `steps.ID` followed by the rest of its attribute path (`outputs.KEY`, `status`, or
    /// nothing when the expression subscripts it).
    Step {
        id: String,
        path: Vec<String>,
    },
    Item,
    Run(String),
    /// Any other top-level name (an error unless it is a Jinja global).
    Unknown(String),
}

/// A problem found in a template; the caller turns it into a diagnostic.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    pub message: String,
    pub span: Span,
}

impl Template {
    /// Whether the whole string is one expression (`"${{ inputs.vms }}"`), which keeps its type.
    pub fn whole_expr(&self) -> Option<&Expr> {
        match self.parts.as_slice() {
            [Part::Expr(e)] => Some(e),
            _ => None,
        }
    }

    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.parts.iter().filter_map(|p| match p {
            Part::Expr(e) => Some(e),
            Part::Lit(_) => None,
        })
    }

    pub fn is_literal(&self) -> bool {
        self.exprs().next().is_none()
    }
}

/// Splits and compiles `value`, whose scalar sits at `span` of `file_text`.
pub fn parse_template(value: &str, span: Span, file_text: &str) -> Result<Template, ExprError> {
    let raw = file_text
        .get(span.offset..span.offset + span.len)
        .unwrap_or("");
    let mut parts = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${{") {
        if start > 0 {
            parts.push(Part::Lit(rest[..start].to_string()));
        }
        let after = &rest[start + 3..];
        let Some(end) = find_close(after) else {
            return Err(ExprError {
                message: "unterminated `${{`: expected `}}`".into(),
                span: sub_span(raw, span, &rest[start..]),
            });
        };
        let text = after[..end].trim();
        let span = sub_span(raw, span, &rest[start..start + 3 + end + 2]);
        if text.is_empty() {
            return Err(ExprError {
                message: "empty expression `${{ }}`".into(),
                span,
            });
        }
        parts.push(Part::Expr(compile_expr(text, span)?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Lit(rest.to_string()));
    }
    Ok(Template { parts })
}

/// Compiles a bare expression (`when: inputs.reason != 'drill'`).
pub fn compile_expr(text: &str, span: Span) -> Result<Expr, ExprError> {
    from_source(text, rewrite_step_ids(text), span).map_err(|e| ExprError {
        message: format!("invalid expression `{text}`: {}", detail(&e)),
        span,
    })
}

fn detail(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => d.to_string(),
        None => e.kind().to_string(),
    }
}

fn classify(name: &str) -> Ref {
    let mut parts = name.split('.');
    let head = parts.next().unwrap_or_default();
    let rest: Vec<String> = parts.map(str::to_string).collect();
    match head {
        "inputs" if !rest.is_empty() => Ref::Input(rest[0].clone()),
        "steps" if !rest.is_empty() => Ref::Step {
            id: demangle(&rest[0]).unwrap_or_else(|| rest[0].clone()),
            path: rest[1..].to_vec(),
        },
        "item" => Ref::Item,
        "run" if !rest.is_empty() => Ref::Run(rest[0].clone()),
        _ => Ref::Unknown(name.to_string()),
    }
}

/// The end of an expression: the first `}}` outside a string literal.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(_) if b == b'\\' => i += 1,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'\'' || b == b'"' => quote = Some(b),
            None if b == b'}' && bytes.get(i + 1) == Some(&b'}') => return Some(i),
            None => {}
        }
        i += 1;
    }
    None
}

/// The span of `piece` inside the scalar at `span`, when the raw source shows it verbatim
/// (no escapes or folding); otherwise the whole scalar.
fn sub_span(raw: &str, span: Span, piece: &str) -> Span {
    match raw.find(piece) {
        Some(i) => Span::new(span.offset + i, piece.len()),
        None => span,
    }
}

/// Copies `text` to a new string, offering `at` every position outside string literals that
/// starts a name (not preceded by an identifier character or `.`); `at` may return what to write
/// instead and where to go on from. String literals, escapes included, are copied as they are.
fn rewrite_names(text: &str, mut at: impl FnMut(usize) -> Option<(String, usize)>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 16);
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' && i + 1 < bytes.len() {
                // The backslash and the whole character it escapes (which may be multi-byte).
                let escaped = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + 1 + escaped]);
                i += 1 + escaped;
                continue;
            }
            if b == q {
                quote = None;
            }
        } else if b == b'\'' || b == b'"' {
            quote = Some(b);
        } else if (i == 0 || !is_ident_byte(bytes[i - 1]) && bytes[i - 1] != b'.')
            && let Some((replacement, next)) = at(i)
        {
            out.push_str(&replacement);
            i = next;
            continue;
        }
        // Push the whole (possibly multi-byte) character.
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// `steps.check-lag.outputs` -> `steps.s_check_hlag.outputs`, outside string literals.
fn rewrite_step_ids(text: &str) -> String {
    rewrite_names(text, |i| {
        let id_start = i + text[i..].strip_prefix("steps.").map(|_| "steps.".len())?;
        let id_len = text[id_start..]
            .bytes()
            .take_while(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
            .count();
        (id_len > 0).then(|| {
            let id = &text[id_start..id_start + id_len];
            (format!("steps.{}", mangle(id)), id_start + id_len)
        })
    })
}

/// A reference found by [`rewrite`] in an expression's compiled source.
#[derive(Debug, PartialEq, Eq)]
pub enum Token<'a> {
    /// `inputs.NAME`
    Input(&'a str),
    /// `steps.ID`, and `KEY` when followed by `.outputs.KEY`.
    Step { id: String, output: Option<&'a str> },
}

/// What [`rewrite`] does with a reference.
pub enum Rewrite {
    Keep,
    /// A step reference to another id (`wait` -> `drain-web.wait`); the rest of the path stays.
    Rename(String),
    /// The whole reference (`inputs.NAME`, or `steps.ID.outputs.KEY`) becomes this expression
    /// source, parenthesized.
    Replace(String),
}

/// Inlining a module: rewrites the references of `e` as `f` says, then lists the references
/// of the result again. The user's text (shown in messages) and span stay those of `e`.
pub fn rewrite(e: &Expr, f: &mut dyn FnMut(&Token) -> Rewrite) -> Result<Expr, String> {
    let text = e.source.as_str();
    let ident_len = |from: usize| {
        text[from..]
            .bytes()
            .take_while(|&c| is_ident_byte(c))
            .count()
    };
    let source = rewrite_names(text, |i| {
        if let Some(rest) = text[i..].strip_prefix("inputs.") {
            let start = text.len() - rest.len();
            let end = start + ident_len(start);
            return match f(&Token::Input(&text[start..end])) {
                Rewrite::Replace(source) if end > start => Some((format!("({source})"), end)),
                _ => None,
            };
        }
        let start = i + text[i..].strip_prefix("steps.").map(|_| "steps.".len())?;
        let after = start + ident_len(start);
        let id = demangle(&text[start..after])?;
        let key_start = after + ".outputs.".len();
        let key_end = if text[after..].starts_with(".outputs.") {
            key_start + ident_len(key_start)
        } else {
            key_start
        };
        let output = (key_end > key_start).then(|| &text[key_start..key_end]);
        match f(&Token::Step { id, output }) {
            Rewrite::Keep => None,
            Rewrite::Rename(new_id) => Some((format!("steps.{}", mangle(&new_id)), after)),
            Rewrite::Replace(source) if output.is_some() => Some((format!("({source})"), key_end)),
            Rewrite::Replace(_) => None,
        }
    });
    from_source(&e.text, source, e.span).map_err(|err| format!("`{}`: {}", e.text, detail(&err)))
}

/// An expression whose source is already rewritten (step ids mangled), with its references.
fn from_source(text: &str, source: String, span: Span) -> Result<Expr, minijinja::Error> {
    let compiled = ENV.compile_expression(&source)?;
    let mut names: Vec<String> = compiled.undeclared_variables(true).into_iter().collect();
    names.sort();
    let refs = names.iter().map(|n| classify(n)).collect();
    Ok(Expr {
        text: text.to_string(),
        source,
        span,
        refs,
    })
}

/// `a and b` of two conditions' expressions (an include's `when` over each module step's own).
pub fn and(a: &Expr, b: &Expr) -> Result<Expr, String> {
    from_source(
        &format!("({}) and ({})", a.text, b.text),
        format!("({}) and ({})", a.source, b.source),
        b.span,
    )
    .map_err(|err| detail(&err))
}

/// A JSON value as an expression that evaluates to it.
pub fn json_source(value: &serde_json::Value) -> String {
    use serde_json::Value as Json;
    match value {
        Json::Null => "none".into(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(_) => value.to_string(),
        Json::Array(items) => {
            let items: Vec<String> = items.iter().map(json_source).collect();
            format!("[{}]", items.join(", "))
        }
        Json::Object(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}: {}", Json::String(k.clone()), json_source(v)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
    }
}

impl Template {
    /// The template as one expression: a whole expression keeps its type, text around
    /// expressions concatenates (`~`) as rendering does.
    pub fn source(&self) -> String {
        if let Some(e) = self.whole_expr() {
            return format!("({})", e.source);
        }
        let parts: Vec<String> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => serde_json::Value::String(s.clone()).to_string(),
                Part::Expr(e) => format!("({})", e.source),
            })
            .collect();
        match parts.len() {
            0 => "\"\"".into(),
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => format!("({})", parts.join(" ~ ")),
        }
    }

    /// The same template with each expression rewritten.
    pub fn map(
        &self,
        f: &mut dyn FnMut(&Expr) -> Result<Expr, String>,
    ) -> Result<Template, String> {
        let parts = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => Ok(Part::Lit(s.clone())),
                Part::Expr(e) => f(e).map(Part::Expr),
            })
            .collect::<Result<_, _>>()?;
        Ok(Template { parts })
    }
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A step id as a Jinja identifier: `s_` + the id with `_` doubled, `-` as `_h` and `.` (the
/// separator of a module's prefix, `drain-web.wait`) as `_d`.
pub fn mangle(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 4);
    out.push_str("s_");
    for c in id.chars() {
        match c {
            '_' => out.push_str("__"),
            '-' => out.push_str("_h"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`mangle`]; `None` for names it did not produce.
pub fn demangle(name: &str) -> Option<String> {
    let body = name.strip_prefix("s_")?;
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '_' {
            match chars.next()? {
                '_' => out.push('_'),
                'h' => out.push('-'),
                'd' => out.push('.'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(text: &str) -> Vec<Ref> {
        compile_expr(text, Span::default()).unwrap().refs
    }

    #[test]
    fn mangling_round_trips() {
        for id in ["check-lag", "a_b", "a-_b", "1st", "x"] {
            assert_eq!(demangle(&mangle(id)).as_deref(), Some(id));
        }
        assert_ne!(mangle("a-b"), mangle("a_hb"));
    }

    #[test]
    fn finds_references() {
        assert_eq!(
            refs("steps.check-lag.outputs.lag > inputs.max and item != run.id"),
            vec![
                Ref::Input("max".into()),
                Ref::Item,
                Ref::Run("id".into()),
                Ref::Step {
                    id: "check-lag".into(),
                    path: vec!["outputs".into(), "lag".into()]
                },
            ]
        );
    }

    #[test]
    fn string_literals_are_not_rewritten() {
        let e = compile_expr("'steps.a-b' ~ steps.a-b.status", Span::default()).unwrap();
        assert_eq!(e.source, "'steps.a-b' ~ steps.s_a_hb.status");
    }

    #[test]
    fn an_escaped_multibyte_character_in_a_string_literal() {
        // Found by the `expression` fuzz target: a backslash before a 2-byte character.
        let text = "${{ j\", \\ joi\\\u{5d4}l \\ joiBBBBB\"\" \") }}";
        let _ = parse_template(text, Span::default(), text);
        assert_eq!(
            rewrite_step_ids("'\\\u{5d4}' ~ steps.a-b"),
            "'\\\u{5d4}' ~ steps.s_a_hb"
        );
    }

    #[test]
    fn rewrite_substitutes_inputs_renames_steps_and_reads_outputs() {
        let e = compile_expr(
            "inputs.server ~ steps.wait.outputs.x ~ 'inputs.server' ~ steps.mod.outputs.k ~ run.id",
            Span::default(),
        )
        .unwrap();
        let out = rewrite(&e, &mut |t| match t {
            Token::Input("server") => Rewrite::Replace("'web-1'".into()),
            Token::Step {
                id,
                output: Some(k),
            } if id == "mod" => {
                Rewrite::Replace(format!("steps.{}.outputs.{k}", mangle("mod.inner")))
            }
            Token::Step { id, .. } => Rewrite::Rename(format!("m.{id}")),
            Token::Input(_) => Rewrite::Keep,
        })
        .unwrap();
        assert_eq!(
            out.source,
            "('web-1') ~ steps.s_m_dwait.outputs.x ~ 'inputs.server' ~ (steps.s_mod_dinner.outputs.k) ~ run.id"
        );
        assert_eq!(out.text, e.text);
        assert_eq!(
            out.refs,
            vec![
                Ref::Run("id".into()),
                Ref::Step {
                    id: "m.wait".into(),
                    path: vec!["outputs".into(), "x".into()]
                },
                Ref::Step {
                    id: "mod.inner".into(),
                    path: vec!["outputs".into(), "k".into()]
                },
            ]
        );
    }

    #[test]
    fn sources_evaluate_to_the_values_they_stand_for() {
        let value = serde_json::json!({
            "s": "quote \" back\\slash \n tab\t unicode é \u{1}",
            "n": [1, 2.5, -3, true, null],
            "m": { "k-ey": "v" }
        });
        let source = json_source(&value);
        let got = ENV.compile_expression(&source).unwrap().eval(()).unwrap();
        assert_eq!(serde_json::to_value(&got).unwrap(), value);
        let t = parse_template("a ${{ 1 + 1 }} \"b\"", Span::default(), "").unwrap();
        let got = ENV
            .compile_expression(&t.source())
            .unwrap()
            .eval(())
            .unwrap();
        assert_eq!(got.to_string(), "a 2 \"b\"");
        let whole = parse_template("${{ [1, 2] }}", Span::default(), "").unwrap();
        let got = ENV
            .compile_expression(&whole.source())
            .unwrap()
            .eval(())
            .unwrap();
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::json!([1, 2])
        );
    }

    #[test]
    fn splits_templates() {
        let text = "x: \"Promote ${{ inputs.db }} now\"";
        let t = parse_template("Promote ${{ inputs.db }} now", Span::new(3, 30), text).unwrap();
        assert_eq!(t.parts.len(), 3);
        let e = t.exprs().next().unwrap();
        assert_eq!(
            &text[e.span.offset..e.span.offset + e.span.len],
            "${{ inputs.db }}"
        );
        assert!(parse_template("${{ 1 + }}", Span::default(), "").is_err());
        assert!(parse_template("${{ 1", Span::default(), "").is_err());
        assert!(parse_template("a ${{ '}}' }} b", Span::default(), "").is_ok());
    }
}
