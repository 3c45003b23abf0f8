//! For the plugins' live tests (feature `testing`, native): a node that is
//! this machine, running commands the way the host's SSH channel does,
//! through the shells nodes have; HTTP backends that answer with their
//! name; loopback addresses handed out one a test.

// Test support: a panic is the test failing, with the message it names.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::{
    collections::BTreeSet,
    fmt::Debug,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use tempfile::TempDir;

use serde_json::{Map, Value};

use crate::{
    Failure, Kind,
    node::{Node, Output},
    upstream::{Backend, Upstream},
};

/// Which shell the node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// A Debian host: bash as the login shell, dash as `sh`, coreutils.
    Debian,
    /// Nothing but busybox on `PATH` (Debian's `busybox-static`).
    Busybox,
    /// `sh` is bash (in its POSIX mode), as on Red Hat's family.
    BashAsSh,
}

/// A node that is this machine: commands run the way sshd runs them.
#[derive(Debug)]
pub struct Local {
    shell: Shell,
    /// A directory put first on `PATH`: busybox's applets, or `sh` as bash.
    applets: Option<TempDir>,
    /// What [`Node::time_left_ms`] answers (60 s unless a test sets it).
    pub time_left_ms: u64,
}

impl Local {
    /// A node with `shell`.
    pub fn new(shell: Shell) -> Self {
        let applets = match shell {
            Shell::Debian => None,
            Shell::Busybox => {
                let dir = tempfile::tempdir().unwrap();
                let list = Command::new("busybox")
                    .arg("--list")
                    .output()
                    .expect("busybox (Debian busybox-static; scripts/setup test installs it)");
                for applet in String::from_utf8_lossy(&list.stdout).lines() {
                    std::os::unix::fs::symlink("/usr/bin/busybox", dir.path().join(applet))
                        .unwrap();
                }
                Some(dir)
            }
            Shell::BashAsSh => {
                let dir = tempfile::tempdir().unwrap();
                std::os::unix::fs::symlink("/bin/bash", dir.path().join("sh")).unwrap();
                Some(dir)
            }
        };
        Self {
            shell,
            applets,
            time_left_ms: 60_000,
        }
    }
}

impl Node for Local {
    fn exec(&self, command: &str, stdin: &[u8], _timeout_ms: u32) -> Result<Output, Failure> {
        // The host's channel marks the process id first, as here.
        let command = format!("printf '\\036dcp-pid %s\\n' \"$$\"; {command}");
        let mut cmd = match (self.shell, &self.applets) {
            (Shell::Busybox, Some(applets)) => {
                let mut cmd = Command::new(applets.path().join("sh"));
                cmd.env("PATH", applets.path());
                cmd
            }
            (Shell::BashAsSh, Some(applets)) => {
                let mut cmd = Command::new("bash");
                let path = std::env::var("PATH").unwrap_or_default();
                cmd.env("PATH", format!("{}:{path}", applets.path().display()));
                cmd
            }
            _ => Command::new("bash"),
        };
        let mut child = cmd
            .arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        Ok(Output {
            exit_code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: false,
        })
    }

    fn put_file(&self, path: &str, content: &[u8], mode: u32) -> Result<(), Failure> {
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        Ok(())
    }

    fn time_left_ms(&self) -> u64 {
        self.time_left_ms
    }
}

/// Loopback addresses `127.<a>.<b>.<n>`, `n` one a test, so tests running
/// at once never share an address.
#[derive(Debug)]
pub struct Addresses {
    prefix: [u8; 3],
    taken: AtomicU8,
}

impl Addresses {
    /// Addresses `<prefix>.1`, `<prefix>.2`, … (`prefix` starts with 127).
    pub const fn new(prefix: [u8; 3]) -> Self {
        Self {
            prefix,
            taken: AtomicU8::new(0),
        }
    }

    /// The next test's number (1, 2, …).
    pub fn next(&self) -> u8 {
        self.taken.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Address `n`.
    pub fn ip(&self, n: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, n)
    }
}

/// A port free on `ip` now.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP backend answering every request with its name; each arrival is
/// counted and reported on `arrived`.
#[derive(Debug)]
pub struct TestBackend {
    /// Where it listens.
    pub ip: Ipv4Addr,
    /// Its port.
    pub port: u16,
    /// Requests arrived so far.
    pub hits: Arc<AtomicUsize>,
    /// One message a request, when it arrives.
    pub arrived: mpsc::Receiver<()>,
}

