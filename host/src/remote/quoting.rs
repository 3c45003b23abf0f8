//! The quoting context of each `{{param}}` placeholder in a shell script.
//!
//! A parameter's value never becomes script text: the script gets a prologue
//! assigning each value to a variable with a single-quoted literal (the one
//! quoting whose only special character is `'`), and each placeholder
//! becomes a reference to that variable written for the quoting it sits in.
//! That needs to know, for every placeholder, whether the shell reads it
//! unquoted, inside '…' or inside "…" — which is what this lexer answers.
//!
//! It follows the part of the POSIX shell language that decides quoting:
//! quotes, backslashes, `$(…)`, `$((…))`, `${…}`, backquotes, `$'…'`,
//! comments and here-documents. It does not parse commands. Where the
//! shell's reading is not certain — inside backquotes, arithmetic, `${…}`,
//! `$'…'`, `$"…"` or a here-document, right after a `$` or a backslash, or
//! after a construct shells disagree on — a placeholder is refused with the
//! reason rather than guessed at.

use std::ops::Range;

use super::template::{placeholders, shell_quote};

/// Prefix of the variables that carry parameter values.
pub(crate) const VAR_PREFIX: &str = "__dcp_p_";

/// How the shell reads a placeholder's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// Outside quotes (a comment counts: what is written there is inert).
    Unquoted,
    /// Inside '…'.
    Single,
    /// Inside "…".
    Double,
}

/// A placeholder whose position cannot be proven safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    /// The parameter.
    pub name: String,
    /// Why, phrased to follow "placeholder {{name}}".
    pub reason: String,
}

impl Refused {
    fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    /// The sentence the API shows.
    pub(crate) fn message(&self) -> String {
        format!(
            "placeholder {{{{{}}}}} {}; DCP passes values only where the quoting is certain \
             (unquoted, inside '…' or inside \"…\")",
            self.name, self.reason
        )
    }
}

/// `script` with every placeholder replaced by a reference to a variable
/// holding `value(name)`, the assignments in a prologue; unchanged when it
/// has no placeholder.
pub(crate) fn render(
    script: &str,
    mut value: impl FnMut(&str) -> String,
) -> Result<String, Refused> {
    let found = contexts(script)?;
    if found.is_empty() {
        return Ok(script.to_owned());
    }
    let mut names: Vec<&str> = found.iter().map(|(_, name, _)| *name).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = String::with_capacity(script.len() + 64 * names.len());
    for name in names {
        // Newline-terminated: whatever the script starts with, the
        // assignments are complete commands before it.
        out.push_str(&format!(
            "{VAR_PREFIX}{name}={}\n",
            shell_quote(&value(name))
        ));
    }
    let mut last = 0;
    for (range, name, context) in found {
        out.push_str(&script[last..range.start]);
        out.push_str(&match context {
            Context::Unquoted => format!("\"${{{VAR_PREFIX}{name}}}\""),
            Context::Double => format!("${{{VAR_PREFIX}{name}}}"),
            // Close the quote, expand inside double quotes, reopen.
            Context::Single => format!("'\"${{{VAR_PREFIX}{name}}}\"'"),
        });
        last = range.end;
    }
    out.push_str(&script[last..]);
    Ok(out)
}

/// A placeholder's place, parameter and context.
pub(crate) type Placed<'s> = (Range<usize>, &'s str, Context);

/// Every placeholder of `script` with its context, in order; the first one
/// whose context is not certain is refused.
pub(crate) fn contexts(script: &str) -> Result<Vec<Placed<'_>>, Refused> {
    let found = placeholders(script);
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let mut lexer = Lexer {
        s: script.as_bytes(),
        i: 0,
        found: &found,
        next: 0,
        out: Vec::with_capacity(found.len()),
        stack: vec![Frame::Commands {
            subst: false,
            parens: 0,
        }],
        word_start: true,
        pending: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.out)
}

