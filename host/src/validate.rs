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
    /// The other fields of the same request that break a rule, when they
    /// were checked together ([`Checks`]): a form shows them all at once.
    pub also: Vec<Invalid>,
}

impl Invalid {
    /// `field` breaks a rule described by `message`.
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            also: Vec::new(),
        }
    }
}

/// Checks of independent fields, each run whatever the others found, so
/// one answer names every broken field.
#[derive(Debug, Default)]
pub struct Checks(Vec<Invalid>);

impl Checks {
    /// Keeps `result`'s failure, if any (and the failures checked with it).
    pub fn check(&mut self, result: Result<(), Invalid>) {
        if let Err(mut invalid) = result {
            let also = std::mem::take(&mut invalid.also);
            self.0.push(invalid);
            self.0.extend(also);
        }
    }

    /// Whether every check so far passed (later checks that only make
    /// sense on sound parts can wait for it).
    #[must_use]
    pub fn is_clear(&self) -> bool {
        self.0.is_empty()
    }

    /// Passes when every check did; else the first failure, with the
    /// others under [`Invalid::also`].
    pub fn finish(self) -> Result<(), Invalid> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                first.also.extend(all);
                Err(first)
            }
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

/// Longest image name (registry and repository, without tag or digest).
pub const IMAGE_NAME_MAX: usize = 255;
/// Longest image tag.
pub const IMAGE_TAG_MAX: usize = 128;
/// Longest image reference: a name, a tag and the longest digest
/// (`sha512:` and 128 hex digits) with their `:` and `@`.
pub const IMAGE_REFERENCE_MAX: usize = IMAGE_NAME_MAX + 1 + IMAGE_TAG_MAX + 1 + 7 + 128;

/// The digest algorithms Docker accepts, with their hex digest lengths.
const DIGESTS: [(&str, usize); 3] = [("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// The one rule for an image reference (a service's `image`): Docker's
/// reference grammar, `[registry[:port]/]path[:tag][@digest]`. The
/// registry is a host name, an IPv4 address or a bracketed IPv6 address;
/// the path is lowercase components of letters and digits joined by `.`,
/// `_`, `__` or dashes; the name is at most 255 characters; the tag is
/// [`image_tag`]'s; a digest is `sha256:` (or `sha384:`, `sha512:`) and its
/// lowercase hex digits. dockerd refuses anything else at deploy time, on
/// every node, long after the service was saved.
pub fn image_reference(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), Invalid> {
    let field = field.into();
    let fail = |message: String| Err(Invalid::new(field.clone(), message));
    if value.is_empty() {
        return fail("is required".into());
    }
    if value.contains("://") {
        return fail(
            "must be an image reference like registry.local/shop/web:1.4, not a URL".into(),
        );
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "./:_-@[]".contains(*c)))
    {
        return fail(format!(
            "{bad:?} cannot appear in an image reference like registry.local/shop/web:1.4"
        ));
    }
    let (name, tag, digest) = split_image(value);
    if let Some(digest) = digest
        && let Err(message) = check_digest(digest)
    {
        return fail(message);
    }
    if let Some(tag) = tag {
        if tag.is_empty() {
            return fail("has an empty tag after ':'".into());
        }
        if let Err(invalid) = image_tag(field.clone(), tag) {
            return fail(format!("tag {tag:?} {}", invalid.message));
        }
    }
    if name.is_empty() {
        return fail("has no repository name".into());
    }
    if let Err(message) = check_name(name) {
        return fail(message);
    }
    if name.len() > IMAGE_NAME_MAX {
        return fail(format!(
            "name (before any tag or digest) must be at most {IMAGE_NAME_MAX} characters"
        ));
    }
    Ok(())
}

/// The one rule for an image tag (a deploy's `tag`, the tag of an image
/// reference): 1–128 letters, digits, `_`, `.` and `-`, not starting with
/// `.` or `-`.
pub fn image_tag(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), Invalid> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = (1..=IMAGE_TAG_MAX).contains(&value.len())
        && value.chars().next().is_some_and(word)
        && value.chars().all(|c| word(c) || matches!(c, '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(
            field,
            format!(
                "must be 1–{IMAGE_TAG_MAX} letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            ),
        ))
    }
}

