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

/// A name used in URLs, configs and hostnames: 1–`max` characters of
/// `a-z`, `0-9`, `-` and `_`.
pub fn identifier(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
    if value.is_empty() {
        return Err(Invalid::new(field, "is required"));
    }
    if value.chars().count() > max {
        return Err(Invalid::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
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

/// Free text of at most `max` characters.
pub fn max_chars(field: &'static str, value: &str, max: usize) -> Result<(), Invalid> {
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
    fn lengths_count_characters_not_bytes() {
        assert!(max_chars("description", &"é".repeat(1024), 1024).is_ok());
        assert!(max_chars("description", &"é".repeat(1025), 1024).is_err());
        assert!(required("name", "  ", 64).is_err());
    }
}
