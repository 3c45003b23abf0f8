//! The scripts against a real nginx: each test starts its own master
//! (`nginx -p <temp prefix> -c nginx.conf`, on its own 127.23.250.x
//! address) and drives the plugin's steps through a local shell that runs
//! commands the way the host's SSH channel does. Needs `/usr/sbin/nginx`
//! (Debian's `nginx`; `scripts/setup test` installs it).

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use balancer_kit::{
    node::Change,
    testing::{self, Addresses, Local, Shell, TestBackend},
    upstream::Backend,
};
use tempfile::TempDir;

use crate::{
    Applied, Failure, Kind,
    config::Config,
    converge,
    publish::File,
    script,
    upstream::{self, Upstream},
};

const NGINX: &str = "/usr/sbin/nginx";

/// One address a test: 127.23.250.<n>.
static ADDRESSES: Addresses = Addresses::new([127, 23, 250]);

/// A backend answering every request with its name, after `delay`.
fn backend(ip: Ipv4Addr, name: &'static str, delay: Duration) -> TestBackend {
    testing::backend(ip, name, move || thread::sleep(delay))
}

/// A running nginx master in a prefix of its own.
struct Nginx {
    dir: TempDir,
    ip: Ipv4Addr,
    port: u16,
    child: Child,
}

impl Nginx {
    /// Starts nginx serving `default_upstream` (the placeholder file the
    /// test harness starts with) and `include sites/*`.
    fn start() -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (scripts/setup test does)"
        );
        let ip = ADDRESSES.ip(ADDRESSES.next());
        let port = testing::free_port(ip);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display().to_string();
        for sub in ["dcp-upstreams", "sites", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        std::fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "user root;\nworker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {p}/tmp/body;\n  \
                 proxy_temp_path {p}/tmp/proxy;\n  fastcgi_temp_path {p}/tmp/fastcgi;\n  \
                 uwsgi_temp_path {p}/tmp/uwsgi;\n  scgi_temp_path {p}/tmp/scgi;\n  \
                 include dcp-upstreams/*.conf;\n  include sites/*;\n  \
                 server {{\n    listen {ip}:{port};\n    \
                 location / {{ proxy_pass http://default_upstream; }}\n    \
                 location = /nginx-health {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("dcp-upstreams/default_upstream.conf"),
            include_str!("../../../tests/fixtures/nginx/default_upstream.conf"),
        )
        .unwrap();
        let child = Command::new(NGINX)
            .arg("-p")
            .arg(format!("{p}/"))
            .args(["-c", "nginx.conf", "-e", &format!("{p}/error.log")])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Self {
            dir,
            ip,
            port,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Up when it answers and both workers exist: one worker answering
        // says nothing of the other, which a loaded machine forks later.
        while nginx.get(nginx.port, "/nginx-health").0 != 200 || nginx.workers().len() != 2 {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                panic!("nginx exited with {status}:\n{}", nginx.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not come up:\n{}",
                nginx.error_log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        // The pid file is there too: the master writes it before forking.
        nginx
    }

    fn prefix(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn config(&self, reload_timeout_ms: u32) -> Config {
        Config::parse(
            &serde_json::json!({
                "prefix": self.prefix(),
                "pid_file": format!("{}/nginx.pid", self.prefix()),
                "reload_timeout_ms": reload_timeout_ms,
            })
            .to_string(),
        )
        .unwrap()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.path("error.log")).unwrap_or_default()
    }

    /// The master's children, from /proc.
    fn workers(&self) -> BTreeSet<u32> {
        testing::children(self.child.id())
    }

    /// `GET path` on `port`: the status (0 when nothing answers) and body.
    fn get(&self, port: u16, path: &str) -> (u16, String) {
        testing::get(SocketAddr::from((self.ip, port)), path)
    }

    /// Files the plugin leaves behind in `dir` (candidates, backups, lock,
    /// marker): there must be none after a call.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for dir in ["", "dcp-upstreams", "sites"] {
            for entry in std::fs::read_dir(self.path(dir)).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                if name.contains(".dcp") {
                    found.push(format!("{dir}/{name}"));
                }
            }
        }
        found
    }

    fn stop(&mut self) {
        testing::terminate(&mut self.child);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM, not KILL: a killed master leaves its workers running.
        self.stop();
    }
}

