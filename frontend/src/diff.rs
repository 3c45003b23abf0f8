//! A line diff of two texts (a configuration file's versions): the longest
//! common subsequence of their lines, shown as kept, removed and added lines,
//! with long unchanged stretches folded away.

/// How big the LCS table of the changed middle may get (cells). Past it the
/// middle reads as all removed, then all added: still right, only coarser,
/// and a browser tab does not spend seconds and megabytes on one diff. It
/// also keeps the shorter side under 2000 lines, so lengths fit a `u16`.
const MAX_CELLS: usize = 4_000_000;

/// One line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// In both texts.
    Same(&'a str),
    /// Only in the old text.
    Removed(&'a str),
    /// Only in the new text.
    Added(&'a str),
}

impl<'a> Line<'a> {
    /// The line's text.
    pub(crate) fn text(self) -> &'a str {
        match self {
            Self::Same(t) | Self::Removed(t) | Self::Added(t) => t,
        }
    }

    /// The mark in front of the line: ` `, `-` or `+`.
    pub(crate) fn mark(self) -> char {
        match self {
            Self::Same(_) => ' ',
            Self::Removed(_) => '-',
            Self::Added(_) => '+',
        }
    }

    /// The line's CSS class.
    pub(crate) fn class(self) -> &'static str {
        match self {
            Self::Same(_) => "diff-line same",
            Self::Removed(_) => "diff-line removed",
            Self::Added(_) => "diff-line added",
        }
    }

    fn changed(self) -> bool {
        !matches!(self, Self::Same(_))
    }
}

/// The lines of `old` and `new` in order: each kept, removed or added, as
/// few removed and added as possible.
pub(crate) fn diff<'a>(old: &'a str, new: &'a str) -> Vec<Line<'a>> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Most edits touch a few lines of a long file: the common head and tail
    // cost nothing, and only the middle needs the table.
    let head = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    out.extend(a[..head].iter().map(|l| Line::Same(l)));
    middle(&a[head..a.len() - tail], &b[head..b.len() - tail], &mut out);
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

/// The diff of two runs of lines, by a longest-common-subsequence table.
fn middle<'a>(a: &[&'a str], b: &[&'a str], out: &mut Vec<Line<'a>>) {
    if a.len().saturating_mul(b.len()) > MAX_CELLS {
        out.extend(a.iter().map(|l| Line::Removed(l)));
        out.extend(b.iter().map(|l| Line::Added(l)));
        return;
    }
    // lcs[i * w + j]: the longest common subsequence of a[i..] and b[j..].
    let w = b.len() + 1;
    let mut lcs = vec![0_u16; (a.len() + 1) * w];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * w + j] = if a[i] == b[j] {
                lcs[(i + 1) * w + j + 1] + 1
            } else {
                lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(Line::Same(a[i]));
            i += 1;
            j += 1;
        } else if lcs[(i + 1) * w + j] >= lcs[i * w + j + 1] {
            out.push(Line::Removed(a[i]));
            i += 1;
        } else {
            out.push(Line::Added(b[j]));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|l| Line::Removed(l)));
    out.extend(b[j..].iter().map(|l| Line::Added(l)));
}

/// What a diff shows: a line, or how many unchanged lines were folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown<'a> {
    /// A line near a change (or a change).
    Line(Line<'a>),
    /// Unchanged lines left out.
    Folded(usize),
}

