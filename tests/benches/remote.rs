//! Benchmark P1 (`scripts/bench remote`): `echo hi` on 48 loopback `sshd`
//! hosts, wall time from the client's side, side by side in one run:
//! DCP with fresh and with warm connections, Ansible (ad-hoc `-m shell`,
//! forks 48, pipelining on, no facts) with fresh and with warm connections,
//! and 48 parallel OpenSSH clients with fresh and with shared (warm)
//! connections. The fresh peers run twice: with OpenSSH's default key
//! exchange (`sntrup761x25519-sha512` between Debian 12's client and server)
//! and with `curve25519-sha256`, the one DCP's russh client and these
//! servers agree on, so the table shows how much of the difference is the
//! key exchange.
//!
//! Rounds are interleaved (each round runs every contender once, in the same
//! order), so drift in the machine's load spreads over all contenders; each
//! contender has one untimed warm-up first (page cache, Python bytecode,
//! DCP's trust of the 48 host keys, the warm rows' connections).
//!
//! Environment:
//! - `DCP_BIN`: the `dcp` to run (the script passes the release build;
//!   without it, `dcp` beside the bench's own directory, i.e. `target/release/dcp`).
//! - `DCP_ANSIBLE`: the `ansible` binary (the script installs ansible-core
//!   into a venv); without it the Ansible rows are skipped.
//! - `DCP_BENCH_ROUNDS`: timed rounds per contender (default 5).
//! - `DCP_BENCH_ONLY`: comma-separated contenders to run, each a prefix of
//!   `openssh`, `openssh-curve25519`, `openssh-warm`, `ansible-fresh`,
//!   `ansible-fresh-curve25519`, `ansible-warm`, `dcp-fresh`, `dcp-warm`
//!   (e.g. `ansible,openssh`); all by default.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    reason = "a benchmark: any failure should stop it loudly"
)]

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use dcp_tests::{Api, ServerOptions, fleet::Fleet};
use serde_json::{Value, json};
use tokio::process::Command;

const HOSTS: u8 = 48;

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// The key exchange DCP's client (russh: ML-KEM hybrid, else curve25519)
/// and Debian 12's OpenSSH 9.2 server agree on.
const DCP_KEX: &str = "curve25519-sha256";

/// Who is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Contender {
    OpenSsh,
    OpenSshKex,
    OpenSshWarm,
    AnsibleFresh,
    AnsibleFreshKex,
    AnsibleWarm,
    DcpFresh,
    DcpWarm,
}

/// How Ansible connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Connections {
    /// New connections every run, OpenSSH's default key exchange.
    Fresh,
    /// New connections every run, [`DCP_KEX`].
    FreshKex,
    /// Ansible's default connection sharing (`ControlPersist=60s`).
    Warm,
}

impl Contender {
    const ALL: [Self; 8] = [
        Self::OpenSsh,
        Self::OpenSshKex,
        Self::OpenSshWarm,
        Self::AnsibleFresh,
        Self::AnsibleFreshKex,
        Self::AnsibleWarm,
        Self::DcpFresh,
        Self::DcpWarm,
    ];

    fn is_ansible(self) -> bool {
        matches!(
            self,
            Self::AnsibleFresh | Self::AnsibleFreshKex | Self::AnsibleWarm
        )
    }

    /// The name `DCP_BENCH_ONLY` selects by.
    fn key(self) -> &'static str {
        match self {
            Self::OpenSsh => "openssh",
            Self::OpenSshKex => "openssh-curve25519",
            Self::OpenSshWarm => "openssh-warm",
            Self::AnsibleFresh => "ansible-fresh",
            Self::AnsibleFreshKex => "ansible-fresh-curve25519",
            Self::AnsibleWarm => "ansible-warm",
            Self::DcpFresh => "dcp-fresh",
            Self::DcpWarm => "dcp-warm",
        }
    }

    /// The row's label in the table.
    fn label(self) -> &'static str {
        match self {
            Self::OpenSsh => "48 parallel OpenSSH clients (one `ssh` per host)",
            Self::OpenSshKex => "48 parallel OpenSSH clients, `KexAlgorithms=curve25519-sha256`",
            Self::OpenSshWarm => {
                "48 parallel OpenSSH clients, shared connections (`ControlPersist=60s`)"
            }
            Self::AnsibleFresh => "Ansible, fresh connections (`ControlMaster=no`)",
            Self::AnsibleFreshKex => {
                "Ansible, fresh connections, `KexAlgorithms=curve25519-sha256`"
            }
            Self::AnsibleWarm => "Ansible, warm connections (`ControlPersist=60s`)",
            Self::DcpFresh => "DCP, fresh connections (`ssh_idle_secs = 0`)",
            Self::DcpWarm => "DCP, warm connections (default, `ssh_idle_secs = 60`)",
        }
    }
}

