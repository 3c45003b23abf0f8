//! The scripts against a real HAProxy: each test starts its own master
//! (`haproxy -W -db -f <temp cfg>`, master-worker, with an admin socket in
//! its temporary directory, on its own 127.23.251.x address) and small
//! HTTP backends on another loopback address, and drives the plugin's
//! steps through a local shell that runs commands the way the host's SSH
//! channel does. Needs `/usr/sbin/haproxy` (Debian's `haproxy` ≥ 2.6) and
//! `/usr/bin/socat`; `scripts/setup test` installs both.

// Against a real HAProxy on this machine: native only.
#![cfg(not(target_arch = "wasm32"))]

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use balancer_kit::{
    node::{Change, Node, Output},
    testing::{self, Addresses, Local, Shell, TestBackend, wait_for},
    upstream::Backend,
};
use tempfile::TempDir;

use crate::{Applied, Failure, Kind, config::Config, converge, upstream::Upstream};

const HAPROXY: &str = "/usr/sbin/haproxy";
const SOCAT: &str = "/usr/bin/socat";

/// One number a test: test n's HAProxy listens on 127.23.251.n, its
/// backends on 127.23.251.(100 + n).
static TESTS: Addresses = Addresses::new([127, 23, 251]);

/// Holds a backend's answers until released.
#[derive(Default)]
struct Gate {
    released: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut released = self.released.lock().unwrap();
        while !*released {
            released = self.opened.wait(released).unwrap();
        }
    }

    fn release(&self) {
        *self.released.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

/// A backend answering every request with its name; with a gate, answers
/// wait for it.
fn backend(ip: Ipv4Addr, name: &'static str, gate: Option<Arc<Gate>>) -> TestBackend {
    testing::backend(ip, name, move || {
        if let Some(gate) = &gate {
            gate.wait();
        }
    })
}

/// `GET /` on `addr`: the status (0 when nothing answers) and body.
fn get(addr: SocketAddr) -> (u16, String) {
    testing::get(addr, "/")
}

/// A running HAProxy master-worker in a directory of its own.
struct Haproxy {
    dir: TempDir,
    ip: Ipv4Addr,
    port: u16,
    /// Where this test's backends listen.
    backends_ip: Ipv4Addr,
    child: Child,
}

impl Haproxy {
    /// Starts HAProxy with `backend web` (and `backend api` when asked)
    /// holding no servers: requests answer 503 until DCP adds some.
    fn start(extra: &str) -> Self {
        assert!(
            Path::new(HAPROXY).exists() && Path::new(SOCAT).exists(),
            "{HAPROXY} or {SOCAT} is missing: install Debian's haproxy and socat \
             (scripts/setup test does)"
        );
        let n = TESTS.next();
        let (ip, backends_ip) = (TESTS.ip(n), TESTS.ip(100 + n));
        let port = testing::free_port(ip);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("haproxy.cfg"),
            format!(
                "global\n    stats socket {d}/admin.sock mode 600 level admin expose-fd listeners\n\
                 \n\
                 defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
                 timeout server 30s\n\
                 \n\
                 frontend fe\n    bind {ip}:{port}\n    default_backend web\n\
                 \n\
                 backend web\n    balance roundrobin\n{extra}"
            ),
        )
        .unwrap();
        let child = Self::spawn(dir.path());
        let mut haproxy = Self {
            dir,
            ip,
            port,
            backends_ip,
            child,
        };
        haproxy.wait_up();
        haproxy
    }

    fn spawn(dir: &Path) -> Child {
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        Command::new(HAPROXY)
            .args(["-W", "-db", "-f"])
            .arg(dir.join("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Up when the frontend answers and the admin socket does.
    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while get(self.addr()).0 == 0 || self.cli("show info").is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("haproxy exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not come up:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("haproxy.log")).unwrap_or_default()
    }

    fn cfg(&self) -> String {
        std::fs::read_to_string(self.path("haproxy.cfg")).unwrap()
    }

    fn config(&self, drain_timeout_ms: u32) -> Config {
        Config::parse(
            &serde_json::json!({
                "socket": self.path("admin.sock").display().to_string(),
                "config_file": self.path("haproxy.cfg").display().to_string(),
                "drain_timeout_ms": drain_timeout_ms,
            })
            .to_string(),
        )
        .unwrap()
    }

    /// One Runtime API command, as the test sees it.
    fn cli(&self, command: &str) -> String {
        let mut child = Command::new(SOCAT)
            .args(["-t", "5", "-"])
            .arg(format!(
                "UNIX-CONNECT:{}",
                self.path("admin.sock").display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{command}").unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
    }

    /// `backend web`'s servers: name -> (admin state, user weight).
    fn servers(&self) -> BTreeMap<String, (u32, u32)> {
        self.cli("show servers state web")
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 19 && f[0].bytes().all(|b| b.is_ascii_digit())).then(|| {
                    (
                        f[3].to_owned(),
                        (f[6].parse().unwrap(), f[7].parse().unwrap()),
                    )
                })
            })
            .collect()
    }

    /// The master and its workers, from /proc.
    fn processes(&self) -> (u32, BTreeSet<u32>) {
        let master = self.child.id();
        (master, testing::children(master))
    }

    /// Files the plugin leaves behind: there must be none after a call.
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains(".dcp"))
            .collect()
    }

    fn stop(&mut self) {
        // The master stops its workers on TERM.
        testing::terminate(&mut self.child);
    }

    /// Stops HAProxy and starts it again from its configuration file.
    fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(self.dir.path());
        self.wait_up();
    }

    /// The bodies of `n` requests, counted.
    fn answers(&self, n: usize) -> BTreeMap<String, usize> {
        let mut answers = BTreeMap::new();
        for _ in 0..n {
            let (status, body) = get(self.addr());
            assert_eq!(status, 200, "{body}");
            *answers.entry(body).or_default() += 1;
        }
        answers
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

fn web(revision: u64, backends: &[(&TestBackend, u32)]) -> Upstream {
    Upstream {
        name: "web".to_owned(),
        backends: backends
            .iter()
            .map(|(b, weight)| Backend {
                address: b.ip.to_string(),
                port: b.port,
                weight: *weight,
            })
            .collect(),
        revision,
    }
}

fn name(b: &TestBackend) -> String {
    format!("dcp_{}_{}", b.ip.to_string().replace('.', "_"), b.port)
}

fn apply(haproxy: &Haproxy, node: &Local, upstreams: &[Upstream]) -> Result<Applied, Failure> {
    converge::upstreams(&Change {
        config: &haproxy.config(30_000),
        upstreams,
        node,
        token: "t1",
    })
}

fn haproxy_check(path: &Path) -> (bool, String) {
    let out = Command::new(HAPROXY)
        .args(["-c", "-f"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Three servers added through the Runtime API: requests reach all three
/// with no reload (the same master and worker); the file lists them and
/// `haproxy -c` takes it; the same call again changes nothing; an older
/// revision is kept out.
fn servers_are_added_without_a_reload(shell: Shell) {
    let haproxy = Haproxy::start("");
    let node = Local::new(shell);
    assert_eq!(get(haproxy.addr()).0, 503, "no servers yet");
    let ip = haproxy.backends_ip;
    let (a, b, c) = (
        backend(ip, "A", None),
        backend(ip, "B", None),
        backend(ip, "C", None),
    );
    let before = haproxy.processes();
    assert_eq!(before.1.len(), 1, "one worker");
    let wanted = web(1, &[(&a, 1), (&b, 1), (&c, 1)]);
    let applied = apply(&haproxy, &node, std::slice::from_ref(&wanted)).unwrap();
    assert!(applied.changed, "{}", applied.log);
    for line in [
        "upstream web: revision 1, 3 servers: 3 to add, 0 to change, 0 to remove".to_owned(),
        format!("web: added {} ({ip}:{}, weight 1)", name(&a), a.port),
        format!("web: {} enabled", name(&c)),
        "haproxy -c: ok".to_owned(),
        format!("wrote {}", haproxy.path("haproxy.cfg").display()),
    ] {
        assert!(applied.log.contains(&line), "{line:?} in:\n{}", applied.log);
    }
    assert_eq!(haproxy.processes(), before, "no reload, no new worker");
    let answers = haproxy.answers(9);
    assert_eq!(
        answers,
        BTreeMap::from([
            ("A".to_owned(), 3),
            ("B".to_owned(), 3),
            ("C".to_owned(), 3)
        ])
    );
    let servers = haproxy.servers();
    assert_eq!(servers.len(), 3);
    assert!(servers.values().all(|s| *s == (0, 1)), "{servers:?}");
    let cfg = haproxy.cfg();
    assert!(
        cfg.contains("# Managed by DCP: upstream web, revision 1."),
        "{cfg}"
    );
    for backend in [&a, &b, &c] {
        let line = format!(
            "    server {} {ip}:{} weight 1\n",
            name(backend),
            backend.port
        );
        assert!(cfg.contains(&line), "{line:?} in:\n{cfg}");
    }
    let (ok, said) = haproxy_check(&haproxy.path("haproxy.cfg"));
    assert!(ok, "{said}");
    assert!(haproxy.leftovers().is_empty(), "{:?}", haproxy.leftovers());

    let again = apply(&haproxy, &node, std::slice::from_ref(&wanted)).unwrap();
    assert!(!again.changed, "{}", again.log);
    assert!(
        again
            .log
            .contains("upstream web: revision 1, 3 servers: unchanged"),
        "{}",
        again.log
    );
    assert_eq!(haproxy.cfg(), cfg, "the file is not written again");

    let older = web(0, &[(&a, 1)]);
    let kept = apply(&haproxy, &node, &[older]).unwrap();
    assert!(!kept.changed, "{}", kept.log);
    assert!(
        kept.log
            .contains("upstream web: kept: the node serves revision 1, newer than 0"),
        "{}",
        kept.log
    );
    assert_eq!(haproxy.servers().len(), 3);
    assert_eq!(haproxy.cfg(), cfg);
    assert_eq!(haproxy.processes(), before);
}

#[test]
fn servers_are_added_without_a_reload_on_a_debian_node() {
    servers_are_added_without_a_reload(Shell::Debian);
}

#[test]
fn servers_are_added_without_a_reload_on_a_busybox_node() {
    servers_are_added_without_a_reload(Shell::Busybox);
}

/// Weights change at run time; weight 0 drains a server (no new requests)
/// and a weight again puts it back.
#[test]
fn weights_change_at_run_time() {
    let haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let ip = haproxy.backends_ip;
    let (a, b) = (backend(ip, "A", None), backend(ip, "B", None));
    apply(&haproxy, &node, &[web(1, &[(&a, 1), (&b, 1)])]).unwrap();
    let processes = haproxy.processes();

    let applied = apply(&haproxy, &node, &[web(2, &[(&a, 3), (&b, 1)])]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(
        applied
            .log
            .contains(&format!("web: {} weight 1 -> 3", name(&a))),
        "{}",
        applied.log
    );
    assert_eq!(haproxy.servers()[&name(&a)], (0, 3));
    let answers = haproxy.answers(8);
    assert_eq!(
        answers,
        BTreeMap::from([("A".to_owned(), 6), ("B".to_owned(), 2)])
    );

    let applied = apply(&haproxy, &node, &[web(3, &[(&a, 3), (&b, 0)])]).unwrap();
    assert!(
        applied
            .log
            .contains(&format!("web: {} draining (weight 0)", name(&b))),
        "{}",
        applied.log
    );
    assert_eq!(haproxy.servers()[&name(&b)].0 & 8, 8, "draining");
    assert_eq!(haproxy.answers(6), BTreeMap::from([("A".to_owned(), 6)]));
    assert!(
        haproxy
            .cfg()
            .contains(&format!("server {} {ip}:{} weight 0\n", name(&b), b.port))
    );

    let applied = apply(&haproxy, &node, &[web(4, &[(&a, 1), (&b, 1)])]).unwrap();
    assert!(
        applied
            .log
            .contains(&format!("web: {} ready (was draining)", name(&b))),
        "{}",
        applied.log
    );
    assert_eq!(
        haproxy.answers(4),
        BTreeMap::from([("A".to_owned(), 2), ("B".to_owned(), 2)])
    );
    assert_eq!(haproxy.processes(), processes, "no reload");
}

/// A removed server with a session open is drained: new requests go
/// elsewhere at once, the open one completes, then the server is deleted.
/// Past the drain timeout, open sessions are cut and it is deleted anyway.
#[test]
fn a_removed_server_drains_before_it_is_deleted() {
    let haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let ip = haproxy.backends_ip;
    let gate = Arc::new(Gate::default());
    let slow = backend(ip, "slow", Some(Arc::clone(&gate)));
    let fast = backend(ip, "fast", None);
    apply(&haproxy, &node, &[web(1, &[(&slow, 1)])]).unwrap();
    let addr = haproxy.addr();
    let in_flight = thread::spawn(move || get(addr));
    slow.arrived
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the slow server");

    let config = haproxy.config(30_000);
    let wanted = [web(2, &[(&fast, 1)])];
    let applied = thread::scope(|s| {
        let call = s.spawn(|| {
            converge::upstreams(&Change {
                config: &config,
                upstreams: &wanted,
                node: &node,
                token: "t2",
            })
        });
        // The call adds the fast server and drains the slow one.
        let slow_name = name(&slow);
        wait_for("the slow server to drain", || {
            haproxy
                .servers()
                .get(&slow_name)
                .is_some_and(|(admin, _)| admin & 8 == 8)
        });
        let answers = haproxy.answers(5);
        assert_eq!(answers, BTreeMap::from([("fast".to_owned(), 5)]));
        assert_eq!(slow.hits.load(Ordering::SeqCst), 1, "no new request for it");
        assert!(!call.is_finished(), "the call waits for the open session");
        assert!(haproxy.servers().contains_key(&slow_name));
        gate.release();
        call.join().unwrap()
    })
    .unwrap();
    assert_eq!(in_flight.join().unwrap(), (200, "slow".to_owned()));
    assert!(applied.changed, "{}", applied.log);
    assert!(applied.log.contains("drained in "), "{}", applied.log);
    assert!(
        applied
            .log
            .contains(&format!("web: removed {}", name(&slow))),
        "{}",
        applied.log
    );
    assert_eq!(
        haproxy.servers().keys().cloned().collect::<Vec<_>>(),
        [name(&fast)]
    );
    assert!(!haproxy.cfg().contains(&name(&slow)));

    // A session that outlasts the drain timeout is cut.
    let gate = Arc::new(Gate::default());
    let stuck = backend(ip, "stuck", Some(Arc::clone(&gate)));
    apply(&haproxy, &node, &[web(3, &[(&stuck, 1)])]).unwrap();
    let in_flight = thread::spawn(move || get(addr));
    stuck
        .arrived
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the stuck server");
    let started = Instant::now();
    let applied = converge::upstreams(&Change {
        config: &haproxy.config(300),
        upstreams: &[web(4, &[(&fast, 1)])],
        node: &node,
        token: "t3",
    })
    .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        applied.log.contains("1 session(s) still open after"),
        "{}",
        applied.log
    );
    assert!(
        applied
            .log
            .contains(&format!("web: removed {}", name(&stuck))),
        "{}",
        applied.log
    );
    assert_ne!(in_flight.join().unwrap().1, "stuck", "the session was cut");
    gate.release();
    assert_eq!(
        haproxy.servers().keys().cloned().collect::<Vec<_>>(),
        [name(&fast)]
    );
    assert!(haproxy.leftovers().is_empty(), "{:?}", haproxy.leftovers());
}

/// After changes, the file is one `haproxy -c` takes, and HAProxy started
/// again from it serves the same servers with the same weights; DCP's
/// next call finds nothing to do.
#[test]
fn a_restart_from_the_file_serves_the_same_servers() {
    let mut haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let ip = haproxy.backends_ip;
    let (a, b, c) = (
        backend(ip, "A", None),
        backend(ip, "B", None),
        backend(ip, "C", None),
    );
    apply(&haproxy, &node, &[web(1, &[(&a, 1), (&b, 1), (&c, 1)])]).unwrap();
    let wanted = web(2, &[(&a, 2), (&b, 0)]);
    apply(&haproxy, &node, std::slice::from_ref(&wanted)).unwrap();
    let (ok, said) = haproxy_check(&haproxy.path("haproxy.cfg"));
    assert!(ok, "{said}");
    let before = haproxy.servers();
    assert_eq!(before.len(), 2, "{before:?}");
    let old_master = haproxy.processes().0;

    haproxy.restart();
    assert_ne!(haproxy.processes().0, old_master);
    let after = haproxy.servers();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(after[&name(&a)], (0, 2));
    assert_eq!(after[&name(&b)].1, 0, "weight 0 after the restart");
    assert_eq!(haproxy.answers(4), BTreeMap::from([("A".to_owned(), 4)]));
    let again = apply(&haproxy, &node, &[wanted]).unwrap();
    assert!(!again.changed, "{}", again.log);
}

/// A DCP upstream whose backend the file lacks: a clear error naming it,
/// and nothing changed.
#[test]
fn a_missing_backend_section_is_named() {
    let haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let a = backend(haproxy.backends_ip, "A", None);
    let cfg = haproxy.cfg();
    let mut api = web(1, &[(&a, 1)]);
    api.name = "api".to_owned();
    let failure = apply(&haproxy, &node, &[web(1, &[(&a, 1)]), api]).unwrap_err();
    assert_eq!(failure.kind, Kind::InvalidInput, "{}", failure.message);
    assert!(!failure.retryable);
    assert_eq!(
        failure.message,
        format!(
            "upstream api: {} has no `backend api` section; add one (DCP manages its servers, \
             not the section)",
            haproxy.path("haproxy.cfg").display()
        )
    );
    assert!(haproxy.servers().is_empty());
    assert_eq!(haproxy.cfg(), cfg);
}

/// A file `haproxy -c` refuses (an operator's typo, not loaded yet):
/// HAProxy's own words, and nothing changed at run time.
#[test]
fn a_file_haproxy_refuses_changes_nothing() {
    let haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let typo = format!("{}    sever typo 10.0.0.1:80\n", haproxy.cfg());
    std::fs::write(haproxy.path("haproxy.cfg"), &typo).unwrap();
    let a = backend(haproxy.backends_ip, "A", None);
    let failure = apply(&haproxy, &node, &[web(1, &[(&a, 1)])]).unwrap_err();
    assert_eq!(failure.kind, Kind::InvalidInput, "{}", failure.message);
    assert!(
        failure
            .message
            .starts_with("haproxy -c refused the new configuration file; nothing was changed: "),
        "{}",
        failure.message
    );
    assert!(failure.message.contains("'sever'"), "{}", failure.message);
    assert!(!failure.message.contains("[NOTICE]"), "{}", failure.message);
    assert!(haproxy.servers().is_empty());
    assert_eq!(haproxy.cfg(), typo);
    assert!(haproxy.leftovers().is_empty(), "{:?}", haproxy.leftovers());
}

/// HAProxy not running: worth a retry, nothing written.
#[test]
fn a_stopped_haproxy_is_unavailable() {
    let mut haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let a = backend(haproxy.backends_ip, "A", None);
    haproxy.stop();
    let cfg = haproxy.cfg();
    let failure = apply(&haproxy, &node, &[web(1, &[(&a, 1)])]).unwrap_err();
    // The worker left its socket behind: nothing listens on it.
    assert_eq!(failure.kind, Kind::Unavailable, "{}", failure.message);
    assert!(failure.retryable);
    assert!(
        failure.message.contains("admin socket") && failure.message.contains("Connection refused"),
        "{}",
        failure.message
    );
    assert_eq!(haproxy.cfg(), cfg);
    assert!(haproxy.leftovers().is_empty(), "{:?}", haproxy.leftovers());
}

/// Requests sent without pause while three servers are added, one drained
/// and removed, and the rest re-weighted: not one fails, and HAProxy is
/// never reloaded.
#[test]
fn no_request_fails_under_steady_load() {
    let haproxy = Haproxy::start("");
    let node = Local::new(Shell::Debian);
    let ip = haproxy.backends_ip;
    let servers = [
        backend(ip, "A", None),
        backend(ip, "B", None),
        backend(ip, "C", None),
        backend(ip, "D", None),
    ];
    let [a, b, c, d] = &servers;
    apply(&haproxy, &node, &[web(1, &[(a, 1)])]).unwrap();
    let processes = haproxy.processes();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = haproxy.addr();
    let client = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        thread::spawn(move || {
            let mut failed = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = get(addr);
                if status != 200 {
                    failed.push(format!("{status} {body}"));
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            failed
        })
    };
    let more = |n: usize| {
        let from = sent.load(Ordering::SeqCst);
        wait_for("more requests", || sent.load(Ordering::SeqCst) >= from + n);
    };
    more(20);
    apply(
        &haproxy,
        &node,
        &[web(2, &[(a, 1), (b, 1), (c, 1), (d, 1)])],
    )
    .unwrap();
    for server in [b, c, d] {
        wait_for("requests on every new server", || {
            server.hits.load(Ordering::SeqCst) > 0
        });
    }
    let applied = apply(&haproxy, &node, &[web(3, &[(b, 1), (c, 1), (d, 1)])]).unwrap();
    assert!(
        applied.log.contains(&format!("web: removed {}", name(a))),
        "{}",
        applied.log
    );
    let a_hits = a.hits.load(Ordering::SeqCst);
    more(20);
    apply(&haproxy, &node, &[web(4, &[(b, 5), (c, 1), (d, 0)])]).unwrap();
    more(50);
    stop.store(true, Ordering::SeqCst);
    let failed = client.join().unwrap();
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert_eq!(
        a.hits.load(Ordering::SeqCst),
        a_hits,
        "nothing after removal"
    );
    assert!(sent.load(Ordering::SeqCst) >= 110);
    assert_eq!(haproxy.processes(), processes, "no reload");
    let servers = haproxy.servers();
    assert_eq!(servers[&name(b)], (0, 5));
    assert_eq!(servers.len(), 3);
}

/// A change in progress holds the lock; a lock whose process is gone is
/// taken over.
#[test]
fn changes_to_one_haproxy_take_turns() {
    let haproxy = Haproxy::start("");
    let mut node = Local::new(Shell::Debian);
    let a = backend(haproxy.backends_ip, "A", None);
    let lock = haproxy.path(".haproxy.cfg.dcp-lock");
    std::fs::create_dir(&lock).unwrap();
    std::fs::write(lock.join("pid"), std::process::id().to_string()).unwrap();
    // Little time left: the script gives up on the lock at once.
    node.time_left_ms = 5_000;
    let failure = apply(&haproxy, &node, &[web(1, &[(&a, 1)])]).unwrap_err();
    assert_eq!(failure.kind, Kind::Conflict, "{}", failure.message);
    assert!(failure.retryable);
    assert!(
        failure
            .message
            .contains("another change to this HAProxy is in progress"),
        "{}",
        failure.message
    );
    assert!(haproxy.servers().is_empty());
    assert!(!haproxy.cfg().contains("dcp_"));

    std::fs::write(lock.join("pid"), "999999999").unwrap();
    let applied = apply(&haproxy, &node, &[web(1, &[(&a, 1)])]).unwrap();
    assert!(applied.changed);
    assert!(
        applied
            .log
            .contains("removed a stale lock of process 999999999"),
        "{}",
        applied.log
    );
    assert_eq!(haproxy.servers().len(), 1);
    assert!(haproxy.leftovers().is_empty(), "{:?}", haproxy.leftovers());
}

/// A node whose file an operator edits between DCP's read and its change:
/// the change sees it (the checksum), reads again and keeps the edit.
#[test]
fn a_node_changed_since_the_read_is_read_again() {
    struct Meddling<'a> {
        node: Local,
        cfg: &'a Path,
        execs: AtomicUsize,
    }
    impl Node for Meddling<'_> {
        fn exec(&self, command: &str, stdin: &[u8], timeout_ms: u32) -> Result<Output, Failure> {
            // The second exec is the first apply script.
            if self.execs.fetch_add(1, Ordering::SeqCst) == 1 {
                let mut text = std::fs::read_to_string(self.cfg).unwrap();
                text.push_str("# an operator's note\n");
                std::fs::write(self.cfg, text).unwrap();
            }
            self.node.exec(command, stdin, timeout_ms)
        }
        fn put_file(&self, path: &str, content: &[u8], mode: u32) -> Result<(), Failure> {
            self.node.put_file(path, content, mode)
        }
        fn time_left_ms(&self) -> u64 {
            self.node.time_left_ms()
        }
    }
    let haproxy = Haproxy::start("");
    let cfg = haproxy.path("haproxy.cfg");
    let node = Meddling {
        node: Local::new(Shell::Debian),
        cfg: &cfg,
        execs: AtomicUsize::new(0),
    };
    let a = backend(haproxy.backends_ip, "A", None);
    let applied = converge::upstreams(&Change {
        config: &haproxy.config(1_000),
        upstreams: &[web(1, &[(&a, 1)])],
        node: &node,
        token: "t4",
    })
    .unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(
        applied
            .log
            .contains("the node changed since it was read: reading it again"),
        "{}",
        applied.log
    );
    assert_eq!(
        node.execs.load(Ordering::SeqCst),
        4,
        "read, apply, read, apply"
    );
    let text = haproxy.cfg();
    assert!(text.ends_with("# an operator's note\n"), "{text}");
    assert!(text.contains(&format!("server {} ", name(&a))), "{text}");
    assert_eq!(haproxy.servers().len(), 1);
}

/// Several upstreams in one call, a `listen` section among them: each
/// converges, in one script.
#[test]
fn several_upstreams_converge_in_one_call() {
    let haproxy =
        Haproxy::start("\nlisten api\n    mode tcp\n    default-server check inter 500ms\n");
    let node = Local::new(Shell::Debian);
    let ip = haproxy.backends_ip;
    let (a, b) = (backend(ip, "A", None), backend(ip, "B", None));
    let mut api = web(5, &[(&b, 2)]);
    api.name = "api".to_owned();
    let applied = apply(&haproxy, &node, &[web(1, &[(&a, 1)]), api.clone()]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(
        applied
            .log
            .contains(&format!("api: health checks of {} on", name(&b))),
        "{}",
        applied.log
    );
    let state = haproxy.cli("show servers state api");
    assert!(state.contains(&name(&b)), "{state}");
    let text = haproxy.cfg();
    assert!(
        text.contains("# Managed by DCP: upstream api, revision 5."),
        "{text}"
    );
    assert!(
        text.contains("# Managed by DCP: upstream web, revision 1."),
        "{text}"
    );
    let (ok, said) = haproxy_check(&haproxy.path("haproxy.cfg"));
    assert!(ok, "{said}");
    let again = apply(&haproxy, &node, &[web(1, &[(&a, 1)]), api]).unwrap();
    assert!(!again.changed, "{}", again.log);
}
