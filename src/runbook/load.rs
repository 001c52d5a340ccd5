//! Reading a runbook file: size cap, UTF-8, YAML parse under an explicit budget, and the shape
//! check of [`Runbook`]. Every failure is a [`Diag`] pointing into the file.

use std::io::Read;
use std::path::Path;

use crate::diag::{Diag, SourceFile, source_file};

use super::{Runbook, Span};

/// Files larger than this are refused before parsing: no real runbook comes near it.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// A loaded file: its text (for diagnostics) and its model.
pub struct Source {
    pub file: SourceFile,
    pub runbook: Runbook,
}

/// Why a file could not be loaded: one diagnostic, or for a file whose YAML is sound but whose
/// steps have the wrong shape, one a step.
pub type LoadError = Vec<Diag>;

/// Reads and parses `path`; `display` is the name diagnostics show (the path as given).
pub fn load_file(path: &Path) -> Result<Source, LoadError> {
    load_file_as(path, &path.display().to_string())
}

/// [`load_file`] with the name diagnostics show (a module's path as written from the runbook).
pub fn load_file_as(path: &Path, display: &str) -> Result<Source, LoadError> {
    let fail = |msg: String| vec![Diag::error("ripcord::io", msg)];
    let file =
        std::fs::File::open(path).map_err(|e| fail(format!("cannot read {display}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read {display}: {e}")))?;
    if meta.is_dir() {
        return Err(fail(format!(
            "{display} is a directory, not a runbook file"
        )));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(display, meta.len()));
    }
    // Read at most one byte past the cap: the file may grow between stat and read.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read {display}: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(display, bytes.len() as u64));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => return Err(not_utf8(display, e)),
    };
    load_str(display, text)
}

fn too_large(display: &str, len: u64) -> LoadError {
    vec![
        Diag::error(
            "ripcord::too-large",
            format!(
                "{display} is {len} bytes; runbooks are limited to {} MiB",
                MAX_FILE_BYTES / (1024 * 1024)
            ),
        )
        .help("no real runbook comes near this size: is this the right file?"),
    ]
}

fn not_utf8(display: &str, e: std::string::FromUtf8Error) -> LoadError {
    let valid_up_to = e.utf8_error().valid_up_to();
    let bytes = e.into_bytes();
    // Show the file up to the bad byte so the diagnostic can point at it.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let lossy_offset = String::from_utf8_lossy(&bytes[..valid_up_to]).len();
    vec![
        Diag::error(
            "ripcord::not-utf8",
            format!("{display} is not valid UTF-8 (byte {valid_up_to})"),
        )
        .in_file(&source_file(display, text))
        .label(Span::new(lossy_offset, 1), "invalid UTF-8 here")
        .help("runbooks are UTF-8 text; re-save the file as UTF-8"),
    ]
}

/// Parses runbook text; `display` names the file in diagnostics.
pub fn load_str(display: &str, text: String) -> Result<Source, LoadError> {
    let file = source_file(display, text);
    if file.inner().trim().is_empty() || is_only_comments(file.inner()) {
        return Err(vec![
            Diag::error("ripcord::empty", format!("{display} is empty"))
                .help("a runbook needs at least `version: 1`, `name:` and `steps:`"),
        ]);
    }
    match serde_saphyr::from_str_with_options::<Runbook>(file.inner(), options(file.inner().len()))
    {
        Ok(runbook) => Ok(Source { file, runbook }),
        Err(e) => {
            let first = yaml_error(&file, &e);
            let at = first.labels.first().map(|l| l.span.offset);
            let mut diags = vec![first];
            diags.extend(other_step_errors(&file, at));
            Err(diags)
        }
    }
}

/// A file whose YAML parses but whose shape is wrong stops serde at its first error. So that
/// `validate` reports every bad step at once (as a compiler reports every bad item), each other
/// step is read on its own: its text, indented as in the file, parsed as a [`Step`]. An error
/// found so is reported at its place in the file; the step that holds the first error (`at`)
/// is skipped, as is any step that cannot be read alone (an alias to an anchor elsewhere).
fn other_step_errors(file: &SourceFile, at: Option<usize>) -> Vec<Diag> {
    let text = file.inner();
    let Ok(tree) = serde_saphyr::from_str_with_options::<super::Value>(text, options(text.len()))
    else {
        return Vec::new(); // not sound YAML: the first error is all there is to say
    };
    let super::ValueKind::Map(top) = &tree.kind else {
        return Vec::new();
    };
    let Some(super::ValueKind::Seq(steps)) = top
        .iter()
        .find(|(k, _)| k.name == "steps")
        .map(|(_, v)| &v.kind)
    else {
        return Vec::new();
    };
    // Where `steps` ends: the next top-level key after it, else the end of the file.
    let steps_start = steps.first().map_or(0, |s| s.span.offset);
    let end_of_steps = top
        .iter()
        .map(|(k, _)| k.span.offset)
        .filter(|&o| o > steps_start)
        .min()
        .map_or(text.len(), |o| line_start(text, o));
    let mut diags = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let start = step.span.offset;
        let end = steps
            .get(k + 1)
            .map_or(end_of_steps, |next| line_start(text, next.span.offset));
        if end <= start || at.is_some_and(|a| (start..end).contains(&a)) {
            continue;
        }
        let column = start - line_start(text, start);
        if !text[line_start(text, start)..start]
            .chars()
            .all(|c| c == ' ' || c == '-')
        {
            continue; // a flow list (`steps: [a, b]`): steps share lines
        }
        let alone = format!("{}{}", " ".repeat(column), &text[start..end]);
        let Err(e) =
            serde_saphyr::from_str_with_options::<super::Step>(&alone, options(alone.len()))
        else {
            continue;
        };
        let message = e.to_string();
        if message.contains("alias") || message.contains("anchor") {
            continue;
        }
        let shifted = (start - column) as isize;
        let mut diag = yaml_error(&source_file("", alone.clone()), &e);
        let mut labels = std::mem::take(&mut diag.labels);
        for l in &mut labels {
            l.span.offset = (l.span.offset as isize + shifted) as usize;
        }
        diag.labels = labels;
        diags.push(diag.in_file(file));
    }
    diags
}