/// What the contenders run against and with.
struct Setup {
    fleet: Fleet,
    /// Where the shared OpenSSH row's master sockets live.
    ssh_control_dir: PathBuf,
    ansible: Option<Ansible>,
    dcp_fresh: Option<Api>,
    dcp_warm: Option<Api>,
}

/// An Ansible installation and the fleet's inventory.
struct Ansible {
    bin: PathBuf,
    inventory: PathBuf,
    /// An empty `ansible.cfg`; every setting is given in the environment.
    config: PathBuf,
    /// Where the warm row's `ControlPersist` sockets live.
    control_dir: PathBuf,
}

async fn run() {
    let rounds: usize = std::env::var("DCP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(5);
    let only = std::env::var("DCP_BENCH_ONLY").unwrap_or_default();
    let selected = |c: Contender| {
        only.trim().is_empty()
            || only
                .split(',')
                .map(str::trim)
                .any(|o| !o.is_empty() && c.key().starts_with(o))
    };
    let ansible_bin = std::env::var_os("DCP_ANSIBLE").map(PathBuf::from);
    let mut contenders: Vec<Contender> = Contender::ALL
        .into_iter()
        .filter(|&c| selected(c))
        .collect();
    if ansible_bin.is_none() {
        contenders.retain(|c| !c.is_ansible());
        eprintln!("DCP_ANSIBLE is not set: no Ansible rows");
    }

    let fleet = Fleet::start(HOSTS);
    let ansible = ansible_bin.map(|bin| Ansible::new(bin, &fleet));
    let dcp_fresh = if contenders.contains(&Contender::DcpFresh) {
        Some(
            Api::start_with(&ServerOptions {
                env: vec![("DCP_SSH_IDLE_SECS".into(), "0".into())],
                ..ServerOptions::default()
            })
            .await,
        )
    } else {
        None
    };
    let dcp_warm = if contenders.contains(&Contender::DcpWarm) {
        Some(Api::start().await)
    } else {
        None
    };
    let ssh_control_dir = fleet.dir.path().join("ssh-cp");
    std::fs::create_dir_all(&ssh_control_dir).expect("creating the ControlPath directory");
    let setup = Setup {
        ssh_control_dir,
        fleet,
        ansible,
        dcp_fresh,
        dcp_warm,
    };

    print_versions(&setup).await;
    eprintln!("warming up: {}", keys(&contenders));
    for &c in &contenders {
        setup.round(c).await;
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); contenders.len()];
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}");
        for (i, &c) in contenders.iter().enumerate() {
            let began = Instant::now();
            setup.round(c).await;
            times[i].push(began.elapsed());
        }
    }
    close_masters(&setup.ssh_control_dir).await;
    if let Some(ansible) = &setup.ansible {
        close_masters(&ansible.control_dir).await;
    }
    print_table(&contenders, &times, rounds);
}

