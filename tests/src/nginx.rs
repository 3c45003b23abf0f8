//! nginx balancer nodes for tests: a [`Fleet`] in 127.23.x.y, and beside
//! each host's `sshd` a real nginx master on `<ip>:80` with a prefix of its
//! own (`<fleet dir>/nginx-<ip>/`). Each serves `/` through the upstream
//! `default_upstream` (`dcp-upstreams/default_upstream.conf`, first the
//! empty placeholder the nginx plugin renders at revision 0, so DCP's first
//! push replaces it) and answers `/nginx-health` itself. DCP reaches a node
//! over SSH with `fleet.private_key` and the plugin settings of
//! [`NginxHosts::settings`]. Dropping the value stops exactly the masters
//! it started, then the fleet.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{Api, fleet::Fleet};

/// The nginx binary (Debian's `nginx`; `scripts/setup test` installs it).
const NGINX: &str = "/usr/sbin/nginx";

/// The upstream file every node starts with: what the nginx plugin renders
/// for `default_upstream` with no backends at revision 0 (the plugin's own
/// tests check it is byte for byte the same).
pub const DEFAULT_UPSTREAM: &str = include_str!("../fixtures/nginx/default_upstream.conf");

/// nginx balancer nodes, each beside an `sshd` of [`NginxHosts::fleet`].
#[derive(Debug)]
pub struct NginxHosts {
    /// The hosts' `sshd`s; `fleet.private_key` logs in to each.
    pub fleet: Fleet,
    /// Each host's running master; `None` while stopped.
    masters: Vec<Option<Child>>,
}

impl NginxHosts {
    /// Adopts each host as a machine of `api`'s DCP and adds it, with its
    /// own settings, to the unit made at install (`default`); answers the
    /// unit's id and the node ids, in host order.
    ///
    /// # Panics
    /// When DCP refuses a step.
    pub async fn join_default_unit(&self, api: &Api) -> (i64, Vec<i64>) {
        let units = api.get("/api/v1/lb-units").await;
        let unit = units["items"]
            .as_array()
            .and_then(|units| units.iter().find(|u| u["name"] == "default"))
            .and_then(|u| u["id"].as_i64())
            .unwrap_or_else(|| panic!("no default unit: {units}"));
        let mut nodes = Vec::new();
        for i in 0..self.len() {
            let address = self.addr(i).to_string();
            let (status, machine) = api
                .post(
                    "/api/v1/machines/adopt",
                    &json!({"name": format!("nginx-{i}"), "address": address,
                            "private_key": self.fleet.private_key}),
                )
                .await;
            assert_eq!(status, 201, "{machine}");
            let (status, node) = api
                .post(
                    &format!("/api/v1/lb-units/{unit}/nodes"),
                    &json!({"address": address, "settings": self.settings(i)}),
                )
                .await;
            assert_eq!(status, 201, "{node}");
            assert_eq!(node["in_sync"], true, "{node}");
            nodes.push(node["id"].as_i64().unwrap_or_default());
        }
        (unit, nodes)
    }

    /// Starts `n` hosts (`sshd` and nginx each) and waits until every nginx
    /// answers `/nginx-health`. Needs root (ports 22 and 80).
    #[must_use]
    pub fn start(n: u8) -> Self {
        assert!(
            std::path::Path::new(NGINX).exists(),
            "{NGINX} is missing: install Debian's nginx (scripts/setup test does)"
        );
        let fleet = Fleet::start_in(23, n);
        let mut hosts = Self {
            masters: (0..fleet.hosts.len()).map(|_| None).collect(),
            fleet,
        };
        for i in 0..hosts.masters.len() {
            hosts.write_prefix(i);
            hosts.masters[i] = Some(hosts.spawn(i));
        }
        for i in 0..hosts.masters.len() {
            hosts.wait_healthy(i);
        }
        hosts
    }