/// The offset where the line holding `offset` starts.
fn line_start(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1)
}

fn is_only_comments(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---" || l == "...")
}

/// The parse budget. A 16 MiB file bounds the input; these bound what YAML can make of it
/// (aliases expand, so a small file can describe a huge tree). What aliases may replay grows
/// with the file's size: a runbook that reuses a `defaults` block by alias replays a few times
/// its own size, a "billion laughs" file millions of times its size, and is refused after a few
/// thousand events instead of after a second of building what it describes.
fn options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = 64;
    budget.max_nodes = 3_000_000;
    budget.max_events = 4_000_000;
    budget.max_aliases = 10_000;
    budget.max_anchors = 10_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = MAX_FILE_BYTES as usize;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = (10_000 + 4 * len).min(1_000_000);
    options.with_snippet = false;
    options
}

fn yaml_error(file: &SourceFile, e: &serde_saphyr::Error) -> Diag {
    let message = e.to_string();
    // serde-saphyr appends " at line X column Y"; the label shows that already.
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let mut diag = match budget_breach(&message) {
        Some(what) => Diag::error(
            "ripcord::yaml-budget",
            format!("the YAML goes past ripcord's parse budget: {what}"),
        )
        .help(
            "nesting depth (64), nodes (3 million), aliases (10,000) and alias expansion (a few \
             times the file's size) are limited so that a hostile file cannot exhaust memory",
        ),
        None => Diag::error("ripcord::yaml", plain_words(&message)),
    }
    .in_file(file);
    if let Some(loc) = e.location().filter(|l| l.line() > 0) {
        let mut span = Span::from_location(&loc);
        if span.offset == 0 && loc.line() > 1 {
            span = Span::new(offset_of(file.inner(), loc.line(), loc.column()), 0);
        }
        diag = diag.mark(span);
    }
    diag
}

/// What a budget breach was about, in words; `None` for other errors.
fn budget_breach(message: &str) -> Option<String> {
    if message.starts_with("recursion limit exceeded") {
        return Some("nested too deeply".into());
    }
    if message.starts_with("alias replay") || message.starts_with("alias expansion") {
        return Some("aliases expand to too much for a file of this size (an alias bomb?)".into());
    }
    let rest = message.strip_prefix("budget breached: ")?;
    let kind: String = rest
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    if kind == "Documents" {
        return None; // not hostile, just a second `---`: see plain_words
    }
    Some(match kind.as_str() {
        "Depth" => "nested too deeply".into(),
        "Aliases" | "RecordedAnchorEvents" | "RecordedAnchorBytes" | "AliasAnchorRatio" => {
            "aliases expand to too much (an alias bomb?)".into()
        }
        "Nodes" | "Events" => "too many YAML nodes".into(),
        "Anchors" => "too many anchors".into(),
        "ScalarBytes" => "too much text".into(),
        other => format!("limit `{other}` exceeded"),
    })
}

/// serde-saphyr's messages speak to Rust developers (`invalid u32`, policy names); say the same
/// in a runbook author's words.
fn plain_words(message: &str) -> String {
    if message.starts_with("budget breached: Documents") {
        return "a runbook file holds one YAML document; this one has another after `---`".into();
    }
    let message = match message.find(", set DuplicateKeyPolicy") {
        Some(i) => &message[..i],
        None => message,
    };
    let replaced = match message {
        "invalid u32" | "invalid u64" | "invalid u16" | "invalid u8" => {
            "expected a whole number of 0 or more"
        }
        "invalid i64" | "invalid i32" => "expected a whole number",
        "invalid f64" | "invalid f32" => "expected a number",
        "invalid bool" => "expected true or false",
        "expected sequence start" => "expected a list",
        "expected mapping start" => "expected a map",
        other => other,
    };
    replaced.to_string()
}

/// Byte offset of a 1-based line and character column.
fn offset_of(text: &str, line: u64, column: u64) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1) as usize)
        .map(str::len)
        .sum();
    let rest = &text[line_start.min(text.len())..];
    line_start
        + rest
            .char_indices()
            .nth(column.saturating_sub(1) as usize)
            .map_or(rest.len(), |(i, _)| i)
}

/// Reads a YAML file of values (`--input-file`): a mapping, every node with its span.
pub fn load_values(path: &Path) -> Result<(SourceFile, super::Value), LoadError> {
    let display = path.display().to_string();
    let fail = |msg: String| vec![Diag::error("ripcord::io", msg)];
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read {display}: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large(&display, meta.len()));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read {display}: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| not_utf8(&display, e))?;
    let file = source_file(&display, text);
    match serde_saphyr::from_str_with_options::<super::Value>(
        file.inner(),
        options(file.inner().len()),
    ) {
        Ok(value) => Ok((file, value)),
        // Quoting the file could show a secret value beside the error.
        Err(e) => Err(vec![yaml_error(&file, &e).unquoted()]),
    }
}