fn keys(contenders: &[Contender]) -> String {
    contenders
        .iter()
        .map(|c| c.key())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Setup {
    fn ansible(&self) -> &Ansible {
        self.ansible.as_ref().unwrap()
    }

    /// One run of `echo hi` on every host, checked.
    async fn round(&self, contender: Contender) {
        match contender {
            Contender::OpenSsh => openssh(&self.fleet, &[]).await,
            Contender::OpenSshWarm => {
                let path = format!("ControlPath={}/%C", self.ssh_control_dir.display());
                let options = ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s"];
                openssh(&self.fleet, &[&options[..], &["-o", &path]].concat()).await;
            }
            Contender::OpenSshKex => {
                openssh(&self.fleet, &["-o", &format!("KexAlgorithms={DCP_KEX}")]).await;
            }
            Contender::AnsibleFresh => self.ansible().run(Connections::Fresh).await,
            Contender::AnsibleFreshKex => self.ansible().run(Connections::FreshKex).await,
            Contender::AnsibleWarm => self.ansible().run(Connections::Warm).await,
            Contender::DcpFresh => dcp(self.dcp_fresh.as_ref().unwrap(), &self.fleet).await,
            Contender::DcpWarm => dcp(self.dcp_warm.as_ref().unwrap(), &self.fleet).await,
        }
    }
}

/// One `ssh` process per host, all at once.
async fn openssh(fleet: &Fleet, options: &[&str]) {
    let mut runs = tokio::task::JoinSet::new();
    for host in &fleet.hosts {
        let mut ssh = Command::new("ssh");
        ssh.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"])
            .args(options)
            .arg("-i")
            .arg(fleet.key_path())
            .arg(format!("root@{}", host.ip()))
            .arg("echo hi");
        runs.spawn(async move { ssh.output().await });
    }
    while let Some(out) = runs.join_next().await {
        let out = out.unwrap().expect("running ssh");
        assert_eq!(
            out.stdout,
            b"hi\n",
            "ssh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Ansible {
    fn new(bin: PathBuf, fleet: &Fleet) -> Self {
        let inventory = fleet.dir.path().join("inventory.ini");
        let mut text = String::from("[fleet]\n");
        for host in &fleet.hosts {
            writeln!(text, "{}", host.ip()).unwrap();
        }
        writeln!(
            text,
            "[fleet:vars]\nansible_user=root\nansible_port=22\n\
             ansible_ssh_private_key_file={}\nansible_python_interpreter=/usr/bin/python3",
            fleet.key_path().display()
        )
        .unwrap();
        std::fs::write(&inventory, text).expect("writing the inventory");
        // An empty configuration: no ansible.cfg from the working or home directory.
        let config = fleet.dir.path().join("ansible.cfg");
        std::fs::write(&config, "[defaults]\n").expect("writing ansible.cfg");
        let control_dir = fleet.dir.path().join("cp");
        std::fs::create_dir_all(&control_dir).expect("creating the ControlPath directory");
        Self {
            bin,
            inventory,
            config,
            control_dir,
        }
    }

    /// `ansible fleet -m shell -a 'echo hi' -f 48`.
    async fn run(&self, connections: Connections) {
        // Ansible's default ssh_args are `-C -o ControlMaster=auto
        // -o ControlPersist=60s`; every row keeps -C and, like the OpenSSH
        // rows, leaves the user's known_hosts alone.
        let ssh_args = match connections {
            Connections::Warm => {
                "-C -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile=/dev/null"
                    .to_owned()
            }
            Connections::Fresh => {
                "-C -o ControlMaster=no -o UserKnownHostsFile=/dev/null".to_owned()
            }
            Connections::FreshKex => format!(
                "-C -o ControlMaster=no -o UserKnownHostsFile=/dev/null -o KexAlgorithms={DCP_KEX}"
            ),
        };
        let out = Command::new(&self.bin)
            .args(["fleet", "-i"])
            .arg(&self.inventory)
            .args(["-m", "shell", "-a", "echo hi", "-f", "48", "-o"])
            .env("ANSIBLE_PIPELINING", "True")
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_GATHERING", "explicit")
            .env("ANSIBLE_SSH_ARGS", &ssh_args)
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", &self.control_dir)
            .env("ANSIBLE_CONFIG", &self.config)
            // As on an ordinary machine: Python may cache its bytecode.
            .env_remove("PYTHONDONTWRITEBYTECODE")
            .output()
            .await
            .expect("running ansible");
        let text = String::from_utf8_lossy(&out.stdout);
        let ok = text
            .lines()
            .filter(|l| l.contains("| CHANGED | rc=0 |") && l.trim_end().ends_with("hi"))
            .count();
        assert_eq!(
            ok,
            usize::from(HOSTS),
            "ansible: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if connections == Connections::Warm {
            let masters = std::fs::read_dir(&self.control_dir).map_or(0, Iterator::count);
            assert_eq!(
                masters,
                usize::from(HOSTS),
                "the warm row keeps a master connection per host"
            );
        }
    }
}

/// Ends the master connections whose sockets are in `dir` (they would idle
/// out after 60 s).
async fn close_masters(dir: &Path) {
    let Ok(sockets) = std::fs::read_dir(dir) else {
        return;
    };
    for socket in sockets.flatten() {
        let _ = Command::new("ssh")
            .arg("-o")
            .arg(format!("ControlPath={}", socket.path().display()))
            .args(["-O", "exit", "fleet-host"])
            .output()
            .await;
    }
}

/// One execution on every host, polled every 5 ms until DCP says it ended.
async fn dcp(api: &Api, fleet: &Fleet) {
    let hosts: Vec<Value> = fleet
        .hosts
        .iter()
        .map(|h| {
            json!({"address": h.ip().to_string(), "port": 22, "user": "root",
                   "private_key": fleet.private_key})
        })
        .collect();
    let (status, created) = api
        .post(
            "/api/v1/executions",
            &json!({"command": {"mode": "shell", "script": "echo hi"},
                    "hosts": hosts, "forks": HOSTS}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("/api/v1/executions/{}", created["id"]);
    loop {
        let execution = api.get(&path).await;
        match execution["state"].as_str().unwrap() {
            "pending" | "running" => tokio::time::sleep(Duration::from_millis(5)).await,
            "succeeded" => {
                let hosts = execution["hosts"].as_array().unwrap();
                assert_eq!(hosts.len(), usize::from(HOSTS), "{execution}");
                assert!(hosts.iter().all(|h| h["stdout"] == "hi\n"), "{execution}");
                return;
            }
            other => panic!("execution {other}: {execution}"),
        }
    }
}

/// `ssh -V` and the Ansible version, for the record.
async fn print_versions(setup: &Setup) {
    if let Ok(out) = Command::new("ssh").arg("-V").output().await {
        println!("OpenSSH: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    if let Some(ansible) = &setup.ansible
        && let Ok(out) = Command::new(&ansible.bin).arg("--version").output().await
    {
        let text = String::from_utf8_lossy(&out.stdout);
        println!("Ansible: {}", text.lines().next().unwrap_or("?"));
    }
    if setup.dcp_fresh.is_some() || setup.dcp_warm.is_some() {
        println!("DCP: {}", dcp_tests::dcp_bin().display());
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn print_table(contenders: &[Contender], times: &[Vec<Duration>], rounds: usize) {
    let median_of = |c: Contender| {
        contenders
            .iter()
            .position(|&x| x == c)
            .map(|i| median(&times[i]))
    };
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    let ratio = |d: Duration, of: Option<Duration>| {
        of.map_or("–".to_owned(), |of| {
            format!("{:.3}×", d.as_secs_f64() / of.as_secs_f64())
        })
    };
    println!("\n`echo hi` on {HOSTS} loopback hosts, median of {rounds} rounds");
    println!("(ratios of medians; warm rows against the warm peers, fresh against fresh)\n");
    println!(
        "| contender | median | min | max | × Ansible | × OpenSSH \
         | × Ansible, curve25519 | × OpenSSH, curve25519 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (&c, times) in contenders.iter().zip(times) {
        let median = median(times);
        // Like for like: warm rows against the warm peers, the rest against
        // the fresh ones (with both key exchanges).
        let warm = matches!(
            c,
            Contender::AnsibleWarm | Contender::OpenSshWarm | Contender::DcpWarm
        );
        let (ansible, openssh, ansible_kex, openssh_kex) = if warm {
            (
                median_of(Contender::AnsibleWarm),
                median_of(Contender::OpenSshWarm),
                None,
                None,
            )
        } else {
            (
                median_of(Contender::AnsibleFresh),
                median_of(Contender::OpenSsh),
                median_of(Contender::AnsibleFreshKex),
                median_of(Contender::OpenSshKex),
            )
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.label(),
            ms(median),
            ms(*times.iter().min().unwrap()),
            ms(*times.iter().max().unwrap()),
            ratio(median, ansible),
            ratio(median, openssh),
            ratio(median, ansible_kex),
            ratio(median, openssh_kex),
        );
    }
    let all: Vec<String> = contenders
        .iter()
        .zip(times)
        .map(|(c, t)| {
            let list: Vec<String> = t
                .iter()
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                .collect();
            format!("{}: {}", c.key(), list.join(" "))
        })
        .collect();
    println!("\nEvery round (ms), in order:\n{}", all.join("\n"));
}
