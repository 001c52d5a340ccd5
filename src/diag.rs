//! Diagnostics: one type for every error and warning ripcord reports about a runbook, carrying
//! the source file and labelled spans, rendered rustc-style by miette or as JSON for CI
//! annotations.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde::Serialize;

use crate::runbook::Span;

/// A source file as loaded: the name it is shown under and its text.
pub type SourceFile = Arc<NamedSource<Arc<str>>>;

pub fn source_file(name: impl AsRef<str>, text: impl Into<Arc<str>>) -> SourceFile {
    Arc::new(NamedSource::new(name, text.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    /// Context for another diagnostic (e.g. where a module was included from).
    Note,
}

#[derive(Debug, Clone)]
pub struct Label {
    pub span: Span,
    pub text: Option<String>,
}

/// One error or warning, with where it is.
#[derive(Debug, Clone)]
pub struct Diag {
    pub severity: Severity,
    /// A stable code such as `ripcord::cycle`, for documentation and CI filters.
    pub code: &'static str,
    pub message: String,
    pub source: Option<SourceFile>,
    /// The first label is the primary location.
    pub labels: Vec<Label>,
    pub help: Option<String>,
    /// Further diagnostics shown beneath this one (e.g. a location in another file).
    pub related: Vec<Diag>,
    /// Never quote the file's text (a file of input values may hold secrets): positions only.
    pub unquoted: bool,
}

impl Diag {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Diag {
            severity: Severity::Error,
            code,
            message: message.into(),
            source: None,
            labels: Vec::new(),
            help: None,
            related: Vec::new(),
            unquoted: false,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Diag {
            severity: Severity::Warning,
            ..Diag::error(code, message)
        }
    }

    pub fn note(code: &'static str, message: impl Into<String>) -> Self {
        Diag {
            severity: Severity::Note,
            ..Diag::error(code, message)
        }
    }

    /// Shown with its file:line:col but without the file's text (see [`Diag::unquoted`]).
    pub fn unquoted(mut self) -> Self {
        self.unquoted = true;
        self
    }

    pub fn in_file(mut self, source: &SourceFile) -> Self {
        self.source = Some(source.clone());
        self
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: Some(text.into()),
        });
        self
    }

    pub fn mark(mut self, span: Span) -> Self {
        self.labels.push(Label { span, text: None });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn related(mut self, other: Diag) -> Self {
        self.related.push(other);
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// 1-based line and column (in characters) of the primary label.
    pub fn position(&self) -> Option<(usize, usize)> {
        let (source, label) = (self.source.as_ref()?, self.labels.first()?);
        Some(line_col(source.inner(), label.span.offset))
    }

    pub fn to_json(&self) -> JsonDiag {
        let file = self.source.as_ref().map(|s| s.name().to_string());
        let (line, column) = self.position().unzip();
        let (end_line, end_column) = match (&self.source, self.labels.first()) {
            (Some(s), Some(l)) => {
                let (a, b) = line_col(s.inner(), l.span.offset + l.span.len);
                (Some(a), Some(b))
            }
            _ => (None, None),
        };
        JsonDiag {
            severity: self.severity,
            code: self.code,
            message: self.message.clone(),
            file,
            line,
            column,
            end_line,
            end_column,
            labels: self
                .labels
                .iter()
                .filter_map(|l| {
                    let source = self.source.as_ref()?;
                    let (line, column) = line_col(source.inner(), l.span.offset);
                    Some(JsonLabel {
                        line,
                        column,
                        text: l.text.clone(),
                    })
                })
                .collect(),
            help: self.help.clone(),
            related: self.related.iter().map(Diag::to_json).collect(),
        }
    }

    /// Renders rustc-style, with colour when `color` is set.
    pub fn render(&self, color: bool) -> String {
        if self.unquoted || self.has_long_line() {
            return self.without_snippet().render(color);
        }
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let mut out = String::new();
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_width(100)
            .with_links(false);
        if handler.render_report(&mut out, self).is_err() {
            // Rendering only fails on a fmt error of a String, which does not happen; fall back
            // to the plain message rather than lose the diagnostic.
            out = format!("{}: {}\n", self.code, self.message);
        }
        out
    }
}

/// Lines longer than this are not quoted: a snippet of a 7 MB line helps nobody (and miette's
/// layout cannot draw columns past 65,535).
const MAX_SNIPPET_LINE: usize = 400;

impl Diag {
    fn has_long_line(&self) -> bool {
        let Some(source) = &self.source else {
            return false;
        };
        let text = source.inner();
        self.labels.iter().any(|l| {
            let at = floor_char_boundary(text, l.span.offset.min(text.len()));
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            end - start > MAX_SNIPPET_LINE
        }) || self.related.iter().any(Diag::has_long_line)
    }

    /// The same diagnostic with positions written out instead of a quoted snippet.
    fn without_snippet(&self) -> Diag {
        let mut plain = self.clone();
        if let (Some(source), Some((line, column))) = (&self.source, self.position()) {
            plain.message = format!("{}\n  at {}:{line}:{column}", self.message, source.name());
        }
        plain.source = None;
        plain.labels.clear();
        plain.unquoted = false;
        plain.related = self.related.iter().map(Diag::without_snippet).collect();
        plain
    }
}

/// 1-based (line, column) of a byte offset; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let before = &text[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[derive(Debug, Serialize)]
pub struct JsonDiag {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_column: Option<usize>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<JsonLabel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<JsonDiag>,
}

#[derive(Debug, Serialize)]
pub struct JsonLabel {
    pub line: usize,
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diag {}

impl Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Note => miette::Severity::Advice,
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_deref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(self.labels.iter().enumerate().map(|(i, l)| {
            let span = miette::SourceSpan::from(l.span);
            if i == 0 {
                LabeledSpan::new_primary_with_span(l.text.clone(), span)
            } else {
                LabeledSpan::new_with_span(l.text.clone(), span)
            }
        })))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(self.related.iter().map(|d| d as &dyn Diagnostic)))
    }
}

/// The closest candidate to `word` within a small edit distance, else the only candidate that
/// `word` (3 characters or more) is the start of: `prev` -> `previous`.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let limit = (word.len() / 3).max(2);
    let close = candidates
        .iter()
        .map(|c| (strsim::levenshtein(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c);
    close.or_else(|| {
        let mut prefixed = candidates
            .iter()
            .filter(|c| word.len() >= 3 && c.starts_with(word));
        match (prefixed.next(), prefixed.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    })
}
