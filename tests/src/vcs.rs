//! Source servers for image builds: `git daemon` and `svnserve`, each on a
//! loopback address of its own, serving repositories the test writes.

use std::{
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// Runs `program` with `args` in `dir`, panicking with its words on failure.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Waits until something accepts connections on `addr`.
fn wait_listening(addr: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the server for {addr} exited"
        );
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files to write: `(path, content)`.
pub type Files<'a> = &'a [(&'a str, &'a str)];

fn write_files(dir: &Path, files: &[(&str, &[u8])]) {
    for (path, content) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// A `git daemon` on `<ip>:9418` serving bare repositories (anonymous,
/// read-only, as a public repository is).
#[derive(Debug)]
pub struct GitServer {
    ip: String,
    dir: TempDir,
    child: Child,
}

impl GitServer {
    /// Starts it on `ip`.
    #[must_use]
    pub fn start(ip: &str) -> Self {
        // git daemon refuses paths with a component starting with '.',
        // which tempfile's default names have.
        let dir = tempfile::Builder::new()
            .prefix("dcp-git-")
            .tempdir()
            .unwrap();
        // `git daemon` runs git-daemon as a child that would outlive a kill
        // of `git`: run git-daemon itself.
        let exec_path = run(dir.path(), "git", &["--exec-path"]);
        let mut child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--export-all", "--reuseaddr", "--port=9418"])
            .arg(format!("--listen={ip}"))
            .arg(format!("--base-path={}", dir.path().display()))
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        wait_listening(&format!("{ip}:9418"), &mut child);
        Self {
            ip: ip.to_owned(),
            dir,
            child,
        }
    }

    /// Commits `files` to branch `main` of repository `name` (made on first
    /// use), tags the commit `tag`; answers its full commit id.
    #[must_use]
    pub fn commit(&self, name: &str, files: Files<'_>, tag: &str) -> String {
        let bytes: Vec<(&str, &[u8])> = files.iter().map(|(p, c)| (*p, c.as_bytes())).collect();
        self.commit_bytes(name, &bytes, tag)
    }

    /// [`GitServer::commit`] of any bytes.
    #[must_use]
    pub fn commit_bytes(&self, name: &str, files: &[(&str, &[u8])], tag: &str) -> String {
        let bare = self.dir.path().join(format!("{name}.git"));
        if !bare.exists() {
            run(
                self.dir.path(),
                "git",
                &[
                    "init",
                    "-q",
                    "--bare",
                    "-b",
                    "main",
                    &bare.display().to_string(),
                ],
            );
        }
        let work = tempfile::tempdir().unwrap();
        // Cloning the empty bare repository works too: HEAD names main.
        run(
            work.path(),
            "git",
            &["clone", "-q", &bare.display().to_string(), "w"],
        );
        let w = &work.path().join("w");
        write_files(w, files);
        run(w, "git", &["add", "-A"]);
        run(
            w,
            "git",
            &[
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.invalid",
                "commit",
                "-q",
                "-m",
                tag,
            ],
        );
        run(w, "git", &["tag", tag]);
        run(
            w,
            "git",
            &["push", "-q", &bare.display().to_string(), "main", tag],
        );
        run(w, "git", &["rev-parse", "HEAD"])
    }

    /// The URL of repository `name`.
    #[must_use]
    pub fn url(&self, name: &str) -> String {
        format!("git://{}/{name}.git", self.ip)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An `svnserve` on `<ip>:3690` with one repository, `repo`, readable only
/// with a user and password.
#[derive(Debug)]
pub struct SvnServer {
    ip: String,
    dir: TempDir,
    child: Child,
}

impl SvnServer {
    /// Starts it on `ip`, `user` reading with `password`.
    #[must_use]
    pub fn start(ip: &str, user: &str, password: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        run(
            dir.path(),
            "svnadmin",
            &["create", &repo.display().to_string()],
        );
        std::fs::write(
            repo.join("conf/svnserve.conf"),
            "[general]\nanon-access = none\nauth-access = read\npassword-db = passwd\nrealm = dcp-test\n",
        )
        .unwrap();
        std::fs::write(
            repo.join("conf/passwd"),
            format!("[users]\n{user} = {password}\n"),
        )
        .unwrap();
        let mut child = Command::new("svnserve")
            .args([
                "-d",
                "--foreground",
                "--listen-port",
                "3690",
                "--listen-host",
                ip,
            ])
            .arg("--root")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("svnserve (scripts/setup test installs subversion)");
        wait_listening(&format!("{ip}:3690"), &mut child);
        Self {
            ip: ip.to_owned(),
            dir,
            child,
        }
    }

    /// Writes `files` (paths in the repository) as one revision; answers
    /// its number.
    #[must_use]
    pub fn commit(&self, files: Files<'_>) -> String {
        let repo = format!("file://{}/repo", self.dir.path().display());
        let scratch = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--config-dir".to_owned(),
            scratch.path().display().to_string(),
            "-m".to_owned(),
            "test".to_owned(),
            "-U".to_owned(),
            repo.clone(),
        ];
        for (i, (path, content)) in files.iter().enumerate() {
            let file = scratch.path().join(format!("f{i}"));
            std::fs::write(&file, content).unwrap();
            // Parents first; mkdir of one that exists would fail the whole
            // commit, so only new ones are made.
            let mut parent = Path::new(path).parent();
            let mut parents = Vec::new();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                parents.push(p.display().to_string());
                parent = p.parent();
            }
            for p in parents.into_iter().rev() {
                let exists = Command::new("svn")
                    .args(["info", "--config-dir"])
                    .arg(scratch.path())
                    .arg(format!("{repo}/{p}"))
                    .output()
                    .is_ok_and(|o| o.status.success());
                if !exists && !args.contains(&p) {
                    args.extend(["mkdir".to_owned(), p]);
                }
            }
            args.extend([
                "put".to_owned(),
                file.display().to_string(),
                (*path).to_owned(),
            ]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(scratch.path(), "svnmucc", &refs);
        run(
            scratch.path(),
            "svnlook",
            &["youngest", &format!("{}/repo", self.dir.path().display())],
        )
    }

    /// The URL of `path` in the repository.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("svn://{}/repo/{path}", self.ip)
    }
}

impl Drop for SvnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
