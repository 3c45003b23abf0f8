//! Checks of the files a `publish` call carries.

use std::collections::HashSet;

use balancer_kit::settings::{PathKind, check_path};

use crate::Failure;

/// The most files one call may publish.
pub(crate) const MAX_FILES: usize = 200;
/// The largest file, in bytes.
pub(crate) const MAX_FILE_BYTES: usize = 1 << 20;

/// A file to publish, as the contract gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct File {
    /// Relative to the prefix.
    pub(crate) path: String,
    /// The whole content.
    pub(crate) content: String,
}

/// Whether a path component is one of the plugin's own names (a staged
/// candidate, a backup, the lock, the marker): publishing over them would
/// confuse the next change.
fn reserved(component: &str) -> bool {
    component.starts_with(".dcp")
        || (component.starts_with('.')
            && (component.contains(".dcp-new") || component.ends_with(".dcp-prev")))
}

/// Checks the files and answers their normalised paths, in order.
pub(crate) fn check(files: &[File]) -> Result<Vec<String>, Failure> {
    if files.is_empty() {
        return Err(Failure::invalid("files: give at least one file"));
    }
    if files.len() > MAX_FILES {
        return Err(Failure::invalid(format!(
            "files: {} given, at most {MAX_FILES} per call",
            files.len()
        )));
    }
    let mut paths = Vec::with_capacity(files.len());
    for file in files {
        let path = check_path("file path", &file.path, PathKind::Relative)?;
        if file.path.ends_with('/') {
            return Err(Failure::invalid(format!(
                "file path: {:?} names a directory",
                file.path
            )));
        }
        if let Some(component) = path.split('/').find(|c| reserved(c)) {
            return Err(Failure::invalid(format!(
                "file path: {path:?}: {component:?} is a name the plugin keeps for itself"
            )));
        }
        if file.content.len() > MAX_FILE_BYTES {
            return Err(Failure::invalid(format!(
                "file {path}: {} bytes, at most {MAX_FILE_BYTES}",
                file.content.len()
            )));
        }
        paths.push(path);
    }
    let all: HashSet<&str> = paths.iter().map(String::as_str).collect();
    if all.len() != paths.len() {
        let mut seen = HashSet::new();
        if let Some(twice) = paths.iter().find(|p| !seen.insert(p.as_str())) {
            return Err(Failure::invalid(format!("file {twice}: listed twice")));
        }
    }
    for path in &paths {
        let mut parent = path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            if all.contains(dir) {
                return Err(Failure::invalid(format!(
                    "file {path}: its directory {dir} is published as a file too"
                )));
            }
            parent = dir;
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &str) -> File {
        File {
            path: path.to_owned(),
            content: content.to_owned(),
        }
    }

    #[test]
    fn paths_are_checked_and_normalised() {
        assert_eq!(
            check(&[file("conf.d/app.conf", "x"), file("nginx.conf", "y")]).unwrap(),
            ["conf.d/app.conf", "nginx.conf"]
        );
        for (files, words) in [
            (vec![], "at least one"),
            (vec![file("/etc/passwd", "")], "relative"),
            (vec![file("../x.conf", "")], "\"..\""),
            (vec![file("a/./b", "")], "\".\""),
            (vec![file("a b.conf", "")], "' '"),
            (vec![file("a'b.conf", "")], "'\\''"),
            (vec![file("conf.d/", "")], "directory"),
            (vec![file(".dcp-lock/pid", "")], "keeps for itself"),
            (
                vec![file("sites/.app.conf.dcp-prev", "")],
                "keeps for itself",
            ),
            (
                vec![file("sites/.app.conf.dcp-new.x", "")],
                "keeps for itself",
            ),
            (vec![file("a.conf", ""), file("a.conf", "")], "listed twice"),
            (
                vec![file("a", ""), file("a/b.conf", "")],
                "published as a file",
            ),
            (
                vec![file("big.conf", &"x".repeat(MAX_FILE_BYTES + 1))],
                "at most 1048576",
            ),
            (
                (0..=MAX_FILES)
                    .map(|i| file(&format!("{i}.conf"), ""))
                    .collect(),
                "at most 200",
            ),
        ] {
            let message = check(&files).unwrap_err().message;
            assert!(message.contains(words), "{message}");
        }
        // Hidden files of the user's own are fine.
        check(&[file(".htpasswd", "")]).unwrap();
    }
}