/// Starts a backend on `ip` answering `name`, each answer once `hold`
/// returns (a delay, a gate).
pub fn backend(
    ip: Ipv4Addr,
    name: &'static str,
    hold: impl Fn() + Send + Sync + 'static,
) -> TestBackend {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, arrived) = mpsc::channel();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    let hold = Arc::new(hold);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (tx, hits, hold) = (tx.clone(), Arc::clone(&counted), Arc::clone(&hold));
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(());
                hold();
                let _ = write!(
                    stream,
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
            });
        }
    });
    TestBackend {
        ip,
        port,
        hits,
        arrived,
    }
}

/// `GET path` on `addr`: the status (0 when nothing answers) and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // One write: pieces would wait for the server's delayed ACK (Nagle).
    let request = format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Waits for `condition`, polling; panics with `what` after 10 s.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// The children of process `parent`, from /proc.
pub fn children(parent: u32) -> BTreeSet<u32> {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            (rest.split(' ').nth(1)? == parent).then_some(pid)
        })
        .collect()
}

/// Stops a balancer's master with `TERM` (it stops its workers; a killed
/// one would leave them running) and waits for it.
pub fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Checks `script` is valid `sh` (`sh -n`).
pub fn assert_valid_sh(script: &str) {
    let check = Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Checks a plugin refuses bad upstreams as the contract wants: bad names,
/// and bad backends (addresses, port 0, weight above 100) by `check` (the
/// plugin's check of one upstream) naming the upstream; the same name twice
/// by `check_all` (the plugin's check of a call's upstreams).
pub fn assert_bad_upstreams_refused<T: Debug, U: Debug>(
    check: impl Fn(&Upstream) -> Result<T, Failure>,
    check_all: impl Fn(&[Upstream]) -> Result<U, Failure>,
) {
    let upstream = |name: &str, backends: Vec<Backend>| Upstream {
        name: name.to_owned(),
        backends,
        revision: 1,
    };
    for name in ["", "a b", "a;b", "a/b", "ä", &"x".repeat(65)] {
        let failure = check(&upstream(name, Vec::new())).unwrap_err();
        assert!(failure.message.contains("upstream name"), "{failure:?}");
    }
    for (address, port, weight, words) in [
        ("10.0.0.5;", 80, 1, "10.0.0.5;"),
        ("$(reboot)", 80, 1, "host name"),
        ("a b", 80, 1, "host name"),
        ("a'b", 80, 1, "host name"),
        ("-x.example", 80, 1, "host name"),
        ("999.1.1.1", 80, 1, "IPv4"),
        ("", 80, 1, "1 to 253"),
        ("fe80::1%eth0", 80, 1, "host name"),
        ("10.0.0.5", 0, 1, "port 0"),
        ("10.0.0.5", 80, 101, "weight 101"),
    ] {
        let backend = Backend::new(address, port, weight);
        let failure = check(&upstream("web", vec![backend])).unwrap_err();
        assert_eq!(
            (failure.kind, failure.retryable),
            (Kind::InvalidInput, false)
        );
        let message = failure.message;
        assert!(message.starts_with("upstream web: "), "{message}");
        assert!(message.contains(words), "{address}: {message}");
    }
    let web = upstream("web", Vec::new());
    let message = check_all(&[web.clone(), web]).unwrap_err().message;
    assert_eq!(message, "upstream web: listed twice");
}

/// What a plugin's settings must be: `parse` reads an empty document, and
/// `nulls` (fields set to `null`), as `default`; refuses every document of
/// `refusals` — `(document, field, words)` — as bad input naming its field
/// and saying `words`, and a document that is not a JSON object; and its
/// JSON Schema `schema` has `fields` properties, each with a title and a
/// description, the `defaults` given (`(field, value)`) as theirs, and
/// a document of its defaults is read as `default` too.
pub struct Settings<'a, T> {
    /// The plugin's reading of a settings document.
    pub parse: fn(&str) -> Result<T, Failure>,
    /// Its default settings.
    pub default: T,
    /// A document of `null` fields.
    pub nulls: &'a str,
    /// Documents it refuses: `(document, field, words)`.
    pub refusals: &'a [(&'a str, &'a str, &'a str)],
    /// Its JSON Schema.
    pub schema: &'a str,
    /// How many settings the schema has.
    pub fields: usize,
    /// Defaults the schema gives: `(field, value)`.
    pub defaults: &'a [(&'a str, Value)],
}

