//! `shell.run`'s `script:` is shell source, and a value put into it with `${{ }}` must reach the
//! shell as data, never as code. Each expression is quoted for where it stands in the script:
//! outside quotes it becomes one single-quoted word; inside single quotes, its own quotes are
//! closed and reopened around an escaped `'`; inside double quotes, `\`, `"`, `$` and `` ` `` are
//! escaped. Either way the command sees the value byte for byte. Where the quoting cannot be
//! known from the text around the expression (inside backticks, `$'…'`, `${…}`, in a comment,
//! right after a backslash, or at or after a here-document), the runbook is refused at validate:
//! pass the value through `env:` instead.

use crate::compile::expr::Part;

/// How the shell reads the text where an expression stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    Bare,
    Single,
    Double,
}

/// A frame of the quoting stack: `$( … )` starts a new one, parsed afresh.
#[derive(Debug, Clone, Copy)]
struct Frame {
    quoting: Quoting,
    /// Unmatched `(` in this frame (`$((1+2))`, subshells, `case` aside).
    parens: usize,
    /// Whether it was opened by `$(` (closed by `)`), else it is the script itself.
    command: bool,
}

/// Where each `${{ }}` of a script stands (one entry per `Part::Expr`, in order), or why it
/// cannot be quoted safely there.
pub fn quoting(parts: &[Part]) -> Vec<Result<Quoting, &'static str>> {
    let mut stack = vec![Frame {
        quoting: Quoting::Bare,
        parens: 0,
        command: false,
    }];
    // A state that makes every later expression unsafe, with why.
    let mut poisoned: Option<&'static str> = None;
    // Inside backticks, `${…}` or `$'…'`: unsafe until it closes.
    let mut inside: Option<(&'static str, char)> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut word_start = true;
    let mut out = Vec::new();
    for part in parts {
        let text = match part {
            Part::Expr(_) => {
                out.push(match (poisoned, inside) {
                    (Some(why), _) | (None, Some((why, _))) => Err(why),
                    // A value with a newline would end the comment and run what follows.
                    _ if comment => Err("in a comment"),
                    // The backslash would take the quote that opens the value.
                    _ if escaped => Err("right after a backslash"),
                    _ => Ok(stack.last().map_or(Quoting::Bare, |f| f.quoting)),
                });
                word_start = false;
                continue;
            }
            Part::Lit(text) => text,
        };
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            i += 1;
            if escaped {
                escaped = false;
                word_start = false;
                continue;
            }
            if comment {
                if c == '\n' {
                    comment = false;
                    word_start = true;
                }
                continue;
            }
            if let Some((_, close)) = inside {
                if c == '\\' {
                    escaped = true;
                } else if c == close {
                    inside = None;
                }
                continue;
            }
            let frame = stack
                .last_mut()
                .expect("the script's frame is never popped");
            // What `$` and a backtick start, the same outside quotes and inside "…".
            if frame.quoting != Quoting::Single {
                match (c, next) {
                    ('`', _) => {
                        inside = Some(("inside backticks", '`'));
                        continue;
                    }
                    ('$', Some('{')) => {
                        i += 1;
                        inside = Some(("inside `${…}`", '}'));
                        continue;
                    }
                    ('$', Some('(')) => {
                        i += 1;
                        stack.push(Frame {
                            quoting: Quoting::Bare,
                            parens: 0,
                            command: true,
                        });
                        word_start = true;
                        continue;
                    }
                    ('$', Some('\'')) if frame.quoting == Quoting::Bare => {
                        i += 1;
                        inside = Some(("inside `$'…'`", '\''));
                        continue;
                    }
                    _ => {}
                }
            }
            match frame.quoting {
                Quoting::Single => {
                    if c == '\'' {
                        frame.quoting = Quoting::Bare;
                    }
                }
                Quoting::Double => match c {
                    '\\' => escaped = true,
                    '"' => frame.quoting = Quoting::Bare,
                    _ => {}
                },
                Quoting::Bare => match c {
                    '\\' => escaped = true,
                    '\'' => frame.quoting = Quoting::Single,
                    '"' => frame.quoting = Quoting::Double,
                    '#' if word_start => comment = true,
                    '<' if next == Some('<') => {
                        poisoned = Some("at or after a here-document (`<<`)");
                    }
                    '(' => frame.parens += 1,
                    ')' if frame.parens > 0 => frame.parens -= 1,
                    ')' if frame.command => {
                        stack.pop();
                    }
                    _ => {}
                },
            }
            word_start = c.is_whitespace() || matches!(c, ';' | '|' | '&' | '(' | ')');
        }
    }
    out
}

