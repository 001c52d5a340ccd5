//! A step's `with:` checked against its action's parameter schema: JSON Schema (draft 2020-12)
//! through the `jsonschema` crate, each violation a sentence at the span of the param it is
//! about. At validate, values that are `${{ }}` expressions (and everything inside them) are
//! not judged: they are checked when rendered, before the step runs, by the same schema.
//!
//! Messages never quote the value that broke the rule (it may be a rendered secret): they name
//! the param and the rule.

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use serde_json::Value as Json;

use crate::provider::catalog::ActionSpec;
use crate::runbook::{Span, Value, ValueKind};

use crate::diag::suggest;

pub struct Problem {
    pub span: Span,
    pub message: String,
    pub help: Option<String>,
}

/// Checks `with` (absent: an empty map) against the params schema of `spec`. `at` is where to
/// point when a param is missing.
pub fn check(spec: &ActionSpec, with: Option<&Value>, at: Span) -> Vec<Problem> {
    check_params(spec, with, at, Unrendered::Skipped)
}

/// Checks rendered params (JSON) against the params schema of `spec`; the problems as
/// sentences.
pub fn check_rendered(spec: &ActionSpec, params: &Json) -> Vec<String> {
    // Before every step: the usual answer, valid, without building a spanned copy to explain.
    if spec.validator().is_ok_and(|v| v.is_valid(params)) {
        return Vec::new();
    }
    let value = Value::from_json(params);
    check_params(spec, Some(&value), Span::default(), Unrendered::Checked)
        .into_iter()
        .map(|p| p.message)
        .collect()
}

/// Whether a `${{ }}` in a value is an expression still to be rendered (at validate: its
/// value is checked when rendered), or text (rendered params: an input's value that happens to
/// contain `${{` is checked like any other, never let through).
#[derive(Clone, Copy, PartialEq)]
enum Unrendered {
    Skipped,
    Checked,
}

fn check_params(
    spec: &ActionSpec,
    with: Option<&Value>,
    at: Span,
    how: Unrendered,
) -> Vec<Problem> {
    let empty = Value {
        kind: ValueKind::Map(Vec::new()),
        span: at,
    };
    let with = match with {
        None => &empty,
        Some(w) if matches!(w.kind, ValueKind::Null) => &empty,
        Some(w) if matches!(w.kind, ValueKind::Map(_)) => w,
        Some(w) => {
            return vec![Problem {
                span: w.span,
                message: format!("`with` must be a map of params, not {}", w.a_type()),
                help: None,
            }];
        }
    };
    let validator = match spec.validator() {
        Ok(v) => v,
        Err(e) => {
            return vec![Problem {
                span: at,
                message: format!("{} cannot be checked: {e}", spec.name()),
                help: None,
            }];
        }
    };
    let instance = with.to_json();
    let mut problems = Vec::new();
    for err in validator.iter_errors(&instance) {
        explain(&err, spec, with, how, &mut problems);
    }
    problems
}