/// The one rule for a repository in a registry (`shop/web`): lowercase
/// path components of letters and digits joined by `.`, `_`, `__` or
/// dashes, separated by `/`, at most 255 characters in all — the
/// registry's own grammar, so a name it would refuse never reaches it.
pub fn repository(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), Invalid> {
    let field = field.into();
    if value.is_empty() || value.len() > IMAGE_NAME_MAX {
        return Err(Invalid::new(
            field,
            format!("must be 1–{IMAGE_NAME_MAX} characters"),
        ));
    }
    for component in value.split('/') {
        if !path_component(component) {
            return Err(Invalid::new(
                field,
                format!(
                    "path component {component:?} must be lowercase letters and digits joined by \
                     '.', '_', '__' or dashes, between single '/'"
                ),
            ));
        }
    }
    Ok(())
}

/// The one rule for a content digest: `sha256:` (or `sha384:`, `sha512:`)
/// and its lowercase hex digits.
pub fn digest(field: impl Into<Cow<'static, str>>, value: &str) -> Result<(), Invalid> {
    check_digest(value).map_err(|message| Invalid::new(field, message))
}

/// The name of an image reference (registry and repository), without its
/// tag or digest.
#[must_use]
pub fn image_name(reference: &str) -> &str {
    split_image(reference).0
}

/// The tag of an image reference (`latest` when it names none); none when
/// a digest pins it.
#[must_use]
pub fn image_tag_of(reference: &str) -> Option<&str> {
    match split_image(reference) {
        (_, _, Some(_)) => None,
        (_, tag, None) => Some(tag.unwrap_or("latest")),
    }
}

/// `(name, tag, digest)` of an image reference. A colon after the last `/`
/// starts the tag; one before it can only be a registry's port.
fn split_image(reference: &str) -> (&str, Option<&str>, Option<&str>) {
    let (rest, digest) = match reference.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (reference, None),
    };
    let last = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last..].find(':') {
        Some(colon) => (
            &rest[..last + colon],
            Some(&rest[last + colon + 1..]),
            digest,
        ),
        None => (rest, None, digest),
    }
}

/// Checks `[registry/]path`. As in Docker's grammar, a first component that
/// is a valid registry is one when a path follows; a name valid either way
/// (`shop/web`) is accepted either way.
fn check_name(name: &str) -> Result<(), String> {
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1 && registry(first) {
        components.remove(0);
    } else if components.len() > 1 && !path_component(first) && looks_like_registry(first) {
        return Err(format!(
            "registry {first:?} must be a host name, an IPv4 address or a bracketed IPv6 address, \
             with an optional :port"
        ));
    }
    for component in components {
        if component.is_empty() {
            return Err("has an empty path component (two '/' in a row, or one at an end)".into());
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository names are lowercase (found {component:?})"
            ));
        }
        if !path_component(component) {
            return Err(format!(
                "path component {component:?} must be lowercase letters and digits joined by \
                 '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

/// Whether a first component is meant as a registry (it could be nothing else).
fn looks_like_registry(component: &str) -> bool {
    component.contains(['.', ':', '[', ']']) || component == "localhost"
}

/// `host[:port]`: a host name of letters, digits and inner dashes in
/// dot-separated labels, or a bracketed IPv6 address; a port of digits.
fn registry(domain: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(bracketed) = domain.strip_prefix('[') {
        let Some((address, rest)) = bracketed.split_once(']') else {
            return false;
        };
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(digits);
        return !address.is_empty()
            && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            && port_ok;
    }
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.split('.').all(label) && port.is_none_or(digits)
}

/// One lowercase path component: runs of `[a-z0-9]` joined by `.`, `_`,
/// `__` or one or more dashes.
fn path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    bytes
        .split(alnum)
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-')
        })
}

