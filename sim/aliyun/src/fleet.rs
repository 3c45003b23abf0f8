//! Fleet mode: a real OpenSSH `sshd` for each running instance, listening
//! on the instance's own loopback addresses (127.0.0.0/8 needs no setup on
//! Linux), trusting its key pair for `root` — so drivers reach simulated
//! machines exactly as they would reach real ones.
//!
//! Each `sshd` is a child of this process, killed by its exact pid (with the
//! connections it forked), never by name: other `sshd`s on the host are
//! none of our business.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Mutex,
    time::Duration,
};

use tokio::{
    net::TcpStream,
    process::{Child, Command},
    time::{Instant, sleep, timeout},
};

use crate::{Error, cloud::lock};

const SSHD: &str = "/usr/sbin/sshd";
/// sshd refuses to start without its privilege-separation directory.
const PRIVSEP_DIR: &str = "/run/sshd";
/// How long an `sshd` may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What an instance's `sshd` needs.
#[derive(Clone, Debug)]
pub(crate) struct SshdPlan {
    pub(crate) instance: String,
    pub(crate) addresses: Vec<Ipv4Addr>,
    /// The key pair's public key; `None` (a password-only instance) gives an
    /// `sshd` nobody can log in to.
    pub(crate) authorized_key: Option<String>,
}

/// The running `sshd`s, by instance id.
#[derive(Debug)]
pub(crate) struct Fleet {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Set when the simulator shuts down: no `sshd` may start after that.
    closed: bool,
    sshds: HashMap<String, Child>,
}

