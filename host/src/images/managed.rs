//! DCP's own registry: Debian's `docker-registry` (distribution 2.8) run
//! as a child process on `registry_addr`, its configuration, storage and
//! account kept in `<data_dir>/registry`.
//!
//! DCP writes the configuration and the htpasswd file (bcrypt, the only
//! scheme distribution reads) before every start, restarts the registry
//! when it exits, and stops it with DCP. The child runs under a small
//! `sh` watchdog that reads DCP's end of a pipe: when DCP goes away in any
//! way, even killed, the pipe closes and the watchdog stops the registry,
//! so no registry outlives its DCP holding the address.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use rand::{Rng as _, distributions::Alphanumeric};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::Command,
    sync::{Notify, watch},
};
use tokio_util::sync::CancellationToken;

use crate::data_dir;

/// The account DCP uses on its own registry.
pub const USERNAME: &str = "dcp";
/// bcrypt's cost for the htpasswd entry. The registry checks it on every
/// request of a push or pull; the password is 32 random characters, so
/// the cost adds no strength worth that time.
const BCRYPT_COST: u32 = 5;
/// How long a start may take before the registry counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest pause between restarts of a registry that keeps exiting.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Lines of the registry's stderr kept to explain an exit.
const TAIL_LINES: usize = 5;
/// How long a garbage collection may run.
const GC_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How the garbage collection names what it deletes.
const ELIGIBLE: &str = "blob eligible for deletion: ";

/// Starts the registry, then waits for the pipe on its stdin to close
/// (DCP stopped it or went away) and stops it; exits with its status
/// when it ends by itself. `$0` is the program, `$1` the configuration.
/// (A background job's stdin is /dev/null unless redirected: the pipe is
/// kept on fd 3 for it.)
const WATCHDOG: &str = r#"exec 3<&0
"$0" serve "$1" 3<&- &
child=$!
( read -r _ <&3; kill "$child" ) 2>/dev/null &
exec 3<&-
wait "$child"
"#;

/// Whether the registry serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Starting (or restarting after an exit).
    Starting,
    /// It answers.
    Serving,
    /// It failed to start or exited; why, in its words.
    Down(String),
}

/// How a run of the registry ended.
enum Ended {
    /// DCP is stopping.
    Stopped,
    /// DCP asked for a restart (to switch read-only mode).
    Restart,
    /// It exited or failed to start; why.
    Failed(String),
}

/// The registry process DCP runs.
#[derive(Debug)]
pub struct Managed {
    addr: SocketAddr,
    dir: PathBuf,
    command: PathBuf,
    password: String,
    health: watch::Sender<Health>,
    /// Whether it runs read-only (pulls only): during garbage collection.
    read_only: AtomicBool,
    /// Wakes the supervisor to restart the registry (in the new mode).
    restart: Notify,
    /// One garbage collection at a time.
    maintenance: tokio::sync::Mutex<()>,
    /// DCP's own htpasswd entry.
    entry: String,
    /// The pull passes handed out now: user → htpasswd entry.
    passes: Mutex<BTreeMap<String, String>>,
}

