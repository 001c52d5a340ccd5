//! Masking secrets before anything is written: every secret input value, and its base64 forms,
//! becomes `***` in journal records, events and messages. Values are masked when they are
//! strings inside structured data too (each leaf), so no encoding of the record hides them.

use base64::Engine;
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, Default)]
pub struct Masker {
    needles: Vec<String>,
}

pub const MASK: &str = "***";

/// The fewest characters a secret may have: shorter values cannot be masked by value without
/// hiding ordinary text (or being left visible).
pub const MIN_SECRET: usize = 4;

/// The length of the shortest part of a secret value (each string or number in it, empty ones
/// included) when it is shorter than [`MIN_SECRET`].
pub fn too_short(value: &Json) -> Option<usize> {
    let mut parts = Vec::new();
    leaves(value, &mut parts);
    parts
        .iter()
        .map(|p| p.chars().count())
        .filter(|&n| n < MIN_SECRET)
        .min()
}

impl Masker {
    /// From the secret values (each leaf of a structured secret counts).
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a Json>) -> Masker {
        let mut needles = Vec::new();
        for s in secrets {
            leaves(s, &mut needles);
        }
        // A secret of several lines is masked line by line too: what keeps only some of its
        // lines (the last line of stderr in an error message, the tail of a long output) must
        // not show them.
        let lines: Vec<String> = needles
            .iter()
            .filter(|n| n.contains('\n'))
            .flat_map(|n| n.lines().map(|l| l.trim().to_string()).collect::<Vec<_>>())
            .collect();
        needles.extend(lines);
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::STANDARD_NO_PAD,
        ];
        let encoded: Vec<String> = needles
            .iter()
            .flat_map(|n| engines.iter().map(move |e| e.encode(n)))
            .collect();
        needles.extend(encoded);
        // Short values would mask half the log (secrets shorter than MIN_SECRET are refused
        // when inputs are resolved; this leaves out short lines of multi-line secrets).
        needles.retain(|n| n.chars().count() >= 3);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Masker { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), MASK);
            }
        }
        out
    }

    pub fn json(&self, v: &Json) -> Json {
        if self.is_empty() {
            return v.clone();
        }
        match v {
            Json::String(s) => Json::String(self.text(s)),
            Json::Array(items) => Json::Array(items.iter().map(|i| self.json(i)).collect()),
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// A map of values (outputs, inputs) with every secret masked.
    pub fn json_map(&self, map: &Map<String, Json>) -> Map<String, Json> {
        map.iter()
            .map(|(k, v)| (self.text(k), self.json(v)))
            .collect()
    }
}

fn leaves(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::String(s) => out.push(s.clone()),
        Json::Number(n) => out.push(n.to_string()),
        Json::Array(items) => items.iter().for_each(|i| leaves(i, out)),
        Json::Object(map) => map.values().for_each(|i| leaves(i, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks_values_and_their_base64() {
        let m = Masker::new([
            &json!("hunter22"),
            &json!({"user": "admin", "pw": "s3cr3t!"}),
        ]);
        assert_eq!(m.text("token=hunter22;"), "token=***;");
        assert_eq!(m.text("aHVudGVyMjI="), "***");
        assert_eq!(
            m.json(&json!({"a": ["x s3cr3t! y"]})),
            json!({"a": ["x *** y"]})
        );
        assert_eq!(m.text("ok"), "ok");
    }
}