fn upstream(name: &str, revision: u64, backends: &[(Ipv4Addr, u16, u32)]) -> Upstream {
    Upstream {
        name: name.to_owned(),
        backends: backends
            .iter()
            .map(|(ip, port, weight)| Backend {
                address: ip.to_string(),
                port: *port,
                weight: *weight,
            })
            .collect(),
        revision,
    }
}

fn file(path: &str, content: &str) -> File {
    File {
        path: path.to_owned(),
        content: content.to_owned(),
    }
}

fn apply(
    nginx: &Nginx,
    node: &Local,
    timeout_ms: u32,
    upstreams: &[Upstream],
) -> Result<Applied, Failure> {
    converge::upstreams(&Change {
        config: &nginx.config(timeout_ms),
        upstreams,
        node,
        token: "t1",
    })
}

fn publish(
    nginx: &Nginx,
    node: &Local,
    timeout_ms: u32,
    files: &[File],
) -> Result<Applied, Failure> {
    converge::files(&nginx.config(timeout_ms), files, node, "t2")
}

/// The first push replaces the placeholder and reloads, verified; the same
/// push again changes nothing; an older revision is kept out; weight 0
/// takes a backend out of rotation.
fn upstreams_converge(shell: Shell) {
    let nginx = Nginx::start();
    let node = Local::new(shell);
    assert_eq!(nginx.get(nginx.port, "/").0, 502, "the placeholder is down");
    let (a, b) = (
        backend(nginx.ip, "A", Duration::ZERO),
        backend(nginx.ip, "B", Duration::ZERO),
    );
    let before = nginx.workers();
    assert_eq!(before.len(), 2);
    let wanted = upstream(
        "default_upstream",
        1,
        &[(nginx.ip, a.port, 1), (nginx.ip, b.port, 1)],
    );
    let applied = apply(&nginx, &node, 10_000, std::slice::from_ref(&wanted)).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(
        applied
            .log
            .contains("upstream default_upstream: from revision 0 to revision 1, 2 backends"),
        "{}",
        applied.log
    );
    assert!(!applied.log.contains("warning"), "{}", applied.log);
    // Every phase says how long it took.
    for phase in [
        "read the node's files in ",
        "uploaded 1 file(s) in ",
        "nginx -t: ok (",
        "drained in ",
    ] {
        let after = applied.log.split(phase).nth(1);
        let ms = after.and_then(|rest| rest.split(' ').next()?.parse::<u64>().ok());
        assert!(ms.is_some(), "no time for {phase:?}: {}", applied.log);
    }
    let after = nginx.workers();
    assert_eq!(after.len(), 2);
    assert!(
        after.is_disjoint(&before),
        "a new generation: {before:?} -> {after:?}"
    );
    assert_eq!(
        std::fs::read_to_string(nginx.path("dcp-upstreams/default_upstream.conf")).unwrap(),
        upstream::render(&wanted).unwrap()
    );
    let answers: BTreeSet<String> = (0..6).map(|_| nginx.get(nginx.port, "/").1).collect();
    assert_eq!(answers, BTreeSet::from(["A".to_owned(), "B".to_owned()]));
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());

    let again = apply(&nginx, &node, 10_000, std::slice::from_ref(&wanted)).unwrap();
    assert!(!again.changed, "{}", again.log);
    assert!(again.log.contains("unchanged"), "{}", again.log);
    assert_eq!(nginx.workers(), after, "no reload");

    let older = upstream("default_upstream", 0, &[(nginx.ip, a.port, 1)]);
    let kept = apply(&nginx, &node, 10_000, &[older]).unwrap();
    assert!(!kept.changed);
    assert!(
        kept.log
            .contains("kept: the node serves revision 1, newer than 0"),
        "{}",
        kept.log
    );

    let drained = upstream(
        "default_upstream",
        2,
        &[(nginx.ip, a.port, 0), (nginx.ip, b.port, 5)],
    );
    let applied = apply(&nginx, &node, 10_000, &[drained]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    let answers: BTreeSet<String> = (0..4).map(|_| nginx.get(nginx.port, "/").1).collect();
    assert_eq!(answers, BTreeSet::from(["B".to_owned()]));
    // A second upstream lands beside the first.
    let other = upstream("other", 1, &[]);
    let applied = apply(&nginx, &node, 10_000, &[other]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(nginx.path("dcp-upstreams/other.conf").exists());
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
}

#[test]
fn upstreams_converge_on_a_debian_node() {
    upstreams_converge(Shell::Debian);
}

#[test]
fn upstreams_converge_on_a_busybox_node() {
    upstreams_converge(Shell::Busybox);
}

#[test]
fn upstreams_converge_where_sh_is_bash() {
    upstreams_converge(Shell::BashAsSh);
}

/// `nginx -t` refusing a file: nginx's own words, the previous files
/// (replaced and new alike) back, the running configuration untouched.
#[test]
fn a_configuration_nginx_t_refuses_changes_nothing() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    let site_port = testing::free_port(nginx.ip);
    let v1 = format!(
        "server {{ listen {}:{site_port}; location / {{ return 200 \"v1\"; }} }}\n",
        nginx.ip
    );
    let applied = publish(&nginx, &node, 10_000, &[file("sites/app.conf", &v1)]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(
        applied.log.contains("sites/app.conf: new"),
        "{}",
        applied.log
    );
    assert_eq!(nginx.get(site_port, "/"), (200, "v1".to_owned()));
    let workers = nginx.workers();

    let broken = format!(
        "server {{ listen {}:{site_port}; location / {{ return 200 \"v2\"; }} }} }}\n",
        nginx.ip
    );
    let failure = publish(
        &nginx,
        &node,
        10_000,
        &[
            file("sites/app.conf", &broken),
            file("sites/new.conf", "# a new file\n"),
        ],
    )
    .unwrap_err();
    assert_eq!(failure.kind, Kind::InvalidInput, "{}", failure.message);
    assert!(!failure.retryable);
    assert!(
        failure.message.contains(&format!(
            "nginx: [emerg] unexpected \"}}\" in {}/sites/app.conf:1",
            nginx.prefix()
        )),
        "{}",
        failure.message
    );
    assert_eq!(
        std::fs::read_to_string(nginx.path("sites/app.conf")).unwrap(),
        v1
    );
    assert!(!nginx.path("sites/new.conf").exists());
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
    assert_eq!(nginx.workers(), workers, "no reload");
    assert_eq!(nginx.get(site_port, "/"), (200, "v1".to_owned()));
    assert_eq!(nginx.get(nginx.port, "/nginx-health").0, 200);

    // Unchanged files are not even uploaded.
    let same = publish(&nginx, &node, 10_000, &[file("sites/app.conf", &v1)]).unwrap();
    assert!(!same.changed, "{}", same.log);
}

/// A configuration `nginx -t` passes but the master cannot load (its port
/// is taken): no new generation comes, so the files are restored, nginx
/// reloads them, and the error quotes nginx's log.
#[test]
fn a_reload_nginx_refuses_is_rolled_back() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    let taken = TcpListener::bind((nginx.ip, 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let clash = format!(
        "server {{ listen {}:{port}; return 200 \"clash\"; }}\n",
        nginx.ip
    );
    let workers = nginx.workers();
    let failure = publish(&nginx, &node, 1_500, &[file("sites/clash.conf", &clash)]).unwrap_err();
    assert_eq!(failure.kind, Kind::Conflict, "{}", failure.message);
    assert!(!failure.retryable);
    assert!(
        failure
            .message
            .contains("did not take the new configuration"),
        "{}",
        failure.message
    );
    assert_eq!(
        failure.message.matches("bind() to").count(),
        1,
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("Address already in use"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("restored the previous files"),
        "{}",
        failure.message
    );
    assert!(!nginx.path("sites/clash.conf").exists());
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
    // The restored files were reloaded: a new generation of the old config.
    assert!(nginx.workers().is_disjoint(&workers));
    assert_eq!(nginx.get(nginx.port, "/nginx-health").0, 200);
    drop(taken);
}

/// A reload waits for the old workers' in-flight requests, which finish
/// on the old configuration.
#[test]
fn a_reload_waits_for_the_old_workers_to_drain() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    let slow = backend(nginx.ip, "slow", Duration::from_millis(1500));
    let fast = backend(nginx.ip, "fast", Duration::ZERO);
    apply(
        &nginx,
        &node,
        10_000,
        &[upstream("default_upstream", 1, &[(nginx.ip, slow.port, 1)])],
    )
    .unwrap();
    let (ip, port) = (nginx.ip, nginx.port);
    let in_flight = thread::spawn(move || {
        let mut stream = TcpStream::connect((ip, port)).unwrap();
        write!(stream, "GET / HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    slow.arrived
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the slow backend");
    let started = Instant::now();
    let applied = apply(
        &nginx,
        &node,
        10_000,
        &[upstream("default_upstream", 2, &[(nginx.ip, fast.port, 1)])],
    )
    .unwrap();
    assert!(applied.changed);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{}",
        applied.log
    );
    let drained: u64 = applied
        .log
        .split("drained in ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("{}", applied.log));
    assert!(drained >= 900, "{}", applied.log);
    assert!(in_flight.join().unwrap().ends_with("slow"));
    assert_eq!(nginx.get(nginx.port, "/").1, "fast");

    // A drain longer than the reload timeout: the new configuration is
    // live, the old worker still finishing is reported, not rolled back.
    apply(
        &nginx,
        &node,
        10_000,
        &[upstream("default_upstream", 3, &[(nginx.ip, slow.port, 1)])],
    )
    .unwrap();
    let in_flight = thread::spawn(move || {
        let mut stream = TcpStream::connect((ip, port)).unwrap();
        write!(stream, "GET / HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    });
    slow.arrived
        .recv_timeout(Duration::from_secs(5))
        .expect("the request reached the slow backend");
    let applied = apply(
        &nginx,
        &node,
        300,
        &[upstream("default_upstream", 4, &[(nginx.ip, fast.port, 1)])],
    )
    .unwrap();
    assert!(applied.changed);
    assert!(
        applied.log.contains("still finishing requests"),
        "{}",
        applied.log
    );
    assert!(in_flight.join().unwrap().ends_with("slow"));
}

/// No nginx running: the files go back and the failure is worth a retry.
#[test]
fn a_stopped_nginx_is_unavailable() {
    let mut nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    nginx.stop();
    let before =
        std::fs::read_to_string(nginx.path("dcp-upstreams/default_upstream.conf")).unwrap();
    let failure = apply(
        &nginx,
        &node,
        10_000,
        &[upstream("default_upstream", 1, &[])],
    )
    .unwrap_err();
    assert_eq!(failure.kind, Kind::Unavailable, "{}", failure.message);
    assert!(failure.retryable);
    assert!(
        failure.message.contains("nginx is not running"),
        "{}",
        failure.message
    );
    assert_eq!(
        std::fs::read_to_string(nginx.path("dcp-upstreams/default_upstream.conf")).unwrap(),
        before
    );
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
}

/// A change in progress holds the lock; a lock whose process is gone is
/// taken over.
#[test]
fn changes_to_one_nginx_take_turns() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    let lock = nginx.path(".dcp-lock");
    std::fs::create_dir(&lock).unwrap();
    std::fs::write(lock.join("pid"), std::process::id().to_string()).unwrap();
    let failure = apply(&nginx, &node, 300, &[upstream("web", 1, &[])]).unwrap_err();
    assert_eq!(failure.kind, Kind::Conflict, "{}", failure.message);
    assert!(failure.retryable);
    assert!(
        failure.message.contains("in progress"),
        "{}",
        failure.message
    );
    assert!(!nginx.path("dcp-upstreams/web.conf").exists());
    assert!(!nginx.path("dcp-upstreams/.web.conf.dcp-new.t1").exists());

    std::fs::write(lock.join("pid"), "999999999").unwrap();
    let applied = apply(&nginx, &node, 10_000, &[upstream("web", 1, &[])]).unwrap();
    assert!(applied.changed);
    assert!(
        applied.log.contains("removed a stale lock"),
        "{}",
        applied.log
    );
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
}

/// A change cut off after its files were in place (the marker is left):
/// the next call reloads even though the files look current.
#[test]
fn a_change_cut_off_is_reloaded_by_the_next_call() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Debian);
    let wanted = upstream("default_upstream", 0, &[]);
    std::fs::write(nginx.path(".dcp-unverified"), "").unwrap();
    let workers = nginx.workers();
    let applied = apply(&nginx, &node, 10_000, &[wanted]).unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(applied.log.contains("cut off"), "{}", applied.log);
    assert!(nginx.workers().is_disjoint(&workers));
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
}

/// A script killed mid-change (TERM, as the host does on a timeout) puts
/// the previous files back.
#[test]
fn a_script_stopped_mid_change_restores() {
    let nginx = Nginx::start();
    let config = nginx.config(10_000);
    let live = config.upstream_file("default_upstream");
    let before = std::fs::read_to_string(&live).unwrap();
    std::fs::write(
        script::candidate(&live, "t9"),
        upstream::render(&upstream("default_upstream", 5, &[])).unwrap(),
    )
    .unwrap();
    // nginx -t replaced by a binary that hangs, so the script is stopped
    // while the new file is in place.
    let hang = nginx.path("hang");
    std::fs::write(&hang, "#!/bin/sh\nsleep 30\n").unwrap();
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = Config {
        nginx: hang.display().to_string(),
        ..config
    };
    let stages = [script::Stage {
        live: live.clone(),
        revision: Some(5),
    }];
    let mut child = Command::new("sh")
        .args(["-c", balancer_kit::script::EXEC])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script::apply_script(&config, "t9", &stages, 60_000).as_bytes())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&live).unwrap() == before {
        assert!(Instant::now() < deadline, "the new file never went live");
        thread::sleep(Duration::from_millis(10));
    }
    // As the host does: TERM to the whole process group.
    Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    // The outer sh dies of the TERM; the script's trap restores.
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("restored the previous files"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&live).unwrap(), before);
    assert!(nginx.leftovers().is_empty(), "{:?}", nginx.leftovers());
}

/// A directory where a file should go is refused before anything is
/// uploaded; missing directories are made.
#[test]
fn published_files_make_their_directories() {
    let nginx = Nginx::start();
    let node = Local::new(Shell::Busybox);
    std::fs::create_dir_all(nginx.path("snippets/dir.conf")).unwrap();
    let failure = publish(&nginx, &node, 10_000, &[file("snippets/dir.conf", "")]).unwrap_err();
    assert_eq!(failure.kind, Kind::InvalidInput);
    assert!(
        failure.message.contains("is not a file"),
        "{}",
        failure.message
    );
    let applied = publish(
        &nginx,
        &node,
        10_000,
        &[file("snippets/deep/x.conf", "# included by nobody\n")],
    )
    .unwrap();
    assert!(applied.changed, "{}", applied.log);
    assert!(nginx.path("snippets/deep/x.conf").is_file());
    assert!(
        applied.log.contains(&format!(
            "warning: nginx does not load {}/snippets/deep/x.conf",
            nginx.prefix()
        )),
        "{}",
        applied.log
    );
}