/// `algorithm:hex` of a supported algorithm with its exact number of
/// lowercase hex digits.
fn check_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!(
            "digest {digest:?} must be algorithm:hex, e.g. sha256: and 64 hex digits"
        ));
    };
    let Some(&(_, length)) = DIGESTS.iter().find(|(name, _)| *name == algorithm) else {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (sha256, sha384 or sha512)"
        ));
    };
    if hex.len() != length || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a {algorithm} digest is {length} hex digits (found {hex:?})"
        ));
    }
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("digest hex digits are lowercase (found {hex:?})"));
    }
    Ok(())
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

    /// Cases after distribution/reference's own tests of Docker's grammar.
    #[test]
    fn image_references_follow_dockers_grammar() {
        let sha256 = format!("sha256:{}", "f".repeat(64));
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let deep = format!("{}a", "a/".repeat(127));
        for good in [
            "nginx",
            "nginx:1.25",
            "test_com",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            &format!("test:5000/repo@{sha256}"),
            &format!("test:5000/repo:tag@{sha256}"),
            "lowercase:Uppercase",
            "Uppercase/lowercase:tag",
            &format!("{deep}:tag-puts-this-over-max"),
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "xn--n3h.com/myimage:xn--n3h.com",
            &format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}"),
            "foo_bar.com:8080",
            "foo/foo_bar.com:8080",
            "192.168.1.1",
            "192.168.1.1:5000/repo:5050",
            "[2001:db8::1]/repo",
            "[2001:db8::1]:5000/repo:tag",
            &format!("[2001:db8::1]:5000/repo:tag@{sha256}"),
            "[::1]:5000/repo",
            "localhost:5000/shop/web",
            "registry.local:5000/shop/web:1.4",
            "a__b/c---d/e.f_g:_tag",
            &format!("a:{}", "t".repeat(128)),
            &format!("web@sha384:{}", "0".repeat(96)),
        ] {
            assert_eq!(image_reference("image", good), Ok(()), "{good}");
        }
        for (bad, reason) in [
            ("", "is required"),
            ("walk/web:", "empty tag"),
            ("http://x/y", "not a URL"),
            ("https://registry.local/web:1", "not a URL"),
            (":justtag", "no repository"),
            (&format!("@{sha256}"), "no repository"),
            (&format!("repo@sha256:{}", "f".repeat(34)), "64 hex digits"),
            (&format!("repo@sha256:{}", "F".repeat(64)), "lowercase"),
            ("localhost/app@sha256:abc", "64 hex digits"),
            ("repo@sha256", "algorithm:hex"),
            (
                &format!("validname@invaliddigest:{}", "f".repeat(64)),
                "not supported",
            ),
            ("Uppercase:tag", "lowercase"),
            ("Shop/Web", "lowercase"),
            ("test:5000/Uppercase/lowercase:tag", "lowercase"),
            (&format!("{deep}/a:tag"), "at most 255"),
            ("aa/asdf$$^/aa", "'$'"),
            ("[2001:db8::1]", "tag"),
            ("[2001:db8::1]:5000", "tag"),
            ("[fe80::1%eth0]:5000/repo", "'%'"),
            ("ng inx", "' '"),
            (" nginx", "' '"),
            ("a;rm -rf", "';'"),
            ("registry.local/", "empty path component"),
            ("a//b", "empty path component"),
            ("-web", "path component"),
            ("web-", "path component"),
            ("a.-b", "path component"),
            ("a___b", "path component"),
            ("a..b", "path component"),
            ("web:.1", "tag"),
            ("web:-1", "tag"),
            ("a/b:c:d", "tag"),
            (&format!("a:{}", "t".repeat(129)), "tag"),
            ("reg_istry:5000/web", "registry"),
            ("registry.local:/web", "registry"),
            ("[::1/web", "registry"),
            ("web@sha256:a@b", "64 hex digits"),
        ] {
            let err = image_reference("image", bad).expect_err(bad);
            assert_eq!(err.field, "image");
            assert!(err.message.contains(reason), "{bad:?}: {}", err.message);
        }
        assert!(image_tag("tag", "1.4.2-rc_1").is_ok());
        for bad in ["", "-x", ".x", "a b", "a:b", &"t".repeat(129)] {
            assert_eq!(image_tag("tag", bad).unwrap_err().field, "tag", "{bad:?}");
        }
        assert_eq!(
            "a".repeat(IMAGE_NAME_MAX).len() + format!(":{}@{sha512}", "t".repeat(128)).len(),
            IMAGE_REFERENCE_MAX
        );
        assert_eq!(
            image_name("registry.local:5000/web:1@x"),
            "registry.local:5000/web"
        );
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        assert!(max_chars("description", &"é".repeat(1024), 1024).is_ok());
        assert!(max_chars("description", &"é".repeat(1025), 1024).is_err());
        assert!(required("name", "  ", 64).is_err());
    }
}
