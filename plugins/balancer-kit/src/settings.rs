//! A plugin's settings document read field by field, so every refusal
//! names its field, and the checks of the paths it gives.

use serde_json::{Map, Value};

use crate::Failure;

/// The longest path accepted, in bytes.
pub const MAX_PATH: usize = 1024;

/// A settings document's fields; an empty document is no fields (every
/// setting its default).
pub fn fields(text: &str) -> Result<Map<String, Value>, Failure> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| Failure::invalid(format!("configuration: not JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(Failure::invalid(
            "configuration: must be a JSON object of settings",
        ));
    };
    Ok(fields)
}

/// Reads a settings document: `set` gets each field that is not `null`
/// (an empty document, and `null` fields, mean the defaults).
pub fn each(
    text: &str,
    mut set: impl FnMut(&str, &Value) -> Result<(), Failure>,
) -> Result<(), Failure> {
    for (field, value) in &fields(text)? {
        if !value.is_null() {
            set(field, value)?;
        }
    }
    Ok(())
}

/// A string setting.
pub fn text<'a>(field: &str, value: &'a Value) -> Result<&'a str, Failure> {
    value
        .as_str()
        .ok_or_else(|| Failure::invalid(format!("{field}: must be a string, not {value}")))
}

/// A whole number of milliseconds from `min` to `max`.
pub fn milliseconds(field: &str, value: &Value, min: u64, max: u64) -> Result<u32, Failure> {
    let ms = value
        .as_u64()
        .filter(|ms| (min..=max).contains(ms))
        .ok_or_else(|| {
            Failure::invalid(format!(
                "{field}: must be a whole number of milliseconds from {min} to {max}, not {value}"
            ))
        })?;
    Ok(u32::try_from(ms).unwrap_or(u32::MAX))
}

/// Which paths a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Starts with `/`.
    Absolute,
    /// Does not start with `/`.
    Relative,
    /// Either.
    Any,
    /// Starts with `/` and names a file: not `/`, no `/` at the end.
    File,
}

/// Checks a path against the characters that need no quoting anywhere —
/// `[A-Za-z0-9._/-]`, not even in socat's address syntax — with no `..`,
/// `.` or empty component (so a path has one spelling and never leaves
/// where it is joined). Answers it without a trailing `/`.
pub fn check_path(field: &str, path: &str, kind: PathKind) -> Result<String, Failure> {
    let bad = |why: &str| Failure::invalid(format!("{field}: {path:?} {why}"));
    if path.is_empty() {
        return Err(bad("is empty"));
    }
    if path.len() > MAX_PATH {
        return Err(bad(&format!("is longer than {MAX_PATH} bytes")));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(bad(&format!(
            "has {c:?}; paths may have only letters, digits and . _ / -"
        )));
    }
    let absolute = path.starts_with('/');
    match kind {
        PathKind::Absolute | PathKind::File if !absolute => {
            return Err(bad("must be absolute (start with /)"));
        }
        PathKind::Relative if absolute => return Err(bad("must be relative (no leading /)")),
        PathKind::File if path.ends_with('/') => return Err(bad("names a directory, not a file")),
        _ => {}
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        // "/" itself.
        return Ok("/".to_owned());
    }
    let body = trimmed.strip_prefix('/').unwrap_or(trimmed);
    for component in body.split('/') {
        match component {
            "" => return Err(bad("has an empty component (//)")),
            "." | ".." => return Err(bad(&format!("has a {component:?} component"))),
            _ => {}
        }
    }
    Ok(trimmed.to_owned())
}

/// `dir` joined with the relative `path`.
pub fn join(dir: &str, path: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{path}")
    } else {
        format!("{dir}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_by_kind() {
        for (path, kind, words) in [
            ("etc/nginx", PathKind::Absolute, "absolute"),
            ("/etc/x", PathKind::Relative, "relative"),
            ("/etc/x; rm", PathKind::Any, "';'"),
            ("/run/a:sock", PathKind::File, "':'"),
            ("/etc/../root", PathKind::Any, "\"..\""),
            ("./x", PathKind::Relative, "\".\""),
            ("/usr//sbin", PathKind::Absolute, "empty component"),
            ("", PathKind::Any, "empty"),
            ("/", PathKind::File, "directory"),
            ("/etc/haproxy/", PathKind::File, "directory"),
            ("x", PathKind::File, "absolute"),
            (&"a".repeat(1025), PathKind::Any, "longer than 1024"),
        ] {
            let failure = check_path("f", path, kind).unwrap_err();
            assert!(failure.message.starts_with("f: "), "{}", failure.message);
            assert!(failure.message.contains(words), "{}", failure.message);
        }
        assert_eq!(
            check_path("f", "/srv/lb/", PathKind::Absolute).unwrap(),
            "/srv/lb"
        );
        assert_eq!(check_path("f", "/", PathKind::Absolute).unwrap(), "/");
        assert_eq!(check_path("f", "/h.cfg", PathKind::File).unwrap(), "/h.cfg");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/srv", "a"), "/srv/a");
    }

    #[test]
    fn documents_and_fields_are_refused_by_name() {
        assert!(fields("").unwrap().is_empty());
        assert!(fields("[1]").unwrap_err().message.contains("object"));
        assert!(fields("{").unwrap_err().message.contains("not JSON"));
        assert_eq!(
            text("f", &Value::from(12)).unwrap_err().message,
            "f: must be a string, not 12"
        );
        assert_eq!(milliseconds("t", &Value::from(5), 0, 10).unwrap(), 5);
        for value in [Value::from(11), Value::from(1.5), Value::from("5")] {
            let message = milliseconds("t", &value, 0, 10).unwrap_err().message;
            assert!(
                message.starts_with("t: must be a whole number of milliseconds from 0 to 10"),
                "{message}"
            );
        }
    }
}
