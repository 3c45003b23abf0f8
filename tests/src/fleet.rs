//! A fleet of real OpenSSH servers for tests: each "host" is an `sshd` on
//! its own loopback address (127.20.x.y:22, or another 127.N network), with
//! its own host key, trusting one generated user key. Dropping the fleet
//! kills exactly the processes it started.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use tempfile::TempDir;

/// Fleets made by this process so far; keeps their address blocks apart.
static FLEETS: AtomicU32 = AtomicU32::new(0);

/// One running `sshd`.
#[derive(Debug)]
pub struct SshHost {
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl SshHost {
    /// The host's address, e.g. `127.20.3.1`.
    #[must_use]
    pub fn ip(&self) -> Ipv4Addr {
        match self.addr.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        }
    }
}

/// Real `sshd` hosts on loopback addresses.
#[derive(Debug)]
pub struct Fleet {
    /// The hosts, in order.
    pub hosts: Vec<SshHost>,
    /// The private key every host trusts (OpenSSH format).
    pub private_key: String,
    /// Where the key, host keys and configs live.
    pub dir: TempDir,
    /// The user made by [`Fleet::password_login`], removed on drop.
    password_user: Option<String>,
}

pub(crate) fn keygen(path: &Path, comment: &str) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdout(Stdio::null())
        .status()
        .expect("ssh-keygen (Debian openssh-client; scripts/setup test installs it)");
    assert!(status.success(), "ssh-keygen failed");
}

impl Fleet {
    /// Starts `n` hosts (at most 250) on 127.20.x.y and waits until each
    /// accepts connections. Needs root (port 22, and sshd's privilege
    /// separation).
    #[must_use]
    pub fn start(n: u8) -> Self {
        Self::start_in(20, n)
    }

    /// [`Fleet::start`] in the loopback network 127.`second_octet`.x.y, so
    /// fleets of different kinds (e.g. balancer nodes) keep apart.
    #[must_use]
    pub fn start_in(second_octet: u8, n: u8) -> Self {
        assert!((1..=250).contains(&n), "a fleet has 1 to 250 hosts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        // sshd refuses to start without its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").expect("creating /run/sshd (run as root)");
        let key = dir.path().join("id_ed25519");
        keygen(&key, "dcp-test-fleet");
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized).expect("authorized_keys");
        let block = 1 + (std::process::id() + FLEETS.fetch_add(1, Ordering::Relaxed) * 7) % 250;
        let hosts = (1..=n)
            .map(|i| {
                let ip = Ipv4Addr::new(127, second_octet, u8::try_from(block).unwrap_or(1), i);
                start_sshd(dir.path(), &authorized, SocketAddr::from((ip, 22)))
            })
            .collect::<Vec<_>>();
        let deadline = Instant::now() + Duration::from_secs(20);
        for host in &hosts {
            wait_listening(host.addr, deadline, "start");
        }
        Self {
            hosts,
            private_key: std::fs::read_to_string(&key).expect("reading the key"),
            dir,
            password_user: None,
        }
    }

    /// A user every host lets in with a password (the key is not needed):
    /// made on this machine for the fleet's lifetime. Returns the user name
    /// and the password.
    pub fn password_login(&mut self) -> (String, String) {
        let user = format!(
            "dcpfleet-{}-{}",
            std::process::id(),
            FLEETS.fetch_add(1, Ordering::Relaxed)
        );
        let password = format!("pw-{}", uuid::Uuid::now_v7().simple());
        // The user must reach its home inside the fleet's directory.
        std::fs::set_permissions(
            self.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("opening the fleet directory");
        let made = Command::new("useradd")
            // A home of its own (in the fleet's directory): adoption installs
            // a key in ~/.ssh/authorized_keys.
            .args(["--create-home", "--shell", "/bin/sh", "--home-dir"])
            .arg(self.dir.path().join(&user))
            .arg(&user)
            .status()
            .expect("useradd (run as root)");
        assert!(made.success(), "useradd {user} failed");
        self.password_user = Some(user.clone());
        let mut chpasswd = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd");
        std::io::Write::write_all(
            chpasswd.stdin.as_mut().expect("chpasswd's stdin"),
            format!("{user}:{password}\n").as_bytes(),
        )
        .expect("writing to chpasswd");
        assert!(
            chpasswd.wait().expect("chpasswd").success(),
            "chpasswd failed"
        );
        (user, password)
    }

    /// A new private key (OpenSSH format) that no host trusts.
    #[must_use]
    pub fn stranger_key(&self) -> String {
        let path = self.dir.path().join(format!(
            "stranger_{}",
            FLEETS.fetch_add(1, Ordering::Relaxed)
        ));
        keygen(&path, "stranger");
        std::fs::read_to_string(&path).expect("reading the key")
    }

    /// The address of a host in this fleet's block where nothing listens.
    #[must_use]
    pub fn vacant_address(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.hosts[0].ip().octets();
        Ipv4Addr::new(a, b, c, 251)
    }

    /// Ends every connection to host `i` (as a reboot, a firewall or an
    /// idle timeout would); the host keeps accepting new ones.
    pub fn drop_connections(&self, i: usize) {
        let _ = Command::new("pkill")
            .args(["-P", &self.hosts[i].child.id().to_string()])
            .status();
    }

    /// Gives host `i` a new host key and restarts its `sshd`: what a
    /// rebuilt (or impersonated) server looks like to a client.
    pub fn rekey(&mut self, i: usize) {
        let addr = self.hosts[i].addr;
        // A rebuilt server keeps no sessions.
        self.drop_connections(i);
        let _ = self.hosts[i].child.kill();
        let _ = self.hosts[i].child.wait();
        let host_key = self.dir.path().join(format!("host_{}", addr.ip()));
        let _ = std::fs::remove_file(&host_key);
        let _ = std::fs::remove_file(format!("{}.pub", host_key.display()));
        let authorized = self.dir.path().join("authorized_keys");
        self.hosts[i] = start_sshd(self.dir.path(), &authorized, addr);
        wait_listening(addr, Instant::now() + Duration::from_secs(20), "restart");
    }

    /// Stops host `i` as a powered-off machine looks: its sessions end and
    /// its `sshd` is gone, so connections are refused. [`Fleet::start_host`]
    /// brings it back.
    pub fn stop_host(&mut self, i: usize) {
        self.drop_connections(i);
        let _ = self.hosts[i].child.kill();
        let _ = self.hosts[i].child.wait();
    }

    /// Starts host `i`'s `sshd` again (after [`Fleet::stop_host`]) on the
    /// same address with the same host key, and waits until it accepts
    /// connections.
    pub fn start_host(&mut self, i: usize) {
        let addr = self.hosts[i].addr;
        let authorized = self.dir.path().join("authorized_keys");
        self.hosts[i] = start_sshd(self.dir.path(), &authorized, addr);
        wait_listening(addr, Instant::now() + Duration::from_secs(20), "restart");
    }

    /// The private key file every host trusts.
    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("id_ed25519")
    }

    /// Runs `command` on host `i` with the system's OpenSSH client (the
    /// reference to compare DCP's own channel against).
    #[must_use]
    pub fn ssh(&self, i: usize, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-i",
            ])
            .arg(self.key_path())
            .arg(format!("root@{}", self.hosts[i].ip()))
            .arg(command)
            .output()
            .expect("ssh (Debian openssh-client)")
    }
}

