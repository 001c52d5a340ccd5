//! `shell.run`'s `script:` is shell source, and a value put into it with `${{ }}` must reach the
//! shell as data, never as code. Each expression is quoted for where it stands in the script:
//! outside quotes it becomes one single-quoted word; inside single quotes, its own quotes are
//! closed and reopened around an escaped `'`; inside double quotes, the double quotes are closed
//! around one single-quoted word. Either way the command sees the value byte for byte. Where the quoting cannot be
//! known from the text around the expression (inside backticks, `$'…'`, `${…}`, in a comment,
//! right after a backslash, or at or after a here-document), the runbook is refused at validate:
//! pass the value through `env:` instead.

use super::Part;

/// How the shell reads the text where an expression stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    Bare,
    Single,
    Double,
}

/// Where each `${{ }}` of a script stands (one entry per `Part::Expr`, in order), or why it
/// cannot be quoted safely there.
///
/// The shell's grammar is large; this follows only its plain part: words, `'…'`, `"…"`,
/// backslashes, comments, `${NAME}`. From the first construct that changes how later text is
/// read — a command substitution `$(…)` or backticks (and arithmetic `$((…))`, `((…))`,
/// `$[…]`), any other `${…}`, `$'…'`, a here-document `<<`, a line continuation — every later
/// expression is refused rather than guessed at.
pub fn quoting(parts: &[Part]) -> Vec<Result<Quoting, &'static str>> {
    let mut quoting = Quoting::Bare;
    // Sticky: once set, every later expression is refused, with why.
    let mut poisoned: Option<&'static str> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut word_start = true;
    // The last character of the text before an expression, when it is a `$`.
    let mut after_dollar = false;
    // The word being read outside quotes (for `alias`, `eval`…).
    let mut word = String::new();
    let mut out = Vec::new();
    for part in parts {
        let text = match part {
            Part::Expr(_) => {
                out.push(match poisoned {
                    Some(why) => Err(why),
                    // A value with a newline would end the comment and run what follows.
                    None if comment => Err("in a comment"),
                    // The backslash would take the quote that opens the value.
                    None if escaped => Err("right after a backslash"),
                    // `$'…'` would read the value's backslashes, `$"…"` translate it.
                    None if after_dollar && quoting != Quoting::Single => Err("right after `$`"),
                    None => Ok(quoting),
                });
                word_start = false;
                after_dollar = false;
                word.push('\u{0}');
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
            after_dollar = false;
            if escaped {
                escaped = false;
                word_start = false;
                if c == '\n' {
                    poisoned.get_or_insert("after a line continuation (`\\` at the end of a line)");
                }
                continue;
            }
            if comment {
                if c == '\n' {
                    comment = false;
                    word_start = true;
                }
                continue;
            }
            match quoting {
                Quoting::Single => {
                    if c == '\'' {
                        quoting = Quoting::Bare;
                    }
                }
                Quoting::Bare | Quoting::Double => match (c, next) {
                    ('\\', _) => escaped = true,
                    ('"', _) if quoting == Quoting::Double => quoting = Quoting::Bare,
                    ('"', _) => quoting = Quoting::Double,
                    ('\'', _) if quoting == Quoting::Bare => quoting = Quoting::Single,
                    ('#', _) if quoting == Quoting::Bare && word_start => comment = true,
                    ('`', _) => {
                        poisoned.get_or_insert("inside or after backticks");
                    }
                    ('$', Some('(')) => {
                        poisoned.get_or_insert(
                            "inside or after a command substitution or arithmetic `$(…)`",
                        );
                    }
                    ('$', Some('[')) => {
                        poisoned.get_or_insert("inside or after arithmetic `$[…]`");
                    }
                    ('$', Some('\'')) if quoting == Quoting::Bare => {
                        poisoned.get_or_insert("inside or after `$'…'`");
                    }
                    ('$', Some('{')) => {
                        // `${NAME}` alone is plain; anything else (`${X:-…}`, `${#X}`) is not.
                        let name: String = chars[i + 1..]
                            .iter()
                            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                            .collect();
                        if !name.is_empty() && chars.get(i + 1 + name.len()) == Some(&'}') {
                            i += 1 + name.len() + 1;
                        } else {
                            poisoned.get_or_insert("inside or after a `${…}` expansion");
                        }
                    }
                    ('$', None) => after_dollar = true,
                    ('(', Some('(')) if quoting == Quoting::Bare => {
                        poisoned.get_or_insert("inside or after arithmetic `((…))`");
                    }
                    ('<', Some('<')) if quoting == Quoting::Bare => {
                        poisoned.get_or_insert("at or after a here-document (`<<`)");
                    }
                    _ => {}
                },
            }
            // The shell's blanks and operators only: a no-break space or a carriage return
            // is part of a word to `sh`, so a `#` after one starts no comment.
            word_start = matches!(
                c,
                ' ' | '\t' | '\n' | ';' | '|' | '&' | '(' | ')' | '<' | '>'
            );
            // Words that turn later text into code (or change how it is read).
            if quoting == Quoting::Bare && word_start {
                word.clear();
            } else if quoting == Quoting::Bare {
                word.push(c);
                if matches!(next, Some(' ' | '\t' | '\n' | ';' | '&' | '|') | None)
                    && matches!(
                        word.as_str(),
                        "alias" | "eval" | "trap" | "shopt" | "source" | "."
                    )
                {
                    poisoned.get_or_insert(
                        "after `alias`, `eval`, `trap`, `shopt` or `source` (they make text into code)",
                    );
                }
            }
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
        // Close the double quotes, one single-quoted word, reopen: no backslash next to the
        // value's characters (bash in a GBK or Big5 locale can read a backslash after a
        // multibyte character as part of it).
        Quoting::Double => format!("\"'{}'\"", value.replace('\'', r"'\''")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Part {
        Part::Lit(s.into())
    }

    fn expr() -> Part {
        Part::Expr(super::super::Expr {
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
        assert!(at("echo \"$(printf '%s ").is_err(), "inside $( )");
        assert!(at("echo \"$(echo a)\" \"").is_err(), "after $( )");
        assert!(at("echo $(( ").is_err(), "arithmetic");
        assert!(at("(( ").is_err(), "arithmetic");
        assert!(at("echo $[ ").is_err(), "arithmetic");
        assert!(
            at("echo \"$(case a in a) printf %s ").is_err(),
            "a case inside $( )"
        );
        assert!(
            at("echo ${u:-'}'} ").is_err(),
            "an expansion with an operator"
        );
        assert!(at("printf ok \\\n# ").is_err(), "a line continuation");
        assert!(at("printf %s $").is_err(), "right after $");
        assert_eq!(at("echo \"$"), Err("right after `$`"));
        assert_eq!(
            at("echo '$"),
            Ok(Quoting::Single),
            "a $ in '…' is a character"
        );
        assert_eq!(at("echo ${HOME}/"), Ok(Quoting::Bare), "a plain ${{NAME}}");
        assert_eq!(at("( cd /tmp; echo "), Ok(Quoting::Bare), "a subshell");
        // A no-break space (or a carriage return) is no blank to `sh`: the `#` after it starts
        // no comment, and the quote after that opens.
        assert_eq!(at("echo a\u{a0}# don't\nprintf %s "), Ok(Quoting::Single));
        assert_eq!(at("echo a\r# don't\nprintf %s "), Ok(Quoting::Single));
        assert_eq!(
            at("echo a >#x\nprintf %s "),
            Ok(Quoting::Bare),
            "# after > is a comment"
        );
        assert!(at("alias log='logger # x'\nlog ").is_err(), "alias");
        assert!(at("eval echo ").is_err(), "eval");
        assert!(at("trap 'echo ").is_err(), "trap");
        assert_eq!(
            at("echo evaluate "),
            Ok(Quoting::Bare),
            "a word that starts like eval"
        );
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
