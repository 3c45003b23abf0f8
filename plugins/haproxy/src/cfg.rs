//! The configuration file: finding an upstream's `backend` (or `listen`)
//! section, and rewriting DCP's lines in it — a revision comment and one
//! `server dcp_…` line per backend — leaving every other line as it is.

use std::fmt::Write as _;

use crate::upstream::{SERVER_PREFIX, Server};

/// What the revision comment starts with (after the indentation).
const HEADER: &str = "# Managed by DCP: upstream ";

/// The keywords that start a section of an HAProxy configuration.
const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "peers",
    "resolvers",
    "userlist",
    "program",
    "http-errors",
    "ring",
    "mailers",
    "cache",
    "fcgi-app",
];

/// The words of a line, up to a comment.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .take_while(|w| !w.starts_with('#'))
        .collect()
}

/// An upstream's section in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    /// The line index of `backend <name>`.
    start: usize,
    /// One past its last line.
    end: usize,
    /// Whether its servers are health-checked: a `default-server` line
    /// with `check` (servers DCP adds at run time get `check` too).
    pub(crate) checks: bool,
    /// The revision DCP's comment says it serves.
    pub(crate) revision: Option<u64>,
    /// The servers DCP did not name (the operator's own).
    pub(crate) others: Vec<String>,
}

