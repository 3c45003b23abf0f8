//! What a build fetches and sends: a git repository at one ref, a
//! subversion URL at one revision, and the build context as a tar.
//!
//! `git` and `svn` run as child programs with every value a separate
//! argument (after `--` where they take options), isolated from the host's
//! configuration, with credentials passed in the environment — never in
//! argv, a URL, or a file left behind — and killed when the build is
//! cancelled.

use std::{
    path::{Component, Path, PathBuf},
    process::Stdio,
};

use tokio::{io::AsyncWriteExt as _, process::Command};

use crate::validate::Invalid;

/// The most bytes of a program's output kept for its error message.
const OUTPUT_MAX: usize = 64 << 10;
/// The protocols git may use: no `ext::` (runs commands) nor `file://`
/// (reads DCP's own disk).
const GIT_PROTOCOLS: &str = "http:https:git:ssh";

/// A user name and password for a private repository.
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A repository URL of one of `schemes`, without credentials in it.
///
/// # Errors
/// Names `field` and the rule broken.
pub fn check_url(field: &str, url: &str, schemes: &[&str]) -> Result<(), Invalid> {
    crate::validate::name(field.to_owned(), url, 2048)?;
    let scheme = url.split_once("://").map(|(s, _)| s);
    if !scheme.is_some_and(|s| schemes.contains(&s)) {
        return Err(Invalid::new(
            field.to_owned(),
            format!("must be a URL starting with {}://", schemes.join("://, ")),
        ));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(Invalid::new(field.to_owned(), "must not contain spaces"));
    }
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split('/').next().unwrap_or_default());
    // ssh URLs name their login user (git@host); elsewhere a user:password
    // in the URL would be stored and logged in the clear.
    if authority.contains('@') && !scheme.is_some_and(|s| s.ends_with("ssh")) {
        return Err(Invalid::new(
            field.to_owned(),
            "must not hold credentials: give them as username and password",
        ));
    }
    Ok(())
}

/// A git ref: a branch, a tag, `refs/…`, or a full 40-hex commit.
///
/// # Errors
/// Names `field` and the rule broken.
pub fn check_git_ref(field: &str, value: &str) -> Result<(), Invalid> {
    let ok = (1..=255).contains(&value.len())
        && !value.starts_with(['-', '/'])
        && !value.ends_with(['/', '.'])
        && !value.contains("..")
        && !value.contains("//")
        && !value.ends_with(".lock")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !ok {
        return Err(Invalid::new(
            field.to_owned(),
            "must be a branch, a tag, refs/… or a full 40-hex commit",
        ));
    }
    if value.len() < 40 && value.len() >= 7 && value.chars().all(|c| c.is_ascii_hexdigit()) {
        // Looks like an abbreviated commit, which git cannot fetch; a
        // branch named so is unlikely, and refs/heads/… still reaches it.
        return Err(Invalid::new(
            field.to_owned(),
            "looks like an abbreviated commit: give all 40 hex digits (or refs/heads/… for a \
             branch named so)",
        ));
    }
    Ok(())
}

/// A subversion revision: a number or `HEAD`.
///
/// # Errors
/// Names `field`.
pub fn check_svn_revision(field: &str, value: &str) -> Result<(), Invalid> {
    if value == "HEAD"
        || (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(())
    } else {
        Err(Invalid::new(
            field.to_owned(),
            "must be a revision number or HEAD",
        ))
    }
}

/// A relative path that stays inside its directory (no `..`, not
/// absolute); `allow_empty` for "the whole directory".
///
/// # Errors
/// Names `field`.
pub fn check_relative(field: &str, value: &str, allow_empty: bool) -> Result<(), Invalid> {
    if value.is_empty() {
        return if allow_empty {
            Ok(())
        } else {
            Err(Invalid::new(field.to_owned(), "is required"))
        };
    }
    crate::validate::name(field.to_owned(), value, 1024)?;
    let path = Path::new(value);
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)));
    if inside {
        Ok(())
    } else {
        Err(Invalid::new(
            field.to_owned(),
            "must be a relative path inside the repository or context (no '..', not absolute)",
        ))
    }
}

/// `base` joined with the relative path `rel`, refused when a part of it
/// that exists is a symbolic link: a repository's link must not lead a
/// build out of its directory (to read the host's files into a context,
/// or write media over them).
///
/// # Errors
/// Names the path and the link.
pub fn inside(base: &Path, rel: &str) -> Result<PathBuf, String> {
    let mut at = base.to_path_buf();
    for part in Path::new(rel).components() {
        match part {
            Component::Normal(name) => at.push(name),
            Component::CurDir => continue,
            _ => return Err(format!("{rel:?} leaves its directory")),
        }
        if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!(
                "{rel:?} passes through a symbolic link ({}), which a build does not follow",
                at.strip_prefix(base).unwrap_or(&at).display()
            ));
        }
    }
    Ok(at)
}