/// `value` quoted to be read back as exactly itself where `quoting` says it stands.
pub fn quote(value: &str, quoting: Quoting) -> Result<String, String> {
    if value.contains('\0') {
        return Err("a NUL byte cannot be passed to a shell".into());
    }
    Ok(match quoting {
        Quoting::Bare => format!("'{}'", value.replace('\'', r"'\''")),
        Quoting::Single => value.replace('\'', r"'\''"),
        Quoting::Double => {
            let mut out = String::with_capacity(value.len());
            for c in value.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }

    fn expr() -> Part {
        Part::Expr(crate::compile::expr::Expr {
            text: "x".into(),
            source: "x".into(),
            span: Default::default(),
            refs: Vec::new(),
        })
    }

    fn at(before: &str) -> Result<Quoting, &'static str> {
        quoting(&[lit(before), expr(), lit(" end")])[0]
    }

    #[test]
    fn each_context_is_found() {
        assert_eq!(at("echo "), Ok(Quoting::Bare));
        assert_eq!(at("echo 'a "), Ok(Quoting::Single));
        assert_eq!(at("echo \"a "), Ok(Quoting::Double));
        assert_eq!(at("echo \"a\" 'b' "), Ok(Quoting::Bare));
        assert_eq!(at("echo \\' "), Ok(Quoting::Bare), "an escaped quote");
        assert_eq!(
            at("# don't\necho "),
            Ok(Quoting::Bare),
            "a quote in a comment"
        );
        assert_eq!(at("echo \"$(printf '%s "), Ok(Quoting::Single));
        assert_eq!(
            at("echo \"$(echo "),
            Ok(Quoting::Bare),
            "$( ) starts afresh"
        );
        assert_eq!(at("echo \"$(echo a)\" \""), Ok(Quoting::Double));
        assert_eq!(at("echo $((1+2)) "), Ok(Quoting::Bare));
        assert_eq!(at("echo ${HOME}/"), Ok(Quoting::Bare), "a closed ${{}}");
        assert!(at("echo `echo ").is_err());
        assert!(at("echo ${X:-").is_err());
        assert!(at("echo $'a ").is_err());
        assert!(at("cat <<EOF\n").is_err());
    }

    /// Each hostile value, quoted for each context and read back by a real `sh`.
    #[test]
    fn sh_reads_every_quoted_value_back_byte_for_byte() {
        let values = [
            "plain",
            "it's",
            "a \"b\" $c `d` \\e",
            "x; touch PWNED",
            "$(touch PWNED)",
            "",
            "'",
            "\"",
            "\\",
            "a\nb\tc",
            "é ß ℝ",
            "'\"'\"",
            "-e",
        ];
        for v in values {
            for (q, script) in [
                (Quoting::Bare, "printf %s {}"),
                (Quoting::Single, "printf %s '{}'"),
                (Quoting::Double, "printf %s \"{}\""),
            ] {
                let quoted = quote(v, q).unwrap();
                let script = script.replace("{}", &quoted);
                let out = std::process::Command::new("sh")
                    .args(["-c", &script])
                    .current_dir(std::env::temp_dir())
                    .output()
                    .unwrap();
                assert_eq!(String::from_utf8_lossy(&out.stdout), v, "{q:?}: {script}");
            }
        }
        assert!(quote("a\0b", Quoting::Bare).is_err());
    }
}