/// The problems one error stands for (none when it waits for an expression's value).
fn explain(
    err: &jsonschema::ValidationError,
    spec: &ActionSpec,
    with: &Value,
    how: Unrendered,
    problems: &mut Vec<Problem>,
) {
    let subschema = parent_schema(&spec.params, err.schema_path().as_str());
    let presence = subschema.is_some_and(presence_only);
    if how == Unrendered::Skipped && touches_expression(&spec.params, with, err, presence) {
        return;
    }
    let path = segments(err.instance_path());
    let (value, name) = locate(with, &path);
    // A rendered value may hold a secret map, whose keys are part of the secret: past the
    // param's own name, no key of a rendered value is named.
    let hide_keys = how == Unrendered::Checked && path.len() > 1;
    let name = match (&path[..], name) {
        ([Segment::Key(top), ..], Some(_)) if hide_keys => Some(top.clone()),
        (_, name) => name,
    };
    let problem = |message: String| Problem {
        span: value.span,
        message,
        help: None,
    };
    let subject = match &name {
        None => "`with`".to_string(),
        Some(n) if hide_keys => format!("a value inside param `{n}`"),
        Some(n) => format!("param `{n}`"),
    };
    match err.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            let known: Vec<&str> = subschema
                .and_then(|s| s["properties"].as_object())
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            if how == Unrendered::Checked && name.is_some() {
                problems.push(problem(format!(
                    "{subject} has a key its schema does not allow"
                )));
                return;
            }
            for key in unexpected {
                let span = key_span(value, key).unwrap_or(value.span);
                let help = match suggest(key, known.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => "this map takes no keys".to_string(),
                    None => format!("known: {}", known.join(", ")),
                };
                let message = match &name {
                    None => format!("unknown param `{key}`"),
                    Some(n) => format!("unknown key `{key}` in param `{n}`"),
                };
                problems.push(Problem {
                    span,
                    message,
                    help: Some(help),
                });
            }
        }
        ValidationErrorKind::Required { property } => {
            let property = property.as_str().unwrap_or_default();
            problems.push(problem(match &name {
                None => format!("missing required param `{property}`"),
                // The key is a name the schema declares, not text from the value.
                Some(_) if hide_keys => format!("{subject} needs key `{property}`"),
                Some(n) => format!("param `{n}` needs key `{property}`"),
            }));
        }
        ValidationErrorKind::OneOfNotValid { .. }
        | ValidationErrorKind::OneOfMultipleValid { .. }
            if name.is_none() && presence =>
        {
            let schema = subschema.expect("presence_only saw it");
            let many = matches!(err.kind(), ValidationErrorKind::OneOfMultipleValid { .. });
            problems.push(one_of_names(schema, with, many));
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            // The alternatives of the value's own type say what is wrong inside it; when
            // none is of its type, the types are what to say.
            let keyword = if matches!(err.kind(), ValidationErrorKind::AnyOf { .. }) {
                "anyOf"
            } else {
                "oneOf"
            };
            let alternatives = subschema
                .and_then(|s| s[keyword].as_array())
                .map(Vec::as_slice)
                .unwrap_or_default();
            let fitting: Vec<usize> = (0..alternatives.len())
                .filter(|&i| type_fits(&alternatives[i]["type"], value))
                .collect();
            match fitting.as_slice() {
                [] if !alternatives.is_empty() => {
                    let kinds: Vec<String> = alternatives.iter().map(describe).collect();
                    problems.push(problem(format!(
                        "{subject} must be {}, not {}",
                        kinds.join(" or "),
                        value.a_type()
                    )));
                }
                [i] if context.get(*i).is_some_and(|c| !c.is_empty()) => {
                    for e in &context[*i] {
                        explain(e, spec, with, how, problems);
                    }
                }
                _ => problems.push(problem(rule(err.kind(), &subject, subschema, value))),
            }
        }
        kind => problems.push(problem(rule(kind, &subject, subschema, value))),
    }
}

fn type_fits(ty: &Json, v: &Value) -> bool {
    let fits = |t: &str| {
        matches!(
            (t, &v.kind),
            ("string", ValueKind::Str(_))
                | ("integer", ValueKind::Int(_))
                | ("number", ValueKind::Int(_) | ValueKind::Float(_))
                | ("boolean", ValueKind::Bool(_))
                | ("array", ValueKind::Seq(_))
                | ("object", ValueKind::Map(_))
                | ("null", ValueKind::Null)
        )
    };
    match ty {
        Json::String(t) => fits(t),
        Json::Array(ts) => ts.iter().filter_map(Json::as_str).any(fits),
        _ => true,
    }
}

/// A schema's type in words: "an integer", "a list of integers", "a string or a boolean".
fn describe(schema: &Json) -> String {
    match &schema["type"] {
        Json::String(t) => one_type(t, Some(schema)),
        Json::Array(ts) => ts
            .iter()
            .filter_map(Json::as_str)
            .map(|t| one_type(t, Some(schema)))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "a value of another form".to_string(),
    }
}