/// Runs `command`, feeding `stdin`; answers its stdout, or its own words
/// (stderr, else stdout) when it fails.
async fn run(mut command: Command, stdin: Option<&str>) -> Result<String, String> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{program} is not installed on the DCP host")
        } else {
            format!("cannot run {program}: {e}")
        }
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that exits without reading is answered by its status.
        let _ = pipe.write_all(text.as_bytes()).await;
    }
    // Kept up to OUTPUT_MAX each; the rest is read and dropped, so a
    // chatty (or hostile) server cannot fill DCP's memory.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (stdout, stderr) = tokio::join!(bounded(stdout), bounded(stderr));
    let status = child.wait().await.map_err(|e| format!("{program}: {e}"))?;
    let out = std::process::Output {
        status,
        stdout,
        stderr,
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        let said = text(&out.stderr);
        Err(if said.is_empty() {
            format!("{program} failed ({})", out.status)
        } else {
            said
        })
    }
}

/// Up to [`OUTPUT_MAX`] bytes of `pipe`, reading it to its end.
async fn bounded(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut pipe)
        .take(OUTPUT_MAX as u64)
        .read_to_end(&mut kept)
        .await;
    let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
    kept
}

/// git isolated from the host: no system or global configuration, no
/// prompts, no dangerous transports, `home` as its home.
fn git(home: &Path, credentials: Option<&Credentials>) -> Command {
    let mut command = Command::new("git");
    command
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", GIT_PROTOCOLS)
        .env(
            "GIT_SSH_COMMAND",
            "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new",
        )
        .args(["-c", "credential.helper=", "-c", "protocol.version=2"]);
    if let Some(c) = credentials {
        // The helper's text is fixed; the secrets reach it through the
        // environment, never argv.
        command
            .env("DCP_GIT_USERNAME", &c.username)
            .env("DCP_GIT_PASSWORD", &c.password)
            .args([
                "-c",
                "credential.helper=!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \
                 \"$DCP_GIT_USERNAME\" \"$DCP_GIT_PASSWORD\"; }; f",
            ]);
    }
    command
}

/// Fetches `git_ref` of `url` into `dir` (created, must not exist) and
/// checks it out; answers the commit.
///
/// # Errors
/// git's own words.
pub async fn git_fetch(
    dir: &Path,
    home: &Path,
    url: &str,
    git_ref: &str,
    credentials: Option<&Credentials>,
) -> Result<String, String> {
    let mut init = git(home, None);
    init.arg("init").arg("-q").arg("--").arg(dir);
    run(init, None).await?;
    let mut fetch = git(home, credentials);
    // A shallow fetch brings a few objects, which git would unpack one by
    // one (inflating and deflating every blob again: 2 s more for 100 MB
    // than a clone); kept as the pack received, as a clone keeps it.
    fetch
        .args(["-c", "fetch.unpackLimit=1", "-C"])
        .arg(dir)
        .args([
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--",
            url,
            git_ref,
        ]);
    run(fetch, None).await?;
    let mut checkout = git(home, None);
    checkout.arg("-C").arg(dir).args([
        "-c",
        "advice.detachedHead=false",
        "checkout",
        "-q",
        "FETCH_HEAD",
    ]);
    run(checkout, None).await?;
    let mut rev = git(home, None);
    rev.arg("-C").arg(dir).args(["rev-parse", "FETCH_HEAD"]);
    run(rev, None).await
}

/// svn isolated from the host: its own config directory, no cache of
/// credentials, no prompts; the password comes on stdin.
fn svn(config_dir: &Path, credentials: Option<&Credentials>) -> Command {
    let mut command = Command::new("svn");
    command
        .env("HOME", config_dir)
        .args(["--non-interactive", "--no-auth-cache", "--config-dir"])
        .arg(config_dir);
    if let Some(c) = credentials {
        command
            .args(["--username", &c.username])
            .arg("--password-from-stdin");
    }
    command
}

/// Exports `url` at `revision` (a number or `HEAD`, resolved first so the
/// history names a number) into `dest` (must not exist); answers the
/// revision.
///
/// # Errors
/// svn's own words.
pub async fn svn_export(
    dest: &Path,
    config_dir: &Path,
    url: &str,
    revision: &str,
    credentials: Option<&Credentials>,
) -> Result<String, String> {
    let password = credentials.map(|c| format!("{}\n", c.password));
    // The peg form: the path as it was at that revision. A trailing `@`
    // keeps an `@` inside the URL from being read as a peg.
    let mut info = svn(config_dir, credentials);
    info.args(["info", "--show-item", "last-changed-revision", "--"])
        .arg(format!("{url}@{revision}"));
    let resolved = run(info, password.as_deref()).await?;
    if resolved.is_empty() || !resolved.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "svn info answered no revision for {url}@{revision}"
        ));
    }
    let mut export = svn(config_dir, credentials);
    export
        .args(["export", "-q", "--"])
        .arg(format!("{url}@{resolved}"))
        .arg(dest);
    run(export, password.as_deref()).await?;
    Ok(resolved)
}