/// Waits until something accepts connections on `addr`.
fn wait_listening(addr: SocketAddr, deadline: Instant, what: &str) {
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "sshd on {addr} did not {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_sshd(dir: &Path, authorized: &Path, addr: SocketAddr) -> SshHost {
    let name = addr.ip().to_string();
    let host_key = dir.join(format!("host_{name}"));
    // A restarted host keeps its key ([`Fleet::rekey`] removes it first).
    if !host_key.exists() {
        keygen(&host_key, &name);
    }
    let config = dir.join(format!("sshd_{name}.conf"));
    // `SetEnv SHLVL=1`: Debian's bash, started by sshd for a command, sources
    // ~/.bashrc unless it is nested. On a developer machine root's .bashrc
    // may be slow (pyenv init costs ~0.1 s a session), which a test host, and
    // the benchmark's hosts (docs/benchmarks.md, P1), should not pay.
    std::fs::write(
        &config,
        format!(
            "ListenAddress {addr}\nHostKey {}\nAuthorizedKeysFile {} .ssh/authorized_keys\nPidFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
             MaxStartups 200\nMaxSessions 100\nSubsystem sftp internal-sftp\n\
             SetEnv SHLVL=1\n\
             Match User dcpfleet-*\n  PasswordAuthentication yes\n",
            host_key.display(),
            authorized.display(),
            dir.join(format!("sshd_{name}.pid")).display(),
        ),
    )
    .expect("writing sshd_config");
    let child = Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd (Debian openssh-server; scripts/setup test installs it)");
    SshHost { addr, child }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            let _ = host.child.kill();
            let _ = host.child.wait();
        }
        if let Some(user) = &self.password_user {
            // Its sessions (a client's pooled connection) outlive the
            // listener; end them, then remove the user even if one lingers.
            let _ = Command::new("pkill").args(["-KILL", "-u", user]).status();
            let _ = Command::new("userdel").args(["--force", user]).status();
        }
    }
}
