//! A YAML value tree that keeps the source span of every node.
//!
//! `with:`, `sim.outputs`, input defaults and `undo.with` are free-form: their shape depends on
//! the action. They are kept as a [`Value`] so every string can be compiled as an expression and
//! every error can point at the exact node, however deep.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub const fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }

    /// The span of a serde-saphyr location: where the value is *used* (an alias points at the
    /// alias, which is where the user looks).
    pub fn of<T>(spanned: &Spanned<T>) -> Span {
        Span::from_location(&spanned.referenced)
    }

    pub fn from_location(loc: &serde_saphyr::Location) -> Span {
        let span = loc.span();
        let offset = span.byte_offset().unwrap_or(0) as usize;
        let len = span.byte_len().unwrap_or(0) as usize;
        Span { offset, len }
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: ValueKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ValueKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(Key, Value)>),
}

/// A mapping key with its span (for "unknown parameter" errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

impl Value {
    /// "a string", "an integer": the type's name with its article.
    pub fn a_type(&self) -> String {
        with_article(self.type_name())
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            ValueKind::Null => "null",
            ValueKind::Bool(_) => "boolean",
            ValueKind::Int(_) => "integer",
            ValueKind::Float(_) => "number",
            ValueKind::Str(_) => "string",
            ValueKind::Seq(_) => "list",
            ValueKind::Map(_) => "map",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            ValueKind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match &self.kind {
            ValueKind::Map(entries) => entries.iter().find(|(k, _)| k.name == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Every string leaf, depth first, in document order.
    pub fn for_each_str<'a>(&'a self, f: &mut impl FnMut(&'a str, Span)) {
        match &self.kind {
            ValueKind::Str(s) => f(s, self.span),
            ValueKind::Seq(items) => items.iter().for_each(|v| v.for_each_str(f)),
            ValueKind::Map(entries) => entries.iter().for_each(|(_, v)| v.for_each_str(f)),
            _ => {}
        }
    }

    /// A value built from JSON (a rendered param), with no source span.
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        let kind = match json {
            J::Null => ValueKind::Null,
            J::Bool(b) => ValueKind::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => ValueKind::Int(i),
                None => ValueKind::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => ValueKind::Str(s.clone()),
            J::Array(items) => ValueKind::Seq(items.iter().map(Value::from_json).collect()),
            J::Object(map) => ValueKind::Map(
                map.iter()
                    .map(|(k, v)| {
                        let key = Key {
                            name: k.clone(),
                            span: Span::default(),
                        };
                        (key, Value::from_json(v))
                    })
                    .collect(),
            ),
        };
        Value {
            kind,
            span: Span::default(),
        }
    }

    /// The plain JSON form (spans dropped).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.kind {
            ValueKind::Null => J::Null,
            ValueKind::Bool(b) => J::Bool(*b),
            ValueKind::Int(i) => J::from(*i),
            ValueKind::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            ValueKind::Str(s) => J::String(s.clone()),
            ValueKind::Seq(items) => J::Array(items.iter().map(Value::to_json).collect()),
            ValueKind::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = Spanned::<ValueKind>::deserialize(d)?;
        Ok(Value {
            span: Span::of(&spanned),
            kind: spanned.value,
        })
    }
}

impl<'de> Deserialize<'de> for ValueKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = ValueKind;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E>(self) -> Result<ValueKind, E> {
        Ok(ValueKind::Null)
    }
    fn visit_none<E>(self) -> Result<ValueKind, E> {
        Ok(ValueKind::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<ValueKind, D::Error> {
        ValueKind::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<ValueKind, E> {
        Ok(ValueKind::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<ValueKind, E> {
        Ok(ValueKind::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueKind, E> {
        i64::try_from(v).map(ValueKind::Int).map_err(|_| {
            E::custom(format!(
                "integer {v} is too large (the limit is {})",
                i64::MAX
            ))
        })
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<ValueKind, E> {
        i64::try_from(v)
            .map(ValueKind::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<ValueKind, E> {
        i64::try_from(v)
            .map(ValueKind::Int)
            .map_err(|_| E::custom(format!("integer {v} does not fit in 64 bits")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<ValueKind, E> {
        Ok(ValueKind::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<ValueKind, E> {
        Ok(ValueKind::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<ValueKind, E> {
        Ok(ValueKind::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValueKind, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(ValueKind::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueKind, A::Error> {
        let mut entries: Vec<(Key, Value)> = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Value>()?;
            entries.push((
                Key {
                    span: Span::of(&key),
                    name: key.value,
                },
                value,
            ));
        }
        Ok(ValueKind::Map(entries))
    }
}

impl schemars::JsonSchema for Value {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Value".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "description": "Any YAML value; strings may contain ${{ expressions }}." })
    }
}

/// `name` with its indefinite article: "a string", "an integer", "an unknown".
pub fn with_article(name: &str) -> String {
    let vowel = name.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {name}", if vowel { "an" } else { "a" })
}