/// The build context under `dir` as a tar: ownership, times and modes made
/// uniform (so the daemon's layer cache hits across builds), symlinks kept
/// as symlinks — never followed out of the context — and `.git`/`.svn`
/// left out.
///
/// # Errors
/// When it holds more than `max` bytes, or cannot be read.
pub fn tar_context(dir: &Path, max: u64) -> Result<Vec<u8>, String> {
    let mut ar = tar::Builder::new(Vec::new());
    ar.mode(tar::HeaderMode::Deterministic);
    ar.follow_symlinks(false);
    let mut total = 0u64;
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let full = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .map_err(|e| format!("reading {}: {e}", rel.display()))?
            .filter_map(Result::ok)
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            let name = entry.file_name();
            if name == ".git" || name == ".svn" {
                continue;
            }
            let path = rel.join(&name);
            let meta = entry
                .metadata()
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            if meta.is_file() {
                total += meta.len();
                if total > max {
                    return Err(format!(
                        "the build context holds more than {max} bytes; make it smaller"
                    ));
                }
            } else if !meta.is_dir() && !meta.file_type().is_symlink() {
                continue;
            }
            ar.append_path_with_name(dir.join(&path), &path)
                .map_err(|e| format!("packing {}: {e}", path.display()))?;
            if meta.is_dir() {
                pending.push(path);
            }
        }
    }
    ar.into_inner()
        .map_err(|e| format!("packing the build context: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_refs_and_paths_that_could_run_or_reach_elsewhere_are_refused() {
        let git = ["http", "https", "git", "ssh"];
        assert!(check_url("url", "git://127.26.2.1/app.git", &git).is_ok());
        assert!(check_url("url", "ssh://git@example.com/app.git", &git).is_ok());
        assert!(check_url("url", "ext::sh -c touch% /tmp/x", &git).is_err());
        assert!(check_url("url", "file:///etc", &git).is_err());
        assert!(check_url("url", "https://u:p@example.com/app.git", &git).is_err());
        assert!(check_url("url", "--upload-pack=touch", &git).is_err());
        assert!(check_git_ref("ref", "main").is_ok());
        assert!(check_git_ref("ref", "refs/tags/v1.2").is_ok());
        assert!(check_git_ref("ref", &"a".repeat(40)).is_ok());
        assert!(check_git_ref("ref", "--upload-pack=x").is_err());
        assert!(check_git_ref("ref", "19ebe009").is_err());
        assert!(check_git_ref("ref", "a..b").is_err());
        assert!(check_svn_revision("revision", "HEAD").is_ok());
        assert!(check_svn_revision("revision", "12").is_ok());
        assert!(check_svn_revision("revision", "-r1").is_err());
        assert!(check_relative("path", "app/Dockerfile", false).is_ok());
        assert!(check_relative("path", "../etc/passwd", false).is_err());
        assert!(check_relative("path", "/etc/passwd", false).is_err());
        assert!(check_relative("path", "a/../../b", false).is_err());
        assert!(check_relative("path", "", true).is_ok());
    }

    #[test]
    fn a_path_through_a_repositorys_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("up")).unwrap();
        assert_eq!(
            inside(dir.path(), "app/Dockerfile").unwrap(),
            dir.path().join("app/Dockerfile")
        );
        let refused = inside(dir.path(), "up/passwd").unwrap_err();
        assert!(refused.contains("symbolic link (up)"), "{refused}");
        assert!(inside(dir.path(), "up").is_err());
    }

    #[test]
    fn a_context_keeps_symlinks_as_links_and_leaves_vcs_directories_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM x\n").unwrap();
        std::fs::create_dir_all(dir.path().join(".git/objects")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "secret").unwrap();
        std::fs::create_dir(dir.path().join("site")).unwrap();
        std::fs::write(dir.path().join("site/index.html"), "hi").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", dir.path().join("site/shadow")).unwrap();
        let tar = tar_context(dir.path(), 1 << 20).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let kind = entry.header().entry_type();
            seen.push((path, kind.is_symlink()));
        }
        seen.sort();
        assert_eq!(
            seen,
            [
                ("Dockerfile".to_owned(), false),
                ("site".to_owned(), false),
                ("site/index.html".to_owned(), false),
                ("site/shadow".to_owned(), true),
            ]
        );
        assert!(tar_context(dir.path(), 3).is_err());
    }
}
