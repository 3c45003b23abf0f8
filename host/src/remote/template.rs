//! `{{param}}` placeholders in command scripts.
//!
//! Only `{{ name }}` with an identifier inside is a placeholder, so the many
//! scripts that contain Go templates (`docker ps --format '{{.Names}}'`)
//! pass through untouched.

use std::ops::Range;

/// Where each placeholder is in `script`, with its parameter name.
pub(crate) fn placeholders(script: &str) -> Vec<(Range<usize>, &str)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = script[from..].find("{{").map(|i| from + i) {
        let inner_start = start + 2;
        let Some(end) = script[inner_start..].find("}}").map(|i| inner_start + i) else {
            break;
        };
        let name = script[inner_start..end].trim();
        if is_name(name) {
            found.push((start..end + 2, name));
            from = end + 2;
        } else {
            from = inner_start;
        }
    }
    found
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `script` with each placeholder replaced by `value(name)`.
pub(crate) fn render(script: &str, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(script.len());
    let mut last = 0;
    for (range, name) in placeholders(script) {
        out.push_str(&script[last..range.start]);
        out.push_str(&value(name));
        last = range.end;
    }
    out.push_str(&script[last..]);
    out
}

/// `value` as one single-quoted shell word: whatever it contains, the
/// remote shell sees a literal string.
pub(crate) fn shell_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            // Close the quote, add an escaped quote, reopen.
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identifiers_are_placeholders() {
        let script = "echo {{ a }} {{b_2}} {{.Names}} {{ 3x }} {{";
        let names: Vec<_> = placeholders(script).into_iter().map(|(_, n)| n).collect();
        assert_eq!(names, ["a", "b_2"]);
        assert_eq!(
            render(script, |n| n.to_uppercase()),
            "echo A B_2 {{.Names}} {{ 3x }} {{"
        );
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