impl Fleet {
    pub(crate) fn new(dir: &Path) -> Result<Self, Error> {
        if !Path::new(SSHD).exists() {
            return Err(Error::io(
                format!("fleet mode needs OpenSSH's {SSHD}"),
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        // Fail now, with the likely reason, rather than at the first boot.
        let probe = Ipv4Addr::new(127, 21, 0, 254);
        if let Err(e) = port_22_bindable(probe) {
            return Err(Error::io(
                format!(
                    "fleet mode cannot listen on port 22 of 127.21.x.y (run as root, and no \
                     sshd may listen on 0.0.0.0:22); trying {probe}:22"
                ),
                e,
            ));
        }
        std::fs::create_dir_all(PRIVSEP_DIR)
            .map_err(|e| Error::io(format!("creating {PRIVSEP_DIR}"), e))?;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // sshd_config wants absolute paths.
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::io(format!("resolving {}", dir.display()), e))?;
        Ok(Self {
            dir,
            state: Mutex::new(State::default()),
        })
    }

    /// Starts the instance's `sshd` and waits until every address accepts
    /// TCP on port 22. Its host key is made once per instance and kept, so
    /// a stopped and restarted instance keeps its identity.
    pub(crate) async fn start(&self, plan: &SshdPlan) -> Result<(), Error> {
        let fail = |detail: String| Error::Sshd {
            instance: plan.instance.clone(),
            detail,
        };
        let dir = self.dir.join(&plan.instance);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(&plan.instance)
                .arg("-f")
                .arg(&host_key)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| Error::io("running ssh-keygen", e))?;
            if !out.status.success() {
                return Err(fail(format!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        let authorized_keys = dir.join("authorized_keys");
        let keys = plan
            .authorized_key
            .as_deref()
            .map(|k| format!("{}\n", k.trim()))
            .unwrap_or_default();
        write(&authorized_keys, &keys)?;
        let config = dir.join("sshd_config");
        write(&config, &sshd_config(plan, &host_key, &authorized_keys))?;
        let log_path = dir.join("sshd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;

        {
            let mut state = lock(&self.state);
            if state.closed {
                return Err(fail("the simulator is shutting down".to_owned()));
            }
            if let Some(mut old) = state.sshds.remove(&plan.instance) {
                kill_tree(&mut old);
                reap(old);
            }
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| Error::io(format!("starting {SSHD}"), e))?;
            state.sshds.insert(plan.instance.clone(), child);
        }

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.accepting(&plan.addresses).await {
                return Ok(());
            }
            let exited = {
                let mut state = lock(&self.state);
                match state.sshds.get_mut(&plan.instance) {
                    None => Some("stopped while starting".to_owned()),
                    Some(child) => match child.try_wait() {
                        Ok(Some(status)) => Some(format!("exited ({status})")),
                        Ok(None) => None,
                        Err(e) => Some(format!("cannot be waited for: {e}")),
                    },
                }
            };
            if let Some(why) = exited {
                return Err(fail(format!("{why}; log: {}", log_tail(&log_path))));
            }
            if Instant::now() > deadline {
                self.stop(&plan.instance);
                return Err(fail(format!(
                    "not listening after {START_TIMEOUT:?}; log: {}",
                    log_tail(&log_path)
                )));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    async fn accepting(&self, addresses: &[Ipv4Addr]) -> bool {
        for ip in addresses {
            let connect = timeout(Duration::from_millis(500), TcpStream::connect((*ip, 22)));
            if !matches!(connect.await, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    /// Kills the instance's `sshd` and every connection it forked, as a
    /// machine going down would.
    pub(crate) fn stop(&self, instance: &str) {
        let child = lock(&self.state).sshds.remove(instance);
        if let Some(mut child) = child {
            kill_tree(&mut child);
            reap(child);
        }
    }

    /// Kills every `sshd` and refuses new ones; answers the killed children
    /// so a caller that can wait for them does.
    pub(crate) fn close(&self) -> Vec<Child> {
        let mut state = lock(&self.state);
        state.closed = true;
        let mut children: Vec<Child> = state.sshds.drain().map(|(_, child)| child).collect();
        for child in &mut children {
            kill_tree(child);
        }
        children
    }
}

/// Whether an `sshd` could listen on `ip:22`: binds (without listening)
/// with `SO_REUSEADDR`, as sshd does, so only a listener there — or on the
/// wildcard address — is in the way, not another probe or old connections.
pub(crate) fn port_22_bindable(ip: Ipv4Addr) -> std::io::Result<()> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind((ip, 22).into())
}

/// Small files, written synchronously: tokio's `fs` would be one more
/// feature for the whole workspace to build.
fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

fn sshd_config(plan: &SshdPlan, host_key: &Path, authorized_keys: &Path) -> String {
    let mut config = format!("# Written by aliyun-sim for instance {}.\n", plan.instance);
    for ip in &plan.addresses {
        config.push_str(&format!("ListenAddress {ip}:22\n"));
    }
    config.push_str(&format!(
        "HostKey \"{}\"\n\
         AuthorizedKeysFile \"{}\"\n\
         # Not /run/sshd.pid: that belongs to the host's own sshd.\n\
         PidFile none\n\
         AllowUsers root\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n\
         # The files live in a test's temporary directory, not root-only paths.\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         # Debian's bash sources ~/.bashrc for commands over SSH unless it is\n\
         # nested; a developer's .bashrc can cost 0.1 s a session.\n\
         SetEnv SHLVL=1\n\
         # Drivers open many connections at once to a fresh machine.\n\
         MaxStartups 100\n\
         Subsystem sftp internal-sftp\n",
        host_key.display(),
        authorized_keys.display(),
    ));
    config
}

/// SIGKILL to `child` and to every process it forked (connections, which
/// run in their own sessions and would otherwise outlive it). The tree is
/// read from /proc before the kill, while the parentage still holds.
fn kill_tree(child: &mut Child) {
    let forked = child.id().map(descendants).unwrap_or_default();
    if let Err(e) = child.start_kill() {
        tracing::debug!("sshd already gone: {e}");
    }
    if forked.is_empty() {
        return;
    }
    let kill = move || {
        let status = std::process::Command::new("kill")
            .arg("-KILL")
            .args(forked.iter().map(u32::to_string))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = status {
            tracing::warn!("killing sshd connections {forked:?}: {e}");
        }
    };
    // Callers may hold the world lock: run `kill` off the async threads
    // when there are any.
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(kill)),
        Err(_) => kill(),
    }
}

/// The pids of every descendant of `pid`, from /proc's `children` lists.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace().filter_map(|p| p.parse().ok()) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Waits for a killed child in the background so it leaves no zombie.
fn reap(mut child: Child) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if let Err(e) = child.wait().await {
                tracing::debug!("waiting for a killed sshd: {e}");
            }
        });
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