impl Managed {
    /// Prepares `<data_dir>/registry` (its account, secret and
    /// configuration) for a registry on `addr`.
    ///
    /// # Errors
    /// When the directory or its files cannot be written.
    pub fn prepare(data_dir: &Path, addr: SocketAddr, command: PathBuf) -> std::io::Result<Self> {
        let dir = std::path::absolute(data_dir.join("registry"))?;
        data_dir::create_private_dir(&dir)?;
        let password = keep(&dir.join("password"), 32)?;
        let secret = keep(&dir.join("http-secret"), 32)?;
        let hash = bcrypt::hash(&password, BCRYPT_COST)
            .map_err(|e| std::io::Error::other(format!("hashing the registry password: {e}")))?;
        let entry = format!("{USERNAME}:{hash}\n");
        // Passes handed out by an earlier run end here.
        replace_private(&dir.join("htpasswd"), entry.as_bytes())?;
        // JSON strings are YAML strings: no path or secret can break out.
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let storage = dir.join("storage");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: {secret}\n  headers:\n    X-Content-Type-Options: [nosniff]\n\
             auth:\n  htpasswd:\n    realm: dcp-registry\n    path: {htpasswd}\n",
            storage = quote(&storage.to_string_lossy()),
            addr = quote(&addr.to_string()),
            secret = quote(&secret),
            htpasswd = quote(&dir.join("htpasswd").to_string_lossy()),
        );
        data_dir::write_private(&dir.join("config.yml"), config.as_bytes())?;
        Ok(Self {
            addr,
            dir,
            command,
            password,
            health: watch::Sender::new(Health::Starting),
            read_only: AtomicBool::new(false),
            restart: Notify::new(),
            maintenance: tokio::sync::Mutex::new(()),
            entry,
            passes: Mutex::new(BTreeMap::new()),
        })
    }

    /// A user and password good until [`Managed::revoke`]: what a node
    /// pulls one image with. The registry reads its htpasswd file again
    /// when it changes, so a pass works at once and ends at once.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn grant(&self) -> std::io::Result<(String, String)> {
        let user = format!("pull-{}", uuid::Uuid::now_v7().simple());
        let password: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        let hash = bcrypt::hash(&password, BCRYPT_COST)
            .map_err(|e| std::io::Error::other(format!("hashing a pull pass: {e}")))?;
        let mut passes = self
            .passes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        passes.insert(user.clone(), format!("{user}:{hash}\n"));
        self.write_htpasswd(&passes)?;
        Ok((user, password))
    }

    /// Ends a pass [`Managed::grant`] handed out.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn revoke(&self, user: &str) -> std::io::Result<()> {
        let mut passes = self
            .passes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if passes.remove(user).is_some() {
            self.write_htpasswd(&passes)?;
        }
        Ok(())
    }

    fn write_htpasswd(&self, passes: &BTreeMap<String, String>) -> std::io::Result<()> {
        let mut text = self.entry.clone();
        for entry in passes.values() {
            text.push_str(entry);
        }
        replace_private(&self.dir.join("htpasswd"), text.as_bytes())
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The password of [`USERNAME`].
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Where its blobs and manifests are.
    #[must_use]
    pub fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    /// Whether it serves now.
    #[must_use]
    pub fn health(&self) -> Health {
        self.health.borrow().clone()
    }

    /// Waits up to `within` for the registry to serve; answers its health
    /// then. Calls made while it starts wait rather than fail.
    pub async fn ready(&self, within: Duration) -> Health {
        let mut health = self.health.subscribe();
        let _ =
            tokio::time::timeout(within, health.wait_for(|h| !matches!(h, Health::Starting))).await;
        self.health()
    }

    /// Runs the registry until `stop`: starts it, restarts it after an
    /// exit (waiting longer after each quick failure), stops it at the end.
    pub fn supervise(self: Arc<Self>, stop: CancellationToken) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_secs(1);
            loop {
                let ran_for = tokio::time::Instant::now();
                let why = match self.run_once(&stop).await {
                    Ended::Stopped => break,
                    Ended::Restart => continue,
                    Ended::Failed(why) => why,
                };
                if stop.is_cancelled() {
                    break;
                }
                tracing::warn!(addr = %self.addr, reason = %why, "the image registry stopped; restarting it");
                self.health.send_replace(Health::Down(why));
                if ran_for.elapsed() > BACKOFF_MAX {
                    backoff = Duration::from_secs(1);
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                self.health.send_replace(Health::Starting);
            }
        });
    }

    /// One run of the registry; answers why it ended.
    async fn run_once(&self, stop: &CancellationToken) -> Ended {
        let mut command = Command::new("sh");
        if self.read_only.load(Ordering::SeqCst) {
            // (The leaf form, …_READONLY_ENABLED=true, makes 2.8 panic.)
            command.env(
                "REGISTRY_STORAGE_MAINTENANCE_READONLY",
                r#"{"enabled": true}"#,
            );
        }
        let spawned = command
            .arg("-c")
            .arg(WATCHDOG)
            .arg(&self.command)
            .arg(self.dir.join("config.yml"))
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Ended::Failed(format!(
                    "cannot start sh for {}: {e}",
                    self.command.display()
                ));
            }
        };
        // Held until the registry should stop: closing it stops the registry.
        let stdin = child.stdin.take();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let mut reader = None;
        if let Some(stderr) = child.stderr.take() {
            let tail = Arc::clone(&tail);
            reader = Some(tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line: String = line.chars().take(500).collect();
                    tracing::info!(target: "dcp::registry", "{line}");
                    let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }));
        }
        let said = |tail: &Mutex<VecDeque<String>>| {
            let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
            tail.iter().cloned().collect::<Vec<_>>().join("; ")
        };
        let probe = self.probe();
        tokio::pin!(probe);
        let mut serving = false;
        let status = loop {
            tokio::select! {
                () = stop.cancelled() => {
                    drop(stdin);
                    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    return Ended::Stopped;
                }
                () = self.restart.notified() => {
                    drop(stdin);
                    if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                    return Ended::Restart;
                }
                status = child.wait() => break status,
                ready = &mut probe, if !serving => {
                    serving = true;
                    match ready {
                        Ok(()) => {
                            tracing::info!(addr = %self.addr, "image registry serving");
                            self.health.send_replace(Health::Serving);
                        }
                        Err(why) => {
                            drop(stdin);
                            let _ = child.kill().await;
                            return Ended::Failed(format!("{why}: {}", said(&tail)));
                        }
                    }
                }
            }
        };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        drop(stdin);
        // Its last words may still be in the pipe.
        if let Some(reader) = reader {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        let said = said(&tail);
        if said.contains("not found") && !self.command.is_absolute() {
            return Ended::Failed(format!(
                "{} is not installed (Debian: apt-get install docker-registry); {said}",
                self.command.display()
            ));
        }
        Ended::Failed(format!("it exited ({status}): {said}"))
    }

    /// Restarts the registry read-only (or back to read-write) and waits
    /// until it serves again.
    async fn switch(&self, read_only: bool) -> Result<(), String> {
        self.read_only.store(read_only, Ordering::SeqCst);
        self.health.send_replace(Health::Starting);
        self.restart.notify_one();
        match self.ready(READY_TIMEOUT * 2).await {
            Health::Serving => Ok(()),
            Health::Starting => Err("the registry did not come back within 30 s".into()),
            Health::Down(why) => Err(why),
        }
    }

    /// Collects the registry's garbage: the blobs no manifest refers to
    /// any more (deleted tags' layers). The registry serves read-only
    /// meanwhile (pulls work, pushes are refused), as distribution requires.
    ///
    /// Answers how many blobs it deleted.
    ///
    /// # Errors
    /// When the registry cannot be switched or the collection fails; the
    /// registry is back to read-write either way.
    pub async fn collect_garbage(&self) -> Result<u64, String> {
        let _one = self.maintenance.lock().await;
        self.switch(true).await?;
        let collected = self.collect().await;
        let back = self.switch(false).await;
        let freed = collected?;
        back?;
        Ok(freed)
    }

    async fn collect(&self) -> Result<u64, String> {
        let planned = self.garbage_collect(true).await?;
        let blobs = planned
            .lines()
            .filter(|line| line.starts_with(ELIGIBLE))
            .count() as u64;
        self.garbage_collect(false).await?;
        Ok(blobs)
    }

    /// Bytes of the files in its storage (file sizes, not blocks).
    pub async fn storage_bytes(&self) -> u64 {
        let dir = self.storage();
        tokio::task::spawn_blocking(move || super::bytes_under(&dir))
            .await
            .unwrap_or_default()
    }

    /// Runs `garbage-collect` (a dry run lists what it would delete);
    /// answers its standard output.
    async fn garbage_collect(&self, dry_run: bool) -> Result<String, String> {
        let mut command = Command::new(&self.command);
        command.arg("garbage-collect");
        if dry_run {
            command.arg("--dry-run");
        }
        let run = command
            .arg(self.dir.join("config.yml"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(GC_TIMEOUT, run)
            .await
            .map_err(|_| {
                format!(
                    "garbage collection ran over {} min",
                    GC_TIMEOUT.as_secs() / 60
                )
            })?
            .map_err(|e| format!("cannot run {}: {e}", self.command.display()))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let said: Vec<&str> = said.lines().rev().take(3).collect();
            return Err(format!(
                "garbage collection failed ({}): {}",
                out.status,
                said.into_iter().rev().collect::<Vec<_>>().join("; ")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the registry answers `GET /` (no account needed).
    async fn probe(&self) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| e.to_string())?;
        let url = format!("http://{}/", self.addr);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "it did not answer on {} within {} s",
                    self.addr,
                    READY_TIMEOUT.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The random value kept in `path`, made (`len` letters and digits) the
/// first time.
/// Writes `path` whole by renaming a new file over it, so the registry
/// never reads half a file.
fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let staged = path.with_extension(format!("new-{}", uuid::Uuid::now_v7().simple()));
    data_dir::create_private(&staged, bytes)?;
    std::fs::rename(&staged, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&staged);
    })
}

fn keep(path: &Path, len: usize) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(value) if !value.trim().is_empty() => return Ok(value.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect();
    data_dir::write_private(path, value.as_bytes())?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_and_configuration_are_kept_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let first = Managed::prepare(dir.path(), addr, "docker-registry".into()).unwrap();
        let again = Managed::prepare(dir.path(), addr, "docker-registry".into()).unwrap();
        assert_eq!(
            first.password(),
            again.password(),
            "the password survives a restart"
        );
        assert_eq!(first.password().len(), 32);
        let htpasswd = std::fs::read_to_string(dir.path().join("registry/htpasswd")).unwrap();
        let (user, hash) = htpasswd.trim().split_once(':').unwrap();
        assert_eq!(user, USERNAME);
        assert!(bcrypt::verify(first.password(), hash).unwrap());
        let config = std::fs::read_to_string(dir.path().join("registry/config.yml")).unwrap();
        assert!(config.contains("addr: \"127.0.0.1:5000\""), "{config}");
        assert!(config.contains("enabled: true"), "deletes are on: {config}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for file in ["password", "htpasswd", "config.yml", "http-secret"] {
                let mode = std::fs::metadata(dir.path().join("registry").join(file))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{file} is private");
            }
        }
    }
}
