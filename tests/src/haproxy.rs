//! HAProxy balancer nodes for tests: a [`Fleet`] in 127.28.x.y, and beside
//! each host's `sshd` a real HAProxy (Debian's 2.6, master-worker, in the
//! foreground) listening on `<ip>:80`, with its configuration file and an
//! admin-level Runtime API socket in a directory of its own
//! (`<fleet dir>/haproxy-<ip>/`). Its frontend sends `/` to the backend
//! `default_upstream` (no servers until DCP adds them; every answer names
//! the server in `X-Upstream`, as the nginx hosts do) and answers
//! `/haproxy-health` itself. DCP reaches a node over SSH with
//! `fleet.private_key` and the plugin settings of
//! [`HaproxyHosts::settings`]. Dropping the value stops exactly the
//! HAProxies it started, then the fleet.

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

/// The HAProxy binary (Debian's `haproxy`; `scripts/setup test` installs it).
const HAPROXY: &str = "/usr/sbin/haproxy";

/// HAProxy balancer nodes, each beside an `sshd` of [`HaproxyHosts::fleet`].
#[derive(Debug)]
pub struct HaproxyHosts {
    /// The hosts' `sshd`s; `fleet.private_key` logs in to each.
    pub fleet: Fleet,
    /// Each host's running master.
    masters: Vec<Child>,
}

impl HaproxyHosts {
    /// Starts `n` hosts (`sshd` and HAProxy each) and waits until every
    /// HAProxy answers `/haproxy-health`. Needs root (ports 22 and 80).
    #[must_use]
    pub fn start(n: u8) -> Self {
        assert!(
            std::path::Path::new(HAPROXY).exists(),
            "{HAPROXY} is missing: install Debian's haproxy (scripts/setup test does)"
        );
        let fleet = Fleet::start_in(28, n);
        let mut hosts = Self {
            masters: Vec::new(),
            fleet,
        };
        for i in 0..hosts.fleet.hosts.len() {
            let dir = hosts.dir(i);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(hosts.conf_path(i), hosts.conf(i)).unwrap();
            let master = hosts.spawn(i);
            hosts.masters.push(master);
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

    /// Whether there are none (never: [`HaproxyHosts::start`] makes at least one).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.masters.is_empty()
    }

    /// Host `i`'s address (HAProxy on port 80, sshd on 22).
    #[must_use]
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        self.fleet.hosts[i].ip()
    }

    /// `http://<ip>/`.
    #[must_use]
    pub fn url(&self, i: usize) -> String {
        format!("http://{}/", self.addr(i))
    }

    /// Host `i`'s directory: its configuration, socket and logs.
    #[must_use]
    pub fn dir(&self, i: usize) -> PathBuf {
        self.fleet
            .dir
            .path()
            .join(format!("haproxy-{}", self.addr(i)))
    }

    /// Host `i`'s configuration file.
    #[must_use]
    pub fn conf_path(&self, i: usize) -> PathBuf {
        self.dir(i).join("haproxy.cfg")
    }

    /// Host `i`'s configuration file as it is now.
    #[must_use]
    pub fn read_conf(&self, i: usize) -> String {
        std::fs::read_to_string(self.conf_path(i)).unwrap_or_default()
    }

    /// The haproxy plugin's settings for node `i`: its socket and file.
    #[must_use]
    pub fn settings(&self, i: usize) -> Value {
        let dir = self.dir(i).display().to_string();
        json!({ "socket": format!("{dir}/admin.sock"), "config_file": format!("{dir}/haproxy.cfg") })
    }

    /// The process id of host `i`'s master: a reload or restart changes
    /// its workers, never the master.
    #[must_use]
    pub fn master_pid(&self, i: usize) -> u32 {
        self.masters[i].id()
    }

    /// The process ids of host `i`'s workers (the master's children): a
    /// reload replaces them.
    #[must_use]
    pub fn worker_pids(&self, i: usize) -> Vec<u32> {
        let pid = self.master_pid(i);
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Creates a unit `name` with the haproxy plugin in the group `group`
    /// (whose upstream `default_upstream` the hosts' configuration has a
    /// backend for), adopts each host as a machine and adds it as a node
    /// with its own settings; answers the unit's id and the node ids, in
    /// host order.
    ///
    /// # Panics
    /// When DCP refuses a step.
    pub async fn join_group(&self, api: &Api, group: i64, name: &str) -> (i64, Vec<i64>) {
        let (status, unit) = api
            .post(
                "/api/v1/lb-units",
                &json!({"group_id": group, "name": name, "plugin": "haproxy", "config": {}}),
            )
            .await;
        assert_eq!(status, 201, "{unit}");
        let unit = unit["id"].as_i64().unwrap_or_default();
        let mut nodes = Vec::new();
        for i in 0..self.len() {
            let address = self.addr(i).to_string();
            let (status, machine) = api
                .post(
                    "/api/v1/machines/adopt",
                    &json!({"name": format!("haproxy-{i}"), "address": address,
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

    /// Host `i`'s configuration: an admin socket, a frontend on the host's
    /// own address and the backend DCP fills.
    fn conf(&self, i: usize) -> String {
        let d = self.dir(i).display().to_string();
        let ip = self.addr(i);
        format!(
            "global\n    \
                 stats socket {d}/admin.sock mode 600 level admin expose-fd listeners\n    \
                 pidfile {d}/haproxy.pid\n\
             defaults\n    \
                 mode http\n    \
                 timeout connect 2s\n    \
                 timeout client 30s\n    \
                 timeout server 30s\n    \
                 retries 3\n    \
                 option redispatch\n\
             frontend web\n    \
                 bind {ip}:80\n    \
                 http-request return status 200 content-type text/plain string ok if {{ path /haproxy-health }}\n    \
                 http-response set-header X-Upstream %si:%sp\n    \
                 default_backend default_upstream\n\
             backend default_upstream\n    \
                 balance roundrobin\n"
        )
    }

    /// Spawns host `i`'s master in the foreground, so it is our child.
    fn spawn(&self, i: usize) -> Child {
        let stderr = File::create(self.dir(i).join("stderr.log")).unwrap();
        Command::new(HAPROXY)
            .args(["-W", "-db", "-f"])
            .arg(self.conf_path(i))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning haproxy")
    }

    /// Host `i`'s stderr.
    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir(i).join("stderr.log")).unwrap_or_default()
    }

    /// `GET path` on host `i`: the status (0 when nothing answers).
    fn status(&self, i: usize, path: &str) -> u16 {
        let addr = SocketAddr::from((self.addr(i), 80));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return 0;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        if write!(stream, "GET {path} HTTP/1.0\r\n\r\n").is_err() {
            return 0;
        }
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until host `i` answers `/haproxy-health` and its socket is up.
    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.status(i, "/haproxy-health") == 200 && self.dir(i).join("admin.sock").exists() {
                return;
            }
            if let Ok(Some(status)) = self.masters[i].try_wait() {
                panic!(
                    "haproxy on {} exited with {status}:\n{}",
                    self.addr(i),
                    self.log(i)
                );
            }
            assert!(
                Instant::now() < deadline,
                "haproxy on {} did not answer /haproxy-health:\n{}",
                self.addr(i),
                self.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for HaproxyHosts {
    fn drop(&mut self) {
        for master in &mut self.masters {
            // The master stops its workers on TERM; a killed one would not.
            let _ = Command::new("kill")
                .args(["-TERM", &master.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(master.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}