/// `lines` with every unchanged line more than `context` lines from a
/// change folded away, as a reviewer reads a diff.
pub(crate) fn with_context<'a>(lines: &[Line<'a>], context: usize) -> Vec<Shown<'a>> {
    // The distance from each line to the nearest change, both ways.
    let mut near = vec![false; lines.len()];
    let mut since = usize::MAX;
    for (i, line) in lines.iter().enumerate() {
        since = if line.changed() {
            0
        } else {
            since.saturating_add(1)
        };
        near[i] = since <= context;
    }
    since = usize::MAX;
    for (i, line) in lines.iter().enumerate().rev() {
        since = if line.changed() {
            0
        } else {
            since.saturating_add(1)
        };
        near[i] |= since <= context;
    }
    let mut out = Vec::new();
    let mut folded = 0;
    for (line, near) in lines.iter().zip(near) {
        if near {
            if folded > 0 {
                out.push(Shown::Folded(folded));
                folded = 0;
            }
            out.push(Shown::Line(*line));
        } else {
            folded += 1;
        }
    }
    if folded > 0 {
        out.push(Shown::Folded(folded));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A diff as `+x`, `-y`, ` z` lines, to compare at a glance.
    fn marked(old: &str, new: &str) -> Vec<String> {
        diff(old, new)
            .into_iter()
            .map(|l| format!("{}{}", l.mark(), l.text()))
            .collect()
    }

    #[test]
    fn equal_texts_are_all_kept() {
        assert_eq!(marked("a\nb\n", "a\nb\n"), [" a", " b"]);
        assert!(diff("", "").is_empty());
    }

    #[test]
    fn one_changed_line_is_removed_then_added_between_kept_ones() {
        assert_eq!(marked("a\nb\nc\n", "a\nB\nc\n"), [" a", "-b", "+B", " c"]);
    }

    #[test]
    fn inserted_and_deleted_lines_keep_the_longest_common_run() {
        assert_eq!(
            marked("x\na\nb\nc\ny", "a\nb\nz\nc"),
            ["-x", " a", " b", "+z", " c", "-y"]
        );
        assert_eq!(marked("", "a\nb"), ["+a", "+b"]);
        assert_eq!(marked("a\nb", ""), ["-a", "-b"]);
    }

    #[test]
    fn the_diff_rebuilds_both_texts() {
        let old = "events {}\nhttp {\n  listen 80;\n  gzip on;\n}\n";
        let new = "worker_processes 1;\nevents {}\nhttp {\n  listen 8080;\n}\n# end\n";
        let lines = diff(old, new);
        let side = |keep: fn(&Line<'_>) -> bool| {
            lines
                .iter()
                .filter(|l| keep(l))
                .map(|l| l.text())
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(
            side(|l| !matches!(l, Line::Added(_))),
            old.trim_end_matches('\n')
        );
        assert_eq!(
            side(|l| !matches!(l, Line::Removed(_))),
            new.trim_end_matches('\n')
        );
        // Three lines kept: the fewest changes.
        assert_eq!(lines.iter().filter(|l| !l.changed()).count(), 3);
    }

    #[test]
    fn a_middle_too_big_for_the_table_reads_as_replaced() {
        let old: String = (0..2100).map(|i| format!("old {i}\n")).collect();
        let new: String = (0..2100).map(|i| format!("new {i}\n")).collect();
        let old = format!("head\n{old}tail\n");
        let new = format!("head\n{new}tail\n");
        let lines = diff(&old, &new);
        assert_eq!(lines.len(), 2 + 2 * 2100);
        assert_eq!(lines[0], Line::Same("head"));
        assert_eq!(lines[1], Line::Removed("old 0"));
        assert_eq!(lines[2101], Line::Added("new 0"));
        assert_eq!(lines[lines.len() - 1], Line::Same("tail"));
    }

    #[test]
    fn unchanged_stretches_far_from_changes_are_folded() {
        let old: String = (1..=20).map(|i| format!("{i}\n")).collect();
        let new = old.replace("10\n", "ten\n");
        let lines = diff(&old, &new);
        let shown = with_context(&lines, 2);
        assert_eq!(shown[0], Shown::Folded(7));
        assert_eq!(shown[1], Shown::Line(Line::Same("8")));
        assert_eq!(shown[3], Shown::Line(Line::Removed("10")));
        assert_eq!(shown[4], Shown::Line(Line::Added("ten")));
        assert_eq!(shown[6], Shown::Line(Line::Same("12")));
        assert_eq!(shown[7], Shown::Folded(8));
        assert_eq!(shown.len(), 8);
        // Nothing changed: everything folds into one.
        assert_eq!(with_context(&diff("a\nb", "a\nb"), 3), [Shown::Folded(2)]);
    }
}