/// What the lexer is inside of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Frame {
    /// The script, or the inside of `$(…)` (`parens` counts unclosed `(`).
    Commands { subst: bool, parens: u32 },
    /// '…'.
    Single,
    /// "…"; `$"…"` (bash's translated strings) when `locale`.
    Double { locale: bool },
    /// `$'…'`; `escapes` when a backslash was seen.
    DollarSingle { escapes: bool },
    /// `…` (the old command substitution).
    Backquote,
    /// `$((…))` or `((…))`.
    Arith { parens: u32 },
    /// `${…}`, and whether it sits inside "…".
    Brace { in_double: bool },
    /// `# …` to the end of the line.
    Comment,
    /// A here-document's body.
    Heredoc(Heredoc),
}

/// A here-document announced by `<<`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Heredoc {
    delimiter: String,
    /// `<<-`: leading tabs are stripped from body lines.
    strip_tabs: bool,
}

impl Frame {
    /// Why a placeholder inside this frame is refused, if it is.
    fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Commands { .. } | Self::Single | Self::Comment => None,
            Self::Double { locale: false } => None,
            Self::Double { locale: true } => Some("is inside a translated string $\"…\""),
            Self::DollarSingle { .. } => Some("is inside a $'…' string"),
            Self::Backquote => {
                Some("is inside a backquoted `…` command substitution (use $(…) instead)")
            }
            Self::Arith { .. } => Some("is inside arithmetic $((…))"),
            Self::Brace { .. } => Some("is inside a parameter expansion ${…}"),
            Self::Heredoc(_) => Some("is inside a here-document"),
        }
    }

    fn unterminated(&self) -> &'static str {
        match self {
            Self::Commands { .. } => "an unterminated $(…)",
            Self::Single => "an unterminated '…'",
            Self::Double { .. } => "an unterminated \"…\"",
            Self::DollarSingle { .. } => "an unterminated $'…'",
            Self::Backquote => "an unterminated `…`",
            Self::Arith { .. } => "an unterminated $((…))",
            Self::Brace { .. } => "an unterminated ${…}",
            Self::Comment => "a comment",
            Self::Heredoc(_) => "an unterminated here-document",
        }
    }
}

struct Lexer<'s, 'f> {
    s: &'s [u8],
    i: usize,
    found: &'f [(Range<usize>, &'s str)],
    /// The first placeholder not yet reached.
    next: usize,
    out: Vec<Placed<'s>>,
    stack: Vec<Frame>,
    /// Whether a `#` here would start a comment.
    word_start: bool,
    /// Here-documents whose bodies start after the next newline.
    pending: Vec<Heredoc>,
}

/// Where the lexer goes from a step.
enum Flow {
    Go,
    Done,
}