/// The file's lines.
fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Finds the `backend` or `listen` section named `name`.
pub(crate) fn find(text: &str, name: &str) -> Option<Section> {
    let lines = lines(text);
    let start = lines.iter().position(|line| {
        let w = words(line);
        matches!(w.first(), Some(&("backend" | "listen"))) && w.get(1) == Some(&name)
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|line| {
            words(line)
                .first()
                .is_some_and(|first| SECTIONS.contains(first))
        })
        .map_or(lines.len(), |i| start + 1 + i);
    let mut section = Section {
        start,
        end,
        checks: false,
        revision: None,
        others: Vec::new(),
    };
    for line in &lines[start + 1..end] {
        if let Some(revision) = revision_of(line) {
            section.revision.get_or_insert(revision);
            continue;
        }
        let w = words(line);
        match w.as_slice() {
            ["default-server", rest @ ..] if rest.contains(&"check") => section.checks = true,
            ["server", server, ..] if !server.starts_with(SERVER_PREFIX) => {
                section.others.push((*server).to_owned());
            }
            _ => {}
        }
    }
    Some(section)
}

/// Whether a line is one of DCP's in a section.
fn ours(line: &str) -> bool {
    if line.trim_start().starts_with(HEADER) {
        return true;
    }
    matches!(words(line).as_slice(), ["server", server, ..] if server.starts_with(SERVER_PREFIX))
}

/// The revision a line says, if it is DCP's comment.
pub(crate) fn revision_of(line: &str) -> Option<u64> {
    let rest = line.trim_start().strip_prefix(HEADER)?;
    let (_, rest) = rest.split_once(", revision ")?;
    let digits: &str = rest.split('.').next()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// DCP's lines for a section: the comment and one `server` line per
/// backend (weight 0 included: a restart keeps it taking nothing new).
pub(crate) fn block(indent: &str, name: &str, revision: u64, servers: &[Server]) -> String {
    let mut text = format!(
        "{indent}{HEADER}{name}, revision {revision}. DCP rewrites the {SERVER_PREFIX} server \
         lines of this section.\n"
    );
    for server in servers {
        let _ = writeln!(
            text,
            "{indent}server {} {} weight {}",
            server.name, server.address, server.weight
        );
    }
    text
}

/// The file with `section`'s lines of DCP's replaced by `block` (made by
/// [`block`] with the indentation [`indent`] found): where the first of
/// them was, or after the section's last line that is not blank or a
/// comment.
pub(crate) fn rewrite(text: &str, section: &Section, block: &str) -> String {
    let lines = lines(text);
    let body = &lines[section.start + 1..section.end];
    let at = body.iter().position(|l| ours(l)).unwrap_or_else(|| {
        body.iter()
            .rposition(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map_or(0, |i| i + 1)
    });
    let mut out = String::with_capacity(text.len() + block.len());
    for line in &lines[..=section.start] {
        out.push_str(line);
        out.push('\n');
    }
    for (i, line) in body.iter().enumerate() {
        if i == at {
            out.push_str(block);
        }
        if !ours(line) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if at >= body.len() {
        out.push_str(block);
    }
    for line in &lines[section.end..] {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The indentation of the section's first indented line (a tab in Debian's
/// file), else four spaces.
pub(crate) fn indent(text: &str, section: &Section) -> String {
    lines(text)[section.start + 1..section.end]
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| &l[..l.len() - l.trim_start().len()])
        .find(|i| !i.is_empty())
        .unwrap_or("    ")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "global\n\
        \tstats socket /run/haproxy/admin.sock mode 660 level admin\n\
        \n\
        defaults\n\
        \tmode http\n\
        \n\
        backend web\n\
        \tbalance roundrobin\n\
        \tdefault-server inter 1s check # checked\n\
        \tserver static 10.0.0.9:80 weight 1\n\
        \t# Managed by DCP: upstream web, revision 3. DCP rewrites the dcp_ server lines of this section.\n\
        \tserver dcp_10_0_0_1_80 10.0.0.1:80 weight 5\n\
        \tserver dcp_10_0_0_2_80 10.0.0.2:80 weight 0\n\
        \n\
        # the API\n\
        listen api\n\
        \tbind :8080\n\
        \tmode tcp\n\
        \n\
        # stats\n\
        frontend fe\n\
        \tdefault_backend web\n";

    fn server(name: &str, address: &str, weight: u32) -> Server {
        Server {
            name: name.to_owned(),
            address: address.to_owned(),
            weight,
        }
    }

    #[test]
    fn sections_are_found_with_what_dcp_needs_of_them() {
        let web = find(FILE, "web").unwrap();
        assert!(web.checks);
        assert_eq!(web.revision, Some(3));
        assert_eq!(web.others, ["static"]);
        let api = find(FILE, "api").unwrap();
        assert!(!api.checks);
        assert_eq!(api.revision, None);
        assert!(api.others.is_empty());
        assert_eq!(find(FILE, "fe"), None, "a frontend is not a backend");
        assert_eq!(find(FILE, "we"), None);
        assert_eq!(indent(FILE, &web), "\t");
    }

    #[test]
    fn dcp_lines_are_replaced_in_place_and_the_rest_kept() {
        let web = find(FILE, "web").unwrap();
        let block = block(
            "\t",
            "web",
            4,
            &[server("dcp_10_0_0_3_80", "10.0.0.3:80", 7)],
        );
        let text = rewrite(FILE, &web, &block);
        assert_eq!(
            text,
            FILE.replace(
                "\t# Managed by DCP: upstream web, revision 3. DCP rewrites the dcp_ server lines of this section.\n\
                 \tserver dcp_10_0_0_1_80 10.0.0.1:80 weight 5\n\
                 \tserver dcp_10_0_0_2_80 10.0.0.2:80 weight 0\n",
                "\t# Managed by DCP: upstream web, revision 4. DCP rewrites the dcp_ server lines of this section.\n\
                 \tserver dcp_10_0_0_3_80 10.0.0.3:80 weight 7\n"
            )
        );
        assert_eq!(find(&text, "web").unwrap().revision, Some(4));
        // The same block again: the same file.
        assert_eq!(rewrite(&text, &find(&text, "web").unwrap(), &block), text);
    }

    #[test]
    fn a_section_without_dcp_lines_gets_them_after_its_last_setting() {
        let api = find(FILE, "api").unwrap();
        let block = block(
            &indent(FILE, &api),
            "api",
            1,
            &[server("dcp___1_81", "[::1]:81", 1)],
        );
        let text = rewrite(FILE, &api, &block);
        assert!(
            text.contains(
                "listen api\n\tbind :8080\n\tmode tcp\n\t# Managed by DCP: upstream api, revision 1. \
                 DCP rewrites the dcp_ server lines of this section.\n\tserver dcp___1_81 [::1]:81 weight 1\n\
                 \n# stats\nfrontend fe\n"
            ),
            "{text}"
        );
        // A section that is the file's last, with nothing in it.
        let bare = "backend b\n";
        let section = find(bare, "b").unwrap();
        assert_eq!(indent(bare, &section), "    ");
        let text = rewrite(bare, &section, &super::block("    ", "b", 2, &[]));
        assert_eq!(
            text,
            "backend b\n    # Managed by DCP: upstream b, revision 2. DCP rewrites the dcp_ server \
             lines of this section.\n"
        );
        assert_eq!(find(&text, "b").unwrap().revision, Some(2));
    }

    #[test]
    fn revisions_are_read_from_dcp_comments_only() {
        assert_eq!(
            revision_of("  # Managed by DCP: upstream a, revision 18446744073709551615. x"),
            Some(u64::MAX)
        );
        assert_eq!(
            revision_of("# Managed by DCP: upstream a, revision x."),
            None
        );
        assert_eq!(revision_of("# revision 3."), None);
        assert_eq!(revision_of(""), None);
    }
}