impl<T: Debug + PartialEq> Settings<'_, T> {
    /// Checks all of it.
    pub fn check(&self) {
        let parse = self.parse;
        assert_eq!(parse("").unwrap(), self.default);
        assert_eq!(parse(self.nulls).unwrap(), self.default);
        for (json, field, words) in self.refusals {
            let failure = parse(json).unwrap_err();
            assert_eq!(failure.kind, Kind::InvalidInput, "{json}");
            assert!(!failure.retryable);
            assert!(
                failure.message.starts_with(&format!("{field}: ")),
                "{json}: {}",
                failure.message
            );
            assert!(
                failure.message.contains(words),
                "{json}: {}",
                failure.message
            );
        }
        assert!(parse("[1]").unwrap_err().message.contains("object"));
        assert!(parse("{").unwrap_err().message.contains("not JSON"));
        let schema: Value = serde_json::from_str(self.schema).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        assert_eq!(properties.len(), self.fields);
        for (field, value) in self.defaults {
            assert_eq!(&properties[*field]["default"], value, "{field}");
        }
        for (field, property) in properties {
            assert!(property["title"].is_string(), "{field}");
            assert!(property["description"].is_string(), "{field}");
        }
        // The schema's own defaults pass the plugin's checks.
        let from_schema: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), v["default"].clone()))
            .collect();
        let from_schema = parse(&Value::Object(from_schema).to_string()).unwrap();
        assert_eq!(from_schema, self.default);
    }
}

/// Checks an apply script's `outcome` maps exit codes to kinds:
/// `(code, kind, retryable)` of `cases` (the plugin's own codes), and the
/// ones every plugin shares — 13 the lock, 143 or a signal stopped, an
/// unknown code, 0 without a result.
pub fn assert_exit_codes<T: Debug>(
    outcome: impl Fn(Option<i32>, &str, &str) -> Result<T, Failure>,
    cases: &[(i32, Kind, bool)],
) {
    let shared = [
        (13, Kind::Conflict, true),
        (143, Kind::Timeout, true),
        (2, Kind::Internal, false),
    ];
    for (code, kind, retryable) in cases.iter().chain(&shared) {
        let failure = outcome(Some(*code), "", "why\n").unwrap_err();
        assert_eq!(
            (failure.kind, failure.retryable),
            (*kind, *retryable),
            "{code}"
        );
    }
    assert_eq!(outcome(None, "", "").unwrap_err().kind, Kind::Timeout);
    assert_eq!(outcome(Some(0), "", "").unwrap_err().kind, Kind::Internal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_node_runs_scripts_as_the_ssh_channel_does() {
        for shell in [Shell::Debian, Shell::BashAsSh] {
            let node = Local::new(shell);
            let out = node
                .exec(crate::script::EXEC, b"echo hi; exit 3", 1_000)
                .unwrap();
            assert_eq!(out.exit_code, Some(3));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.starts_with("\x1edcp-pid "), "{stdout}");
            assert!(stdout.ends_with("\nhi\n"), "{stdout}");
        }
        let addresses = Addresses::new([127, 23, 252]);
        assert_eq!(addresses.next(), 1);
        assert_eq!(
            addresses.ip(addresses.next()),
            Ipv4Addr::new(127, 23, 252, 2)
        );
    }

    #[test]
    fn a_backend_answers_with_its_name() {
        let ip = Ipv4Addr::LOCALHOST;
        let b = backend(ip, "B", || ());
        assert_eq!(
            get(SocketAddr::from((ip, b.port)), "/"),
            (200, "B".to_owned())
        );
        b.arrived.recv().unwrap();
        assert_eq!(b.hits.load(Ordering::SeqCst), 1);
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(children(std::process::id()).contains(&child.id()));
        terminate(&mut child);
        wait_for("the child to go", || {
            !children(std::process::id()).contains(&child.id())
        });
    }
}