impl<'s> Lexer<'s, '_> {
    fn run(&mut self) -> Result<(), Refused> {
        while self.i < self.s.len() {
            if let Flow::Done = self.step()? {
                return Ok(());
            }
        }
        // A comment may end the script; anything else open is unterminated.
        match self
            .stack
            .iter()
            .skip(1)
            .rev()
            .find(|f| **f != Frame::Comment)
        {
            None => Ok(()),
            Some(open) => Err(self.refuse_last(format!(
                "is followed by {} at the end of the script",
                open.unterminated()
            ))),
        }
    }

    fn top(&self) -> &Frame {
        self.stack.last().unwrap_or(&Frame::Comment)
    }

    fn at(&self, offset: usize) -> Option<u8> {
        self.s.get(self.i + offset).copied()
    }

    fn rest_starts_with(&self, text: &str) -> bool {
        self.s[self.i..].starts_with(text.as_bytes())
    }

    fn placeholder_at(&self, at: usize) -> Option<&(Range<usize>, &'s str)> {
        self.found.get(self.next).filter(|(r, _)| r.start == at)
    }

    /// Names the last placeholder seen (or the first) for a problem found
    /// after all of them.
    fn refuse_last(&self, reason: String) -> Refused {
        let name = self
            .found
            .get(self.next.saturating_sub(1))
            .map_or("", |(_, n)| n);
        Refused::new(name, reason)
    }

    /// Stops following the script: the rest cannot be read with
    /// certainty, so a placeholder in it is refused.
    fn give_up(&self, what: &str) -> Result<Flow, Refused> {
        match self.found.get(self.next) {
            Some((_, name)) => Err(Refused::new(
                name,
                format!("comes after {what}, where DCP cannot follow the quoting"),
            )),
            None => Ok(Flow::Done),
        }
    }

    /// Moves `n` bytes on; a placeholder starting inside them (after the
    /// first byte) is refused for `why`.
    fn advance(&mut self, n: usize, why: &str) -> Result<Flow, Refused> {
        let end = (self.i + n).min(self.s.len());
        if let Some((range, name)) = self.found.get(self.next)
            && range.start > self.i
            && range.start < end
        {
            return Err(Refused::new(name, why.to_owned()));
        }
        self.i = end;
        Ok(Flow::Go)
    }

    fn push(&mut self, frame: Frame, n: usize) -> Result<Flow, Refused> {
        self.stack.push(frame);
        self.word_start = false;
        self.advance(n, "is right after a $")
    }

    fn pop(&mut self, n: usize) -> Result<Flow, Refused> {
        self.stack.pop();
        self.advance(n, "is right after a $")
    }

    fn step(&mut self) -> Result<Flow, Refused> {
        if let Some((range, name)) = self.placeholder_at(self.i).cloned() {
            self.next += 1;
            let context = self.context().map_err(|why| Refused::new(name, why))?;
            self.out.push((range.clone(), name, context));
            self.word_start = false;
            self.i = range.end;
            return Ok(Flow::Go);
        }
        let c = self.s[self.i];
        match self.top().clone() {
            Frame::Commands { subst, parens } => self.commands(c, subst, parens),
            Frame::Single if c == b'\'' => self.pop(1),
            Frame::Comment if c == b'\n' => {
                // The newline is the script's: it may start here-documents.
                self.stack.pop();
                Ok(Flow::Go)
            }
            Frame::Single | Frame::Comment => self.advance(1, ""),
            Frame::Double { .. } => match c {
                b'\\' => self.advance(2, "is right after a backslash"),
                b'"' => self.pop(1),
                b'`' => self.push(Frame::Backquote, 1),
                b'$' => self.dollar(false),
                _ => self.advance(1, ""),
            },
            Frame::DollarSingle { escapes } => match c {
                b'\\' => {
                    self.stack.pop();
                    self.stack.push(Frame::DollarSingle { escapes: true });
                    self.advance(2, "is inside a $'…' string")
                }
                // Shells without $'…' end it at the first quote.
                b'\'' if escapes => self.give_up("a $'…' string with backslashes"),
                b'\'' => self.pop(1),
                _ => self.advance(1, ""),
            },
            Frame::Backquote => match c {
                b'\\' => self.advance(2, "is inside a backquoted `…` command substitution"),
                b'`' => self.pop(1),
                _ => self.advance(1, ""),
            },
            Frame::Arith { parens } => match c {
                b'(' => self.replace_top(Frame::Arith { parens: parens + 1 }),
                b')' if parens > 0 => self.replace_top(Frame::Arith { parens: parens - 1 }),
                b')' if self.at(1) == Some(b')') => self.pop(2),
                // bash reads `((a) …)` as nested subshells after all.
                b')' => self.give_up("a (( that is not arithmetic"),
                b'$' => self.dollar(false),
                b'\'' | b'"' | b'`' | b'\\' => self.give_up("quotes inside arithmetic"),
                _ => self.advance(1, ""),
            },
            Frame::Brace { in_double } => match c {
                b'}' => self.pop(1),
                b'\\' => self.advance(2, "is right after a backslash"),
                b'"' => self.push(Frame::Double { locale: false }, 1),
                // Inside "${…}" shells disagree whether ' quotes.
                b'\'' if in_double => self.give_up("a ' inside \"${…}\""),
                b'\'' => self.push(Frame::Single, 1),
                b'`' => self.push(Frame::Backquote, 1),
                b'$' => self.dollar(false),
                b'{' => self.give_up("a { inside ${…}"),
                _ => self.advance(1, ""),
            },
            Frame::Heredoc(doc) => self.heredoc_line(&doc),
        }
    }

    fn replace_top(&mut self, frame: Frame) -> Result<Flow, Refused> {
        self.stack.pop();
        self.stack.push(frame);
        self.advance(1, "")
    }

    /// The context of a placeholder here, or why it has none.
    fn context(&self) -> Result<Context, &'static str> {
        if let Some(why) = self.stack.iter().find_map(Frame::refusal) {
            return Err(why);
        }
        Ok(match self.top() {
            Frame::Single => Context::Single,
            Frame::Double { .. } => Context::Double,
            _ => Context::Unquoted,
        })
    }

    /// A `$` in commands (`commands`) or in "…", `${…}` and arithmetic.
    fn dollar(&mut self, commands: bool) -> Result<Flow, Refused> {
        if let Some((_, name)) = self.placeholder_at(self.i + 1) {
            return Err(Refused::new(name, "is right after a $"));
        }
        match (self.at(1), self.at(2)) {
            (Some(b'('), Some(b'(')) => self.push(Frame::Arith { parens: 0 }, 3),
            (Some(b'('), _) => {
                let flow = self.push(
                    Frame::Commands {
                        subst: true,
                        parens: 0,
                    },
                    2,
                );
                // The first word of the commands inside.
                self.word_start = true;
                flow
            }
            (Some(b'{'), _) => {
                let in_double = !commands && matches!(self.top(), Frame::Double { .. });
                self.push(Frame::Brace { in_double }, 2)
            }
            (Some(b'\''), _) if commands => self.push(Frame::DollarSingle { escapes: false }, 2),
            (Some(b'"'), _) if commands => self.push(Frame::Double { locale: true }, 2),
            _ => {
                self.word_start = false;
                self.advance(1, "")
            }
        }
    }

    fn commands(&mut self, c: u8, subst: bool, parens: u32) -> Result<Flow, Refused> {
        let word_start = self.word_start;
        self.word_start = false;
        match c {
            b'\\' => self.advance(2, "is right after a backslash"),
            b'\'' => self.push(Frame::Single, 1),
            b'"' => self.push(Frame::Double { locale: false }, 1),
            b'`' => self.push(Frame::Backquote, 1),
            b'$' => self.dollar(true),
            b'#' if word_start => self.push(Frame::Comment, 1),
            b'(' if word_start && self.at(1) == Some(b'(') => {
                self.push(Frame::Arith { parens: 0 }, 2)
            }
            b'(' => {
                self.word_start = true;
                if subst {
                    self.replace_top(Frame::Commands {
                        subst,
                        parens: parens + 1,
                    })
                } else {
                    self.advance(1, "")
                }
            }
            b')' => {
                self.word_start = true;
                match (subst, parens) {
                    (true, 0) => {
                        // `$(x)#y` is one word.
                        self.word_start = false;
                        self.pop(1)
                    }
                    (true, _) => self.replace_top(Frame::Commands {
                        subst,
                        parens: parens - 1,
                    }),
                    (false, _) => self.advance(1, ""),
                }
            }
            b'<' if self.rest_starts_with("<<<") => {
                self.word_start = true;
                self.advance(3, "")
            }
            b'<' if self.rest_starts_with("<<") => self.heredoc_start(),
            b'\n' => {
                self.word_start = true;
                self.advance(1, "")?;
                // Bodies follow in the order they were announced.
                for doc in std::mem::take(&mut self.pending).into_iter().rev() {
                    self.stack.push(Frame::Heredoc(doc));
                }
                Ok(Flow::Go)
            }
            b' ' | b'\t' | b'\r' | b';' | b'&' | b'|' | b'<' | b'>' => {
                self.word_start = true;
                self.advance(1, "")
            }
            // A case inside $(…) has a `)` that does not close it, which
            // old shells and simple readers get wrong.
            b'c' if subst
                && word_start
                && self.rest_starts_with("case")
                && self.at(4).is_none_or(|b| b.is_ascii_whitespace()) =>
            {
                self.give_up("a case statement inside $(…)")
            }
            _ => self.advance(1, ""),
        }
    }

    /// `<<` or `<<-` and its delimiter word.
    fn heredoc_start(&mut self) -> Result<Flow, Refused> {
        let strip_tabs = self.at(2) == Some(b'-');
        self.advance(if strip_tabs { 3 } else { 2 }, "")?;
        while matches!(self.at(0), Some(b' ' | b'\t')) {
            self.advance(1, "")?;
        }
        let mut delimiter = Vec::new();
        while let Some(c) = self.at(0) {
            if let Some((_, name)) = self.placeholder_at(self.i) {
                return Err(Refused::new(name, "is in a here-document's delimiter"));
            }
            match c {
                b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'<' | b'>' => break,
                b'\'' | b'"' => {
                    let close = self.s[self.i + 1..].iter().position(|&b| b == c);
                    let Some(len) = close else {
                        return self.give_up("an unterminated here-document delimiter");
                    };
                    let quoted = &self.s[self.i + 1..self.i + 1 + len];
                    if quoted.iter().any(|b| matches!(b, b'\\' | b'$' | b'`')) {
                        return self.give_up("a here-document delimiter with \\, $ or `");
                    }
                    delimiter.extend_from_slice(quoted);
                    self.advance(len + 2, "is in a here-document's delimiter")?;
                }
                b'\\' => {
                    delimiter.extend(self.at(1));
                    self.advance(2, "is in a here-document's delimiter")?;
                }
                b'$' | b'`' => return self.give_up("a here-document delimiter with $ or `"),
                _ => {
                    delimiter.push(c);
                    self.advance(1, "")?;
                }
            }
        }
        if delimiter.is_empty() {
            return self.give_up("a here-document without a delimiter");
        }
        self.pending.push(Heredoc {
            delimiter: String::from_utf8_lossy(&delimiter).into_owned(),
            strip_tabs,
        });
        self.word_start = true;
        Ok(Flow::Go)
    }

    /// One line of a here-document's body (the lexer is at its start).
    fn heredoc_line(&mut self, doc: &Heredoc) -> Result<Flow, Refused> {
        let rest = &self.s[self.i..];
        let len = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let mut line = &rest[..len];
        if doc.strip_tabs {
            while let [b'\t', tail @ ..] = line {
                line = tail;
            }
        }
        let is_end = line == doc.delimiter.as_bytes();
        if let Some((range, name)) = self.found.get(self.next)
            && range.start < self.i + len
        {
            return Err(Refused::new(
                name,
                Frame::Heredoc(doc.clone()).refusal().unwrap_or(""),
            ));
        }
        self.i = (self.i + len + 1).min(self.s.len());
        if is_end {
            self.stack.pop();
        }
        Ok(Flow::Go)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(script: &str) -> Vec<(&str, Context)> {
        contexts(script)
            .unwrap_or_else(|r| panic!("{script:?}: {}", r.message()))
            .into_iter()
            .map(|(_, n, c)| (n, c))
            .collect()
    }

    fn refused(script: &str) -> Refused {
        contexts(script).expect_err(script)
    }

    use Context::{Double, Single, Unquoted};

    #[test]
    fn quotes_decide_the_context() {
        assert_eq!(
            of(r#"echo {{a}} '{{b}}' "{{c}}" x'{{a}}'y"{{b}}"z{{c}}"#),
            [
                ("a", Unquoted),
                ("b", Single),
                ("c", Double),
                ("a", Single),
                ("b", Double),
                ("c", Unquoted)
            ]
        );
        // A ' inside "…" and a " inside '…' are plain characters.
        assert_eq!(
            of(r#"echo "it's {{a}}" 'say "{{b}}"' {{c}}"#),
            [("a", Double), ("b", Single), ("c", Unquoted)]
        );
        // Escaped quotes do not open anything.
        assert_eq!(
            of(r#"echo \' {{a}} "\"{{b}}" \" {{c}}"#),
            [("a", Unquoted), ("b", Double), ("c", Unquoted)]
        );
    }

    #[test]
    fn command_substitution_starts_afresh_inside_double_quotes() {
        assert_eq!(
            of(r#"echo "$(printf %s '{{a}}' "{{b}}" {{c}}) {{a}}" $(f (x) {{b}})"#),
            [
                ("a", Single),
                ("b", Double),
                ("c", Unquoted),
                ("a", Double),
                ("b", Unquoted)
            ]
        );
    }

    #[test]
    fn comments_and_here_documents_are_followed() {
        assert_eq!(
            of("echo a#b {{a}} # it's {{b}}\necho '{{c}}'"),
            [("a", Unquoted), ("b", Unquoted), ("c", Single)]
        );
        let script = "cat <<EOF; cat <<-'END'\n'\"`$x\nEOF\n\t'\n\tEND\necho '{{a}}'";
        assert_eq!(of(script), [("a", Single)]);
        assert_eq!(of("cat <<< \"x\" {{a}}"), [("a", Unquoted)]);
        assert_eq!(
            of("x=$((1 << 2)); (( y = 3 )); echo '{{a}}'"),
            [("a", Single)]
        );
    }

    #[test]
    fn unsafe_contexts_are_refused_with_the_reason() {
        for (script, reason) in [
            ("echo `echo {{a}}`", "backquoted"),
            ("echo \"`echo '{{a}}'`\"", "backquoted"),
            ("echo $'{{a}}'", "$'"),
            ("echo $\"{{a}}\"", "translated"),
            ("echo $(( {{a}} + 1 ))", "arithmetic"),
            ("(( {{a}} ))", "arithmetic"),
            ("echo ${x:-{{a}}}", "${"),
            ("echo \"${x:-{{a}}}\"", "${"),
            ("echo ${{a}}", "after a $"),
            ("echo \\{{a}}", "backslash"),
            ("echo \"\\{{a}}\"", "backslash"),
            ("cat <<EOF\n{{a}}\nEOF", "here-document"),
            ("cat <<{{a}}\nx\n", "delimiter"),
            ("echo \"{{a}}", "unterminated \"…\""),
            ("echo '{{a}}", "unterminated '…'"),
            ("echo $(x {{a}}", "unterminated $(…)"),
            ("echo $(case x in x) y;; esac) {{a}}", "case"),
            ("echo $'a\\'b' {{a}}", "$'…' string with backslashes"),
            ("echo \"${x:-'}'}\" {{a}}", "' inside"),
        ] {
            let r = refused(script);
            assert_eq!(r.name, "a", "{script:?}");
            assert!(
                r.message().contains(reason) && r.message().contains("{{a}}"),
                "{script:?}: {}",
                r.message()
            );
        }
    }

    #[test]
    fn scripts_without_placeholders_are_not_judged() {
        assert_eq!(of("echo `date` $'x' \"unterminated"), []);
        assert_eq!(
            render("echo `date` {{.Names}}", |_| unreachable!()).unwrap(),
            "echo `date` {{.Names}}"
        );
    }

    #[test]
    fn values_become_variables_referenced_per_context() {
        let script = r#"echo {{b}} '{{a}}' "{{b}}""#;
        let rendered = render(script, |n| format!("{n}'$(x)")).unwrap();
        assert_eq!(
            rendered,
            "__dcp_p_a='a'\\''$(x)'\n__dcp_p_b='b'\\''$(x)'\n\
             echo \"${__dcp_p_b}\" ''\"${__dcp_p_a}\"'' \"${__dcp_p_b}\""
        );
    }
}
