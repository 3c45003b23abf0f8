//! Field rules shared by every module. A rule either passes or names the
//! field and what it breaks, which the API turns into a 422.

use std::borrow::Cow;

/// A field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field's name in the request, e.g. `name` or `params.version`.
    pub field: Cow<'static, str>,
    /// What is wrong, phrased to follow the field name.
    pub message: String,
}

impl Invalid {
    /// `field` breaks a rule described by `message`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A name used in URLs, configs and hostnames: a [`name`] of 1–`max`
/// characters of `a-z`, `0-9`, `-` and `_`.
pub fn identifier(
    field: impl Into<Cow<'static, str>>,
    value: &str,
    max: usize,
) -> Result<(), Invalid> {
    let field = field.into();
    name(field.clone(), value, max)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_'))
    {
        return Err(Invalid::new(
            field,
            format!("may contain only lowercase letters, digits, '-' and '_' (found {bad:?})"),
        ));
    }
    Ok(())
}

/// The one rule for every name a user gives (clusters, services, pools,
/// commands, groups, machines, templates, accounts, tokens, plugins…):
/// present, at most `max` characters, no whitespace at either end, and no
/// control or invisible formatting characters. Names end up in headers,
/// file names, logs and terminals, where a newline, a NUL or a bidi override
/// (U+202E) would break the header or make the name lie about itself.
pub fn name(field: impl Into<Cow<'static, str>>, value: &str, max: usize) -> Result<(), Invalid> {
    let field = field.into();
    if value.trim().is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if value.trim() != value {
        return Err(Invalid::new(field, "must not start or end with whitespace"));
    }
    if let Some(bad) = value.chars().find(|&c| hidden(c)) {
        return Err(Invalid::new(
            field,
            format!(
                "must not contain control or invisible formatting characters (found U+{:04X})",
                u32::from(bad)
            ),
        ));
    }
    max_chars(field, value, max)
}

/// Free text of at most `max` characters: any line breaks and tabs, but no
/// other control characters (PostgreSQL cannot even store a NUL) and no
/// invisible bidi or formatting characters.
pub fn max_chars(
    field: impl Into<Cow<'static, str>>,
    value: &str,
    max: usize,
) -> Result<(), Invalid> {
    let field = field.into();
    if let Some(bad) = value
        .chars()
        .find(|&c| hidden(c) && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Invalid::new(
            field,
            format!(
                "must not contain control or invisible formatting characters (found U+{:04X})",
                u32::from(bad)
            ),
        ));
    }
    if value.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Text that must be present, at most `max` characters.
pub fn required(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    max_chars(field, value, max)
}

/// A search filter (e.g. `?name=`): at most 256 characters and no control
/// or formatting characters. SQLite ends a bound string at a NUL, so a
/// filter holding one would match every row instead of none.
pub fn filter(field: &'static str, value: &str) -> Result<(), Invalid> {
    if value.chars().any(hidden) {
        return Err(Invalid::new(
            field,
            "must not contain control or invisible formatting characters",
        ));
    }
    max_chars(field, value, 256)
}

/// The one rule for a server's network address (nodes, adopted machines,
/// execution hosts): an IPv4 or IPv6 address, or a DNS host name (RFC 1123:
/// dot-separated labels of 1–63 letters, digits and inner hyphens, at most
/// 253 characters in all). Anything else could never be connected to.
pub fn address(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), Invalid> {
    let field = field.into();
    if value.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    // An all-numeric dotted name is a malformed IPv4 address, not a host.
    let numeric = value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if value.len() <= 253 && !numeric && value.split('.').all(label_ok) {
        return Ok(());
    }
    Err(Invalid::new(
        field,
        "must be an IP address or a DNS host name (letters, digits, '-' and '.')",
    ))
}

/// Characters that are invisible or change how text around them reads:
/// control characters (C0, DEL, C1), bidi embeddings, overrides, isolates
/// and marks, zero-width characters, line/paragraph separators and the BOM.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        assert!(identifier("name", "web-01_a", 64).is_ok());
        assert_eq!(
            identifier("name", "", 64).unwrap_err().message,
            "is required"
        );
        assert!(
            identifier("name", "Web", 64)
                .unwrap_err()
                .message
                .contains("'W'")
        );
        assert!(identifier("name", &"a".repeat(65), 64).is_err());
        assert!(identifier("name", &"a".repeat(64), 64).is_ok());
        assert!(identifier("name", "a b", 64).is_err());
    }

    #[test]
    fn names_refuse_control_and_bidi_characters() {
        assert!(name("name", "Web server · 東京", 64).is_ok());
        for bad in [
            "a\u{0}b",
            "a\nb",
            "a\tb",
            "evil\u{202E}txt.exe",
            "a\u{2066}b",
            "a\u{2069}",
            "a\u{200E}b",
            "a\u{200F}b",
            "a\u{7F}b",
            "a\u{85}b",
            "a\u{FEFF}b",
        ] {
            let err = name("name", bad, 64).unwrap_err();
            assert_eq!(err.field, "name");
            assert!(err.message.contains("control"), "{bad:?}: {err}");
        }
        assert!(name("name", " padded", 64).is_err());
        assert!(name("name", "", 64).is_err());
        assert!(name("name", &"é".repeat(65), 64).is_err());
        assert!(
            identifier("name", "a\u{202E}", 64)
                .unwrap_err()
                .message
                .contains("control")
        );
        assert!(max_chars("description", "two\nlines\tand a tab", 64).is_ok());
        assert!(max_chars("description", "nul\u{0}", 64).is_err());
        assert!(max_chars("description", "\u{202E}", 64).is_err());
        assert!(filter("name", "a\u{0}").is_err());
        assert!(filter("name", "web").is_ok());
    }

    #[test]
    fn addresses_are_ips_or_host_names() {
        for good in [
            "127.0.0.1",
            "::1",
            "fe80::1",
            "web-01.example.com",
            "localhost",
            "a",
            "xn--bcher-kva.de",
        ] {
            assert!(address("address", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "-web",
            "web-",
            "a..b",
            "web_01",
            "a\u{0}",
            "999.1.1.1",
            "1.2.3",
            "[::1]",
            "http://x",
            "x/y",
            "é.com",
            &"a".repeat(64),
            &format!("{}.com", "a.".repeat(130)),
        ] {
            assert!(address("address", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(max_chars("description", &"é".repeat(1024), 1024).is_ok());
        assert!(max_chars("description", &"é".repeat(1025), 1024).is_err());
        assert!(required("name", "  ", 64).is_err());
    }
}