/// What broke, as a sentence about `subject` (never quoting its value).
fn rule(kind: &ValidationErrorKind, subject: &str, schema: Option<&Json>, v: &Value) -> String {
    use ValidationErrorKind as K;
    let list = |options: &Json| {
        options
            .as_array()
            .map(|o| o.iter().map(Json::to_string).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    match kind {
        K::Type { kind } => {
            let wanted = match kind {
                TypeKind::Single(t) => one_type(&t.to_string(), schema),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| one_type(&t.to_string(), schema))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            format!("{subject} must be {wanted}, not {}", v.a_type())
        }
        K::Enum { options } => format!("{subject} must be one of {}", list(options)),
        K::Constant { expected_value } => format!("{subject} must be {expected_value}"),
        K::Minimum { limit } => format!("{subject} must be at least {limit}"),
        K::Maximum { limit } => format!("{subject} must be at most {limit}"),
        K::ExclusiveMinimum { limit } => format!("{subject} must be more than {limit}"),
        K::ExclusiveMaximum { limit } => format!("{subject} must be less than {limit}"),
        K::MultipleOf { multiple_of } => format!("{subject} must be a multiple of {multiple_of}"),
        K::MinLength { limit } => format!("{subject} must be at least {limit} character(s) long"),
        K::MaxLength { limit } => format!("{subject} must be at most {limit} character(s) long"),
        K::Pattern { pattern } => format!("{subject} must match the pattern `{pattern}`"),
        K::Format { format } => format!("{subject} must be a valid {format}"),
        K::MinItems { limit } => format!("{subject} needs at least {limit} item(s)"),
        K::MaxItems { limit } => format!("{subject} takes at most {limit} item(s)"),
        K::UniqueItems => format!("{subject} must not repeat an item"),
        K::MinProperties { limit } => format!("{subject} needs at least {limit} key(s)"),
        K::MaxProperties { limit } => format!("{subject} takes at most {limit} key(s)"),
        K::AnyOf { .. } => format!("{subject} fits none of the forms its schema allows (anyOf)"),
        K::OneOfNotValid { .. } => {
            format!("{subject} fits none of the forms its schema allows (oneOf)")
        }
        K::OneOfMultipleValid { .. } => {
            format!("{subject} fits more than one of the forms its schema allows (oneOf)")
        }
        K::Not { .. } => format!("{subject} has a form its schema forbids (not)"),
        K::FalseSchema => format!("{subject} is not allowed here"),
        K::AdditionalItems { limit } => format!("{subject} takes at most {limit} item(s)"),
        K::UnevaluatedItems { .. } => format!("{subject} has items its schema does not allow"),
        K::Contains => format!("{subject} has no item of the form its schema asks for"),
        K::PropertyNames { .. } => format!("{subject} has a key its schema does not allow"),
        K::ContentEncoding { content_encoding } => {
            format!("{subject} is not valid {content_encoding}")
        }
        K::ContentMediaType { content_media_type } => {
            format!("{subject} is not valid {content_media_type}")
        }
        K::Custom { message, .. } => format!("{subject}: {message}"),
        // The schema itself is at fault (a regex too costly, a reference that does not
        // resolve): say so rather than blame the value.
        K::BacktrackLimitExceeded { .. } | K::RegexEngineFailure { .. } => {
            format!("{subject} could not be checked: the schema's pattern is too costly")
        }
        K::Referencing(e) => format!("{subject} could not be checked: {e}"),
        _ => format!("{subject} does not satisfy its schema"),
    }
}

/// "a string", "a list of strings", "an integer"...
fn one_type(ty: &str, schema: Option<&Json>) -> String {
    match ty {
        "array" => match schema.map(|s| &s["items"]["type"]) {
            Some(Json::String(item)) => format!("a list of {item}s"),
            Some(Json::Array(_)) => "a list of scalars".to_string(),
            _ => "a list".to_string(),
        },
        "object" => "a map".to_string(),
        "integer" => "an integer".to_string(),
        t => format!("a {t}"),
    }
}

/// Whether a `oneOf` is only about which params are present (`[{required: [dsn]},
/// {required: [primary, standby]}]`): then the names are what to say.
fn presence_only(schema: &Json) -> bool {
    schema["oneOf"].as_array().is_some_and(|alternatives| {
        alternatives.iter().all(|a| {
            a.as_object()
                .is_some_and(|o| o.keys().all(|k| k == "required"))
        })
    })
}

/// "needs `dsn`, or `primary` and `standby`" (with what a partial alternative misses), or
/// "give only one of ...".
fn one_of_names(schema: &Json, with: &Value, many: bool) -> Problem {
    let has = |name: &str| key_span(with, name).is_some();
    let sets: Vec<Vec<&str>> = schema["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            a["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default()
        })
        .collect();
    let names = |set: &Vec<&str>| {
        set.iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    let separator = if sets.iter().any(|s| s.len() > 1) {
        ", or "
    } else {
        " or "
    };
    let list = sets.iter().map(names).collect::<Vec<_>>().join(separator);
    if many {
        return Problem {
            span: with.span,
            message: format!("give only one of {list}"),
            help: None,
        };
    }
    let partial: Vec<String> = sets
        .iter()
        .filter(|set| set.iter().any(|n| has(n)) && !set.iter().all(|n| has(n)))
        .map(|set| {
            let missing: Vec<&str> = set.iter().copied().filter(|n| !has(n)).collect();
            format!("missing {}", names(&missing))
        })
        .collect();
    Problem {
        span: with.span,
        message: format!("needs {list}"),
        help: (!partial.is_empty()).then(|| partial.join("; ")),
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

fn segments(location: &jsonschema::paths::Location) -> Vec<Segment> {
    location
        .iter()
        .map(|s| match s {
            LocationSegment::Property(p) => Segment::Key(p.into_owned()),
            LocationSegment::Index(i) => Segment::Index(i),
        })
        .collect()
}

/// The value at `path` inside `with` (as far as it goes), and its name: `None` for `with`
/// itself, else `port`, `env.PGHOST`, `argv[2]`.
fn locate<'v>(with: &'v Value, path: &[Segment]) -> (&'v Value, Option<String>) {
    let mut value = with;
    let mut name: Option<String> = None;
    for segment in path {
        let next = match (segment, &value.kind) {
            (Segment::Key(k), ValueKind::Map(entries)) => entries
                .iter()
                .find(|(key, _)| key.name == *k)
                .map(|(_, v)| v),
            (Segment::Index(i), ValueKind::Seq(items)) => items.get(*i),
            _ => None,
        };
        let Some(next) = next else { break };
        name = Some(match (name, segment) {
            (None, Segment::Key(k)) => k.clone(),
            (Some(n), Segment::Key(k)) => format!("{n}.{k}"),
            (n, Segment::Index(i)) => format!("{}[{i}]", n.unwrap_or_default()),
        });
        value = next;
    }
    (value, name)
}

fn key_span(map: &Value, key: &str) -> Option<Span> {
    match &map.kind {
        ValueKind::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(k, _)| k.span),
        _ => None,
    }
}

fn is_expression(v: &Value) -> bool {
    v.as_str().is_some_and(|s| s.contains("${{"))
}

fn contains_expression(v: &Value) -> bool {
    match &v.kind {
        ValueKind::Seq(items) => items.iter().any(contains_expression),
        ValueKind::Map(entries) => entries.iter().any(|(_, v)| contains_expression(v)),
        _ => is_expression(v),
    }
}

/// Whether an error may be about a value not known until run time: it is located at or inside
/// an expression, or it is a combination (`oneOf`, `anyOf`, `not`...) over a value that holds
/// one (which alternative fits can depend on it) — unless the combination only judges which
/// names are present (`presence`) —, or a rule that holds or not by which branch an `if`, a
/// `oneOf`... took (`then`/`else`, `unevaluatedProperties`) when a name the branch reads is an
/// expression. A literal mistake beside an unrelated expression is still reported.
fn touches_expression(
    root: &Json,
    with: &Value,
    err: &jsonschema::ValidationError,
    presence: bool,
) -> bool {
    let (value, _) = locate(with, &segments(err.instance_path()));
    if is_expression(value) {
        return true;
    }
    let combination = matches!(
        err.kind(),
        ValidationErrorKind::AnyOf { .. }
            | ValidationErrorKind::OneOfNotValid { .. }
            | ValidationErrorKind::OneOfMultipleValid { .. }
            | ValidationErrorKind::Not { .. }
            | ValidationErrorKind::Contains
            | ValidationErrorKind::UniqueItems
            | ValidationErrorKind::Constant { .. }
            | ValidationErrorKind::Enum { .. }
    );
    if combination && !presence && contains_expression(value) {
        return true;
    }
    let schema_path = err.schema_path().as_str();
    let segments: Vec<&str> = schema_path.split('/').collect();
    // The schema whose branches decide, and the branches' keywords.
    let deciding = if matches!(
        err.kind(),
        ValidationErrorKind::UnevaluatedProperties { .. }
            | ValidationErrorKind::UnevaluatedItems { .. }
    ) {
        Some((parent_schema(root, schema_path), BRANCHES))
    } else {
        segments
            .iter()
            .rposition(|s| matches!(*s, "then" | "else" | "if"))
            .map(|i| (root.pointer(&segments[..i].join("/")), &["if"][..]))
    };
    let Some((level, keywords)) = deciding else {
        return false;
    };
    // Where the instance object of that level holds expressions.
    let keys_with_expressions: Vec<&str> = match &value.kind {
        ValueKind::Map(entries) => entries
            .iter()
            .filter(|(_, v)| contains_expression(v))
            .map(|(k, _)| k.name.as_str())
            .collect(),
        _ => Vec::new(),
    };
    if keys_with_expressions.is_empty() {
        return false;
    }
    let Some(level) = level.filter(|l| l.is_object()) else {
        return true; // reached through a `$ref`: not known here, so not judged
    };
    let mut read = Vec::new();
    let known = keywords
        .iter()
        .filter_map(|k| level.get(*k))
        .all(|branch| names_read(branch, &mut read));
    !known || keys_with_expressions.iter().any(|k| read.contains(k))
}

/// The keywords whose branches decide which properties count as evaluated.
const BRANCHES: &[&str] = &["if", "oneOf", "anyOf", "allOf", "dependentSchemas"];

/// The property names a branch reads at its own level (into `read`); false when it refers
/// elsewhere (`$ref`) and cannot be known here.
fn names_read<'s>(schema: &'s Json, read: &mut Vec<&'s str>) -> bool {
    match schema {
        Json::Array(items) => items.iter().all(|i| names_read(i, read)),
        Json::Object(map) => {
            if map.contains_key("$ref") || map.contains_key("$dynamicRef") {
                return false;
            }
            for key in ["properties", "dependentRequired", "dependentSchemas"] {
                if let Some(Json::Object(names)) = map.get(key) {
                    read.extend(names.keys().map(String::as_str));
                }
            }
            if let Some(Json::Array(names)) = map.get("required") {
                read.extend(names.iter().filter_map(Json::as_str));
            }
            ["allOf", "anyOf", "oneOf", "not", "if", "then", "else"]
                .iter()
                .filter_map(|k| map.get(*k))
                .all(|b| names_read(b, read))
        }
        _ => true,
    }
}

/// How many schema nodes a params schema may expand to, its references followed (each path
/// counted, a reference back to a schema already on the path not followed again), and how
/// deep. What checking a value costs grows with this, so a schema of `anyOf` over references
/// that double at each level (2^40 paths from a few lines) is refused when its plugin is
/// described, instead of taking minutes and gigabytes at validate and before each step.
pub const MAX_SCHEMA_NODES: usize = 50_000;
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// Why `schema` is too costly to check, or references what ripcord does not follow.
pub fn too_complex(schema: &Json) -> Option<String> {
    let mut anchors = std::collections::HashMap::new();
    collect_anchors(schema, &mut anchors);
    let mut walk = Walk {
        root: schema,
        anchors,
        nodes: 0,
        path: Vec::new(),
    };
    walk.visit(schema, 0).err()
}

fn collect_anchors<'s>(node: &'s Json, anchors: &mut std::collections::HashMap<&'s str, &'s Json>) {
    match node {
        Json::Object(map) => {
            for key in ["$anchor", "$dynamicAnchor"] {
                if let Some(Json::String(name)) = map.get(key) {
                    anchors.insert(name.as_str(), node);
                }
            }
            for (k, v) in map {
                if !DATA_KEYWORDS.contains(&k.as_str()) {
                    collect_anchors(v, anchors);
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| collect_anchors(v, anchors)),
        _ => {}
    }
}

/// Keywords whose values are data, not schemas (a `$ref` inside a `const` is text).
const DATA_KEYWORDS: &[&str] = &["const", "enum", "default", "examples"];

/// Keywords not walked for the cost beside the data ones: definitions (reached through their
/// `$ref`s) and words for people.
const NOT_WALKED: &[&str] = &["$defs", "definitions", "description", "title", "$comment"];

struct Walk<'s> {
    root: &'s Json,
    anchors: std::collections::HashMap<&'s str, &'s Json>,
    nodes: usize,
    /// The reference targets being expanded, outermost first.
    path: Vec<*const Json>,
}

impl<'s> Walk<'s> {
    fn visit(&mut self, node: &'s Json, depth: usize) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_SCHEMA_NODES {
            return Err(format!(
                "its params schema expands to more than {MAX_SCHEMA_NODES} nodes with its \
                 references followed: too costly to check"
            ));
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "its params schema nests deeper than {MAX_SCHEMA_DEPTH} with its references \
                 followed"
            ));
        }
        match node {
            Json::Object(map) => {
                for (k, v) in map {
                    if DATA_KEYWORDS.contains(&k.as_str()) || NOT_WALKED.contains(&k.as_str()) {
                        continue;
                    }
                    if matches!(k.as_str(), "$ref" | "$dynamicRef" | "$recursiveRef") {
                        let Json::String(target) = v else { continue };
                        let resolved = self.resolve(target).ok_or_else(|| {
                            format!(
                                "its params schema has `{k}: {target}`, which is not a \
                                 reference within the schema (`#`, `#/...` or `#anchor`)"
                            )
                        })?;
                        let at = resolved as *const Json;
                        if self.path.contains(&at) {
                            continue; // recursion: checked once per value, not expanded
                        }
                        self.path.push(at);
                        self.visit(resolved, depth + 1)?;
                        self.path.pop();
                    } else {
                        self.visit(v, depth + 1)?;
                    }
                }
            }
            Json::Array(items) => {
                for v in items {
                    self.visit(v, depth + 1)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn resolve(&self, target: &str) -> Option<&'s Json> {
        let fragment = target.strip_prefix('#')?;
        if fragment.is_empty() {
            Some(self.root)
        } else if fragment.starts_with('/') {
            self.root.pointer(&percent_decoded(fragment)?)
        } else {
            self.anchors.get(fragment).copied()
        }
    }
}

/// A URI fragment's `%XX` escapes decoded (`#/$defs/my%20def`); `None` when they do not make
/// UTF-8.
fn percent_decoded(fragment: &str) -> Option<String> {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = fragment.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The schema object holding the keyword at the end of `pointer` (`/properties/port/type` →
/// the schema of `port`), when the pointer resolves inside `schema` (not through a `$ref`).
fn parent_schema<'s>(schema: &'s Json, pointer: &str) -> Option<&'s Json> {
    let parent = pointer.rsplit_once('/').map_or("", |(p, _)| p);
    schema.pointer(parent).filter(|s| s.is_object())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(params: Json) -> ActionSpec {
        ActionSpec {
            provider: "test".into(),
            action: "act".into(),
            summary: String::new(),
            params,
            outputs: crate::provider::catalog::Outputs::Closed(Vec::new()),
            sim_default: std::time::Duration::ZERO,
            check: false,
            undo: false,
            validator: Default::default(),
        }
    }

    /// The problems with literal params, as `validate` sees them.
    fn literal(spec: &ActionSpec, params: Json) -> Vec<String> {
        let with = crate::runbook::Value::from_json(&params);
        check(spec, Some(&with), Span::default())
            .into_iter()
            .map(|p| p.message)
            .collect()
    }

    /// A rendered value is checked whatever it contains: text that looks like `${{` (from an
    /// input) does not skip the enum.
    #[test]
    fn a_rendered_value_with_braces_is_still_checked() {
        let spec = spec(json!({
            "type": "object",
            "properties": { "state": { "type": "string", "enum": ["ready", "drain"] } }
        }));
        let bad = json!({ "state": "ready;set server x state maint ${{" });
        assert_eq!(check_rendered(&spec, &bad).len(), 1);
        assert!(check_rendered(&spec, &json!({ "state": "drain" })).is_empty());
    }

    /// `oneOf` alternatives are whole sets of names; number bounds hold.
    #[test]
    fn one_of_needs_every_name_of_one_alternative_and_bounds_hold() {
        let spec = spec(json!({
            "type": "object",
            "properties": {
                "dsn": { "type": "string" }, "primary": { "type": "string" },
                "standby": { "type": "string" },
                "weight": { "type": "integer", "minimum": 0, "maximum": 256 }
            },
            "oneOf": [ { "required": ["dsn"] }, { "required": ["primary", "standby"] } ]
        }));
        let problems = |v: Json| check_rendered(&spec, &v);
        assert_eq!(
            problems(json!({ "primary": "a" })),
            ["needs `dsn`, or `primary` and `standby`"]
        );
        assert!(problems(json!({ "primary": "a", "standby": "b" })).is_empty());
        assert!(problems(json!({ "dsn": "a" })).is_empty());
        assert_eq!(
            problems(json!({ "dsn": "a", "primary": "a", "standby": "b" })).len(),
            1
        );
        assert_eq!(
            problems(json!({ "dsn": "a", "weight": 300 })),
            ["param `weight` must be at most 256"]
        );
        assert_eq!(problems(json!({ "dsn": "a", "weight": -1 })).len(), 1);
    }

    /// What the old hand-written subset ignored: `pattern`, `anyOf`, `$ref`, nested
    /// `properties`/`required`, string lengths, `const`, `uniqueItems`. Each is a problem
    /// naming the param, never quoting its value.
    #[test]
    fn the_whole_of_json_schema_is_checked() {
        let spec = spec(json!({
            "$defs": { "name": { "type": "string", "pattern": "^[A-Za-z0-9_.:-]+$" } },
            "type": "object",
            "properties": {
                "backend": { "$ref": "#/$defs/name" },
                "target": { "anyOf": [ { "type": "integer" }, { "type": "string", "minLength": 3 } ] },
                "tls": {
                    "type": "object",
                    "properties": { "mode": { "const": "verify-full" }, "ca": { "type": "string" } },
                    "required": ["ca"],
                    "additionalProperties": false
                },
                "hosts": { "type": "array", "uniqueItems": true, "items": { "type": "string" } }
            },
            "additionalProperties": false
        }));
        let problems = |v: Json| literal(&spec, v);
        let secretish = "web;set server x state maint";
        let p = problems(json!({ "backend": secretish }));
        assert_eq!(
            p,
            ["param `backend` must match the pattern `^[A-Za-z0-9_.:-]+$`"]
        );
        assert!(!p[0].contains(secretish));
        assert_eq!(problems(json!({ "target": "ab" })).len(), 1);
        assert!(problems(json!({ "target": "abc" })).is_empty());
        assert!(problems(json!({ "target": 5 })).is_empty());
        assert_eq!(
            problems(json!({ "tls": { "mode": "verify-full" } })),
            ["param `tls` needs key `ca`"]
        );
        assert_eq!(
            problems(json!({ "tls": { "ca": "x", "mode": "disable" } })),
            ["param `tls.mode` must be \"verify-full\""]
        );
        assert_eq!(
            problems(json!({ "tls": { "ca": "x", "cert": "y" } })),
            ["unknown key `cert` in param `tls`"]
        );
        assert_eq!(
            problems(json!({ "hosts": ["a", "a"] })),
            ["param `hosts` must not repeat an item"]
        );
        assert_eq!(
            problems(json!({ "hosts": ["a", 3] })),
            ["param `hosts[1]` must be a string, not an integer"]
        );
        assert_eq!(
            problems(json!({ "bakend": "x" })),
            ["unknown param `bakend`"]
        );
    }

    /// At validate, an expression (or a list or map holding one) is not judged by a rule its
    /// rendered value may meet; presence still counts.
    #[test]
    fn expressions_wait_for_their_values() {
        let spec = spec(json!({
            "type": "object",
            "properties": {
                "port": { "type": "integer", "minimum": 1 },
                "hosts": { "type": "array", "items": { "type": "string", "pattern": "^[a-z]+$" } },
                "dsn": { "type": "string" }, "primary": { "type": "string" }
            },
            "oneOf": [ { "required": ["dsn"] }, { "required": ["primary"] } ],
            "additionalProperties": false
        }));
        let with = |yaml: &str| {
            crate::runbook::Value::from_json(&serde_json::from_str::<Json>(yaml).unwrap())
        };
        let at = Span::default();
        let count = |y: &str| check(&spec, Some(&with(y)), at).len();
        assert_eq!(count(r#"{"dsn": "x", "port": "${{ inputs.port }}"}"#), 0);
        assert_eq!(
            count(r#"{"dsn": "x", "hosts": ["${{ inputs.h }}", "ok"]}"#),
            0
        );
        // The literal item next to an expression is still judged.
        assert_eq!(
            count(r#"{"dsn": "x", "hosts": ["${{ inputs.h }}", "NO"]}"#),
            1
        );
        assert_eq!(count(r#"{"port": "${{ inputs.port }}"}"#), 1);
        assert_eq!(count(r#"{"dsn": "${{ a }}", "primary": "${{ b }}"}"#), 1);
        assert_eq!(count(r#"{"dsn": "x", "prot": "${{ inputs.port }}"}"#), 1);
    }

    /// A schema whose references double at each level is refused before anything is checked
    /// against it; a recursive schema (a tree) and a long but linear one are fine.
    #[test]
    fn a_schema_that_expands_exponentially_is_refused() {
        let mut defs = serde_json::Map::new();
        // 4^12 paths from 13 definitions.
        for i in 0..12 {
            let next = json!({ "$ref": format!("#/$defs/e{}", i + 1) });
            defs.insert(
                format!("e{i}"),
                json!({ "anyOf": [next, next, next, next] }),
            );
        }
        defs.insert("e12".into(), json!({ "type": "integer" }));
        let bomb = spec(json!({
            "$defs": defs, "type": "object", "properties": { "x": { "$ref": "#/$defs/e0" } }
        }));
        let started = std::time::Instant::now();
        let p = check_rendered(&bomb, &json!({ "x": "text" }));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("too costly to check"), "{p:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));

        let tree = spec(json!({
            "$defs": { "node": { "type": "object", "properties": {
                "name": { "type": "string" },
                "children": { "type": "array", "items": { "$ref": "#/$defs/node" } } } } },
            "type": "object", "properties": { "root": { "$ref": "#/$defs/node" } }
        }));
        let deep = json!({ "root": { "name": "a", "children": [ { "name": "b", "children": [ { "name": 3 } ] } ] } });
        assert_eq!(
            literal(&tree, deep),
            ["param `root.children[0].children[0].name` must be a string, not an integer"]
        );
        // Reuse without branching is what real schemas do: an endpoint used 5 times in a
        // server used 60 times, with descriptions, and a percent-encoded pointer.
        let endpoint = json!({ "type": "object", "description": "an endpoint of a server",
            "properties": { "host": { "type": "string", "description": "its host" },
                            "port": { "type": "integer", "minimum": 1, "maximum": 65535 },
                            "tls": { "type": "object", "properties": {
                                "ca": { "type": "string" }, "verify": { "type": "boolean" } } } },
            "required": ["host", "port"], "additionalProperties": false });
        let server: serde_json::Map<String, Json> = (0..5)
            .map(|i| (format!("e{i}"), json!({ "$ref": "#/$defs/my%20endpoint" })))
            .collect();
        let servers: serde_json::Map<String, Json> = (0..60)
            .map(|i| (format!("s{i}"), json!({ "$ref": "#/$defs/server" })))
            .collect();
        let reused = spec(json!({
            "$defs": { "my endpoint": endpoint,
                       "server": { "type": "object", "properties": server } },
            "type": "object", "properties": servers
        }));
        assert_eq!(
            check_rendered(
                &reused,
                &json!({ "s7": { "e2": { "host": "db", "port": 0 } } })
            ),
            ["a value inside param `s7` must be at least 1"]
        );
        let outside = spec(
            json!({ "type": "object", "properties": { "x": { "$ref": "https://example.com/s.json" } } }),
        );
        let p = check_rendered(&outside, &json!({ "x": 1 }));
        assert!(p[0].contains("not a reference within the schema"), "{p:?}");
    }

    /// Rules whose outcome hangs on an expression's value elsewhere in the params (`if` /
    /// `then` / `else`, `unevaluatedProperties` after a discriminated `oneOf`) wait for it too;
    /// with literal values they still hold.
    #[test]
    fn conditional_rules_wait_for_expressions() {
        let conditional = spec(json!({
            "type": "object",
            "properties": { "mode": { "enum": ["plain", "tls"] }, "ca": { "type": "string" } },
            "if": { "properties": { "mode": { "const": "plain" } }, "required": ["mode"] },
            "else": { "required": ["ca"] }
        }));
        let with = |j: Json| crate::runbook::Value::from_json(&j);
        let at = Span::default();
        let problems = |j: Json| check(&conditional, Some(&with(j)), at).len();
        assert_eq!(problems(json!({ "mode": "${{ inputs.mode }}" })), 0);
        assert_eq!(problems(json!({ "mode": "tls" })), 1);
        assert_eq!(problems(json!({ "mode": "plain" })), 0);
        let tagged = spec(json!({
            "type": "object",
            "oneOf": [
                { "properties": { "kind": { "const": "tcp" }, "port": { "type": "integer" } } },
                { "properties": { "kind": { "const": "unix" }, "path": { "type": "string" } } }
            ],
            "unevaluatedProperties": false
        }));
        let expr = with(json!({ "kind": "${{ inputs.kind }}", "port": 5432 }));
        assert!(check(&tagged, Some(&expr), at).is_empty());
        let literal = with(json!({ "kind": "tcp", "port": 5432 }));
        assert!(check(&tagged, Some(&literal), at).is_empty());
        let wrong = with(json!({ "kind": "tcp", "path": "/x" }));
        assert!(!check(&tagged, Some(&wrong), at).is_empty());
        // An expression the branches do not read leaves literal mistakes reported: an
        // unknown param, a missing one on the branch a literal chose.
        let both = spec(json!({
            "type": "object",
            "properties": {
                "dsn": { "type": "string" }, "mode": { "enum": ["plain", "tls"] },
                "ca": { "type": "string" }
            },
            "if": { "properties": { "mode": { "const": "plain" } }, "required": ["mode"] },
            "else": { "required": ["ca"] },
            "unevaluatedProperties": false
        }));
        let literal_mistakes =
            with(json!({ "dsn": "${{ inputs.dsn }}", "prot": 5432, "mode": "tls" }));
        let found: Vec<String> = check(&both, Some(&literal_mistakes), at)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert!(
            found.contains(&"missing required param `ca`".to_string()),
            "{found:?}"
        );
        assert!(
            found.contains(&"unknown param `prot`".to_string()),
            "{found:?}"
        );
    }

    /// A rendered value may be a secret map: its keys (part of the secret) are never named in
    /// a problem, only the param.
    #[test]
    fn keys_of_a_rendered_value_are_not_named() {
        let spec = spec(json!({
            "type": "object",
            "properties": {
                "labels": { "type": "object", "additionalProperties": false,
                            "properties": { "team": { "type": "string" } } },
                "env": { "type": "object", "additionalProperties": { "type": "string" } }
            }
        }));
        let p = check_rendered(&spec, &json!({ "labels": { "hunter2key": "x" } }));
        assert_eq!(p, ["param `labels` has a key its schema does not allow"]);
        let p = check_rendered(&spec, &json!({ "env": { "S3CRETNAME": 5 } }));
        assert_eq!(
            p,
            ["a value inside param `env` must be a string, not an integer"]
        );
        assert!(!p[0].contains("S3CRET"));
    }

    /// A plugin's schema that is not JSON Schema is said, not a panic and not "ok".
    #[test]
    fn an_invalid_schema_is_a_problem_not_a_pass() {
        let spec = spec(json!({ "type": "object", "properties": { "x": { "type": 5 } } }));
        let p = check_rendered(&spec, &json!({ "x": 1 }));
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("not valid JSON Schema"), "{p:?}");
    }
}