    /// How many hosts there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.masters.len()
    }

    /// Whether there are none (never: [`NginxHosts::start`] makes at least one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// Host `i`'s address (nginx on port 80, sshd on 22).
    #[must_use]
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.fleet.hosts[i].ip()
    }

    /// `http://<ip>/`.
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/", self.addr(i))
    }

    /// Host `i`'s nginx prefix directory, `<fleet dir>/nginx-<ip>`.
    #[must_use]
    pub fn prefix(&self, i: usize) -> PathBuf {
        self.fleet
            .dir
            .path()
            .join(format!("nginx-{}", self.addr(i)))
    }

    /// The nginx plugin's settings for node `i` (merged over the unit's):
    /// its prefix and pid file.
    #[must_use]
    pub fn settings(&self, i: usize) -> Value {
        let prefix = self.prefix(i).display().to_string();
        json!({ "prefix": prefix, "pid_file": format!("{prefix}/nginx.pid") })
    }

    /// Host `i`'s main configuration file.
    #[must_use]
    pub fn conf_path(&self, i: usize) -> PathBuf {
        self.prefix(i).join("nginx.conf")
    }

    /// Where host `i` keeps upstream `name` (the plugin's default
    /// `upstream_dir`).
    #[must_use]
    pub fn upstream_path(&self, i: usize, name: &str) -> PathBuf {
        self.prefix(i).join(format!("dcp-upstreams/{name}.conf"))
    }

    /// Host `i`'s file for upstream `name` ("" if it has none).
    #[must_use]
    pub fn read_upstream(&self, i: usize, name: &str) -> String {
        std::fs::read_to_string(self.upstream_path(i, name)).unwrap_or_default()
    }

    /// Host `i`'s nginx error log, and what the master wrote to stderr.
    #[must_use]
    pub fn error_log(&self, i: usize) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.prefix(i).join(name)).unwrap_or_default();
        format!("{}{}", read("error.log"), read("stderr.log"))
    }

    /// `GET path` on host `i`'s nginx: the status (0 when nothing answers)
    /// and the body. Plain HTTP/1.0 on a socket, no client to set up.
    #[must_use]
    pub fn get(&self, i: usize, path: &str) -> (u16, String) {
        let addr = SocketAddr::from((self.addr(i), 80));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        if write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n",
            self.addr(i)
        )
        .is_err()
        {
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
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// Takes node `i` down: its nginx master is stopped (its workers with
    /// it), so `<ip>:80` refuses connections, and its `sshd` too, so DCP
    /// sees the node as down. [`NginxHosts::restart`] brings it back.
    pub fn stop_nginx(&mut self, i: usize) {
        if let Some(mut master) = self.masters[i].take() {
            stop(&mut master);
        }
        self.fleet.stop_host(i);
    }

    /// Starts node `i` again (after [`NginxHosts::stop_nginx`]): `sshd`
    /// and nginx on the same address, with the same prefix and files
    /// (whatever DCP wrote before stays), and waits until nginx answers.
    pub fn restart(&mut self, i: usize) {
        if let Some(mut master) = self.masters[i].take() {
            stop(&mut master);
        }
        self.fleet.start_host(i);
        self.masters[i] = Some(self.spawn(i));
        self.wait_healthy(i);
    }

    /// An `nginx.conf` for host `i`: it listens on the host's own address,
    /// proxies to `default_upstream` (naming the backend that answered in
    /// `X-Upstream`) and answers `health` at `/nginx-health`, so a test
    /// can tell which configuration is live.
    #[must_use]
    pub fn main_conf(&self, i: usize, health: &str) -> String {
        let p = self.prefix(i).display().to_string();
        let ip = self.addr(i);
        // `user root`: the prefix is inside the fleet's private directory,
        // where workers running as nobody could not write proxy buffers.
        format!(
            r#"user root;
worker_processes 2;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    include dcp-upstreams/*.conf;
    server {{
        listen {ip}:80;
        location / {{
            proxy_pass http://default_upstream;
            proxy_next_upstream error timeout http_502;
            add_header X-Upstream $upstream_addr always;
        }}
        location = /nginx-health {{ return 200 "{health}\n"; }}
    }}
}}
"#
        )
    }

    /// Writes host `i`'s prefix: `nginx.conf`, the placeholder upstream.
    fn write_prefix(&self, i: usize) {
        let prefix = self.prefix(i);
        let p = prefix.display().to_string();
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b)),
            "{p}: the nginx plugin takes only paths of letters, digits and . _ / - \
             (set TMPDIR to such a directory)"
        );
        std::fs::create_dir_all(prefix.join("dcp-upstreams")).unwrap();
        std::fs::create_dir_all(prefix.join("tmp")).unwrap();
        let conf = self.main_conf(i, "ok");
        std::fs::write(prefix.join("nginx.conf"), conf).unwrap();
        std::fs::write(self.upstream_path(i, "default_upstream"), DEFAULT_UPSTREAM).unwrap();
    }

    /// Spawns host `i`'s master in the foreground, so it is our child.
    fn spawn(&self, i: usize) -> Child {
        let prefix = self.prefix(i);
        let stderr = File::create(prefix.join("stderr.log")).unwrap();
        Command::new(NGINX)
            .arg("-p")
            .arg(format!("{}/", prefix.display()))
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning nginx")
    }

    /// Waits until host `i`'s nginx answers `/nginx-health`.
    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _) = self.get(i, "/nginx-health");
            if status == 200 {
                return;
            }
            if let Some(master) = self.masters[i].as_mut()
                && let Ok(Some(status)) = master.try_wait()
            {
                panic!(
                    "nginx on {} exited with {status}:\n{}",
                    self.addr(i),
                    self.error_log(i)
                );
            }
            assert!(
                Instant::now() < deadline,
                "nginx on {} did not answer /nginx-health:\n{}",
                self.addr(i),
                self.error_log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Stops a master with TERM (a killed master would leave its workers
/// serving) and waits for it.
fn stop(master: &mut Child) {
    if matches!(master.try_wait(), Ok(Some(_))) {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &master.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(master.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = master.kill();
    let _ = master.wait();
}

impl Drop for NginxHosts {
    fn drop(&mut self) {
        for master in self.masters.iter_mut().flatten() {
            stop(master);
        }
    }
}
