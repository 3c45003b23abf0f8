//! The SSH transport: one pure-Rust client (russh) with a connection per
//! host kept for reuse until idle, host keys trusted on first use and
//! stored, and commands that can be killed (timeout, cancel) by signalling
//! the remote process group.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use russh::{
    ChannelMsg, Disconnect, Sig,
    client::{self, Handle, Msg},
    keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate},
};
use tokio::{
    sync::{Mutex as AsyncMutex, OwnedSemaphorePermit, Semaphore},
    time::{Instant, sleep, sleep_until, timeout_at},
};
use tokio_util::sync::CancellationToken;

use super::template::shell_quote;
use crate::{
    lock,
    plugins::ExecOutput,
    store::{self, HostKeyRecord, Store},
    telemetry::SshMetrics,
};

/// How the transport behaves; from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Time to open a connection: TCP, handshake and authentication.
    pub connect_timeout: Duration,
    /// How long an unused connection is kept; zero closes each after use.
    pub idle: Duration,
    /// Sessions open at once on one connection (OpenSSH's `MaxSessions` is 10).
    pub sessions_per_connection: usize,
    /// After a kill's TERM, how long the process group has before KILL.
    pub kill_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            sessions_per_connection: 8,
            kill_grace: Duration::from_secs(1),
        }
    }
}

/// Where to log in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP address or host name.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
}

impl Endpoint {
    /// `address:port`, how host keys are filed.
    #[must_use]
    pub fn host(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]:{}", self.address, self.port)
        } else {
            format!("{}:{}", self.address, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.host())
    }
}

/// How to authenticate.
#[derive(Clone)]
pub enum Credential {
    /// A private key.
    Key(Arc<PrivateKey>),
    /// A password (adopting a server that does not have DCP's key yet).
    Password(Arc<str>),
    /// DCP's default key from the configuration.
    Default,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => write!(f, "Key({})", key.fingerprint(HashAlg::Sha256)),
            Self::Password(_) => f.write_str("Password(***)"),
            Self::Default => f.write_str("Default"),
        }
    }
}

impl Credential {
    /// Parses a private key in OpenSSH or PEM format.
    pub fn parse_key(text: &str) -> Result<Self, String> {
        russh::keys::decode_secret_key(text.trim(), None)
            .map(|key| Self::Key(Arc::new(key)))
            .map_err(|e| format!("is not a usable unencrypted private key ({e})"))
    }

    /// Tells connections made with different credentials apart without
    /// keeping a password in the pool's keys.
    fn pool_id(&self) -> String {
        match self {
            Self::Key(key) => key.fingerprint(HashAlg::Sha256).to_string(),
            Self::Password(password) => {
                format!("password:{}", crate::sha256_hex(password.as_bytes()))
            }
            Self::Default => "default".to_owned(),
        }
    }
}

/// A host to run on and how to log in.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where.
    pub endpoint: Endpoint,
    /// How.
    pub credential: Credential,
}

/// Why an SSH operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made.
    #[error("{host} is unreachable: {reason}")]
    Unreachable {
        /// `address:port`.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// The host refused the credentials.
    #[error("authentication failed for {endpoint}: the host refused the {method}")]
    AuthFailed {
        /// `user@address:port`.
        endpoint: String,
        /// `key` or `password`.
        method: &'static str,
    },
    /// No credential was given and there is no default key.
    #[error("no private key or password for {0}, and no default key is configured (ssh_key_file)")]
    NoCredential(String),
    /// The host presented a key other than the one trusted.
    #[error(
        "the host key of {host} changed: trusted {trusted}, presented {presented}; if the host \
         was rebuilt, forget its key (SSH host keys page, or DELETE /api/v1/ssh/host-keys/{host})"
    )]
    HostKeyChanged {
        /// `address:port`.
        host: String,
        /// The trusted fingerprint.
        trusted: String,
        /// The presented fingerprint.
        presented: String,
    },
    /// The command ran past its deadline and was killed.
    #[error("timed out after {0:?}; the remote process group was killed")]
    Timeout(Duration),
    /// The command was cancelled and killed.
    #[error("cancelled; the remote process group was killed")]
    Cancelled,
    /// The SSH session failed after connecting.
    #[error("SSH session with {host} failed: {reason}")]
    Session {
        /// `address:port`.
        host: String,
        /// What went wrong.
        reason: String,
    },
    /// Writing a file on the host failed.
    #[error("writing {path} failed: {reason}")]
    PutFile {
        /// The remote path.
        path: String,
        /// The remote error.
        reason: String,
    },
    /// The host-key store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// russh failed; mapped to one of the above where the context is known.
    #[error(transparent)]
    Ssh(#[from] russh::Error),
}

/// The russh client handler: checks the server's key against the store.
struct Checker {
    store: Store,
    host: String,
}

impl client::Handler for Checker {
    type Error = Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates need a CA policy DCP does not have yet.
            return Ok(false);
        };
        let presented = HostKeyRecord {
            host: self.host.clone(),
            algorithm: key.algorithm().to_string(),
            fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
            public_key: key.to_openssh().map_err(|e| Error::Session {
                host: self.host.clone(),
                reason: format!("unreadable host key: {e}"),
            })?,
            first_seen_at: time::OffsetDateTime::UNIX_EPOCH,
            last_seen_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        let trusted = self.store.trust_host_key(&presented).await?;
        if trusted.fingerprint == presented.fingerprint {
            Ok(true)
        } else {
            Err(Error::HostKeyChanged {
                host: self.host.clone(),
                trusted: trusted.fingerprint,
                presented: presented.fingerprint,
            })
        }
    }
}

/// One authenticated connection.
struct Connection {
    handle: Handle<Checker>,
    host: String,
    sessions: Arc<Semaphore>,
    users: AtomicUsize,
    last_used: Mutex<Instant>,
    metrics: SshMetrics,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.metrics.closed();
    }
}

impl Connection {
    /// The session with this host failed for `reason`.
    fn error(&self, reason: impl fmt::Display) -> Error {
        Error::Session {
            host: self.host.clone(),
            reason: reason.to_string(),
        }
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_since(&self) -> Instant {
        *lock(&self.last_used)
    }
}

/// Marks a connection in use while alive.
struct Lease(Arc<Connection>);

impl Lease {
    fn new(conn: Arc<Connection>) -> Self {
        conn.users.fetch_add(1, Ordering::SeqCst);
        Self(conn)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.touch();
        self.0.users.fetch_sub(1, Ordering::SeqCst);
    }
}

type Slot = Arc<AsyncMutex<Option<Arc<Connection>>>>;

/// The SSH transport. Cheap to share; one per DCP process.
pub struct Transport {
    store: Store,
    settings: Settings,
    default_key: Option<Arc<PrivateKey>>,
    config: Arc<client::Config>,
    slots: Mutex<HashMap<(Endpoint, String), Slot>>,
    /// Hosts someone will come back to soon, with how many holds each:
    /// their connections are kept however long they sit idle.
    held: Mutex<HashMap<String, usize>>,
    metrics: SshMetrics,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("settings", &self.settings)
            .field("default_key", &self.default_key.is_some())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport trusting host keys through `store`, logging in with
    /// `default_key` when a target brings no credential, counting into
    /// `metrics`. Starts a reaper that closes idle connections.
    #[must_use]
    pub fn new(
        store: Store,
        settings: Settings,
        default_key: Option<PrivateKey>,
        metrics: SshMetrics,
    ) -> Arc<Self> {
        let config = client::Config {
            // Without it, small command packets wait for ACKs (Nagle).
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            ..client::Config::default()
        };
        let transport = Arc::new(Self {
            store,
            settings,
            default_key: default_key.map(Arc::new),
            config: Arc::new(config),
            slots: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            metrics,
        });
        tokio::spawn(reap(Arc::downgrade(&transport)));
        transport
    }

    /// Runs `command` on `target`, feeding `stdin`, keeping at most
    /// `max_output` bytes of each stream. At `timeout` or when `cancel`
    /// fires the remote process group gets TERM, then KILL.
    pub async fn exec(
        &self,
        target: &Target,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        max_output: usize,
        cancel: &CancellationToken,
    ) -> Result<ExecOutput, Error> {
        self.exec_watched(
            target,
            command,
            stdin,
            timeout,
            max_output,
            cancel,
            &|_, _| {},
        )
        .await
    }

    /// [`Transport::exec`], handing `watch` each piece of output as it is
    /// kept (the same bytes the result holds, in order) — also the pieces
    /// printed before a timeout or cancel, which the result then lacks.
    #[allow(clippy::too_many_arguments, reason = "exec's arguments and the watch")]
    pub async fn exec_watched(
        &self,
        target: &Target,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
        max_output: usize,
        cancel: &CancellationToken,
        watch: &(dyn Fn(Stream, &[u8]) + Sync),
    ) -> Result<ExecOutput, Error> {
        let deadline = Instant::now() + timeout;
        let (lease, _session, mut channel) = tokio::select! {
            open = timeout_at(deadline, self.open(target)) => open.map_err(|_| Error::Timeout(timeout))??,
            () = cancel.cancelled() => return Err(Error::Cancelled),
        };
        let conn = &lease.0.clone();
        channel
            .exec(true, with_pid_mark(command))
            .await
            .map_err(|e| conn.error(e))?;
        if let Some(stdin) = stdin {
            channel.data(&stdin[..]).await.map_err(|e| conn.error(e))?;
        }
        channel.eof().await.map_err(|e| conn.error(e))?;
        let mut output = Output::new(max_output);
        // Set when the command has exited: a background job it started may
        // still hold stdout open, which would keep the channel open.
        let mut exited = None::<Instant>;
        let ended = loop {
            tokio::select! {
                msg = channel.wait() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        let kept = output.stdout.len();
                        output.stdout(&data);
                        watch(Stream::Stdout, &output.stdout[kept..]);
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        let kept = output.stderr.len();
                        output.stderr(&data);
                        watch(Stream::Stderr, &output.stderr[kept..]);
                    }
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        output.exit_code = Some(i32::try_from(exit_status).unwrap_or(i32::MAX));
                        exited = Some(Instant::now() + AFTER_EXIT);
                    }
                    Some(ChannelMsg::ExitSignal { .. }) => exited = Some(Instant::now() + AFTER_EXIT),
                    Some(ChannelMsg::Failure) => {
                        break Err(conn.error("the host refused to run the command"));
                    }
                    Some(ChannelMsg::Close) | None => break Ok(()),
                    Some(_) => {}
                },
                // Left running on purpose (`service start &`): not killed.
                () = sleep_until(exited.unwrap_or(deadline)), if exited.is_some() => {
                    let _ = channel.close().await;
                    break Ok(());
                }
                () = sleep_until(deadline) => break Err(Error::Timeout(timeout)),
                () = cancel.cancelled() => break Err(Error::Cancelled),
            }
        };
        let kept = output.stdout.len();
        output.end_head();
        watch(Stream::Stdout, &output.stdout[kept..]);
        if let Err(err) = ended {
            self.kill(conn, &mut channel, output.pid).await;
            return Err(err);
        }
        drop(lease);
        self.release(target);
        Ok(output.finish())
    }

    /// Writes `content` to `path` on `target` with `mode` within `timeout`;
    /// the file is created private (umask 077) so it is never readable by
    /// others before its mode is set.
    pub async fn put_file(
        &self,
        target: &Target,
        path: &str,
        content: Vec<u8>,
        mode: u32,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), Error> {
        let quoted = shell_quote(path);
        let command = format!("umask 077 && cat > {quoted} && chmod {mode:o} {quoted}");
        let out = self
            .exec(target, &command, Some(content), timeout, 4096, cancel)
            .await?;
        if out.exit_code == Some(0) {
            Ok(())
        } else {
            Err(Error::PutFile {
                path: path.to_owned(),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Closes every pooled connection.
    pub async fn close_all(&self) {
        let slots: Vec<Slot> = lock(&self.slots).drain().map(|(_, slot)| slot).collect();
        self.metrics.hosts(0);
        for slot in slots {
            if let Some(conn) = slot.lock().await.take() {
                disconnect(&conn).await;
            }
        }
    }

    /// Keeps the connections to `address` open, however long they sit
    /// idle, until the hold is dropped: for a caller that knows it will
    /// come back to the host (a task between a node's steps), so each
    /// visit does not pay for a login — about 40 ms of the host's CPU.
    /// Opens nothing itself; a connection the host closes is still dropped,
    /// and with reuse off (`idle` zero) each connection still closes after use.
    #[must_use]
    pub fn hold(self: &Arc<Self>, address: &str) -> Hold {
        *lock(&self.held).entry(address.to_owned()).or_default() += 1;
        Hold {
            transport: Arc::downgrade(self),
            address: address.to_owned(),
        }
    }

    /// Whether a [`Hold`] keeps the connections to `address`.
    fn is_held(&self, address: &str) -> bool {
        lock(&self.held).contains_key(address)
    }

    /// A session channel on a connection to `target`, with its slot among
    /// the connection's sessions. A pooled connection the host dropped
    /// while idle gets one fresh try.
    async fn open(
        &self,
        target: &Target,
    ) -> Result<(Lease, OwnedSemaphorePermit, russh::Channel<Msg>), Error> {
        let mut stale = None;
        loop {
            let lease = self.lease(target, stale.as_ref()).await?;
            let conn = lease.0.clone();
            let permit = conn
                .sessions
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| conn.error("the connection is closing"))?;
            match conn.handle.channel_open_session().await {
                Ok(channel) => {
                    self.metrics.session();
                    return Ok((lease, permit, channel));
                }
                Err(e) if stale.is_some() => return Err(conn.error(e)),
                Err(_) => stale = Some(conn),
            }
        }
    }

    /// A connection to `target`: the pooled one if alive (and not `stale`),
    /// else a new one.
    async fn lease(
        &self,
        target: &Target,
        stale: Option<&Arc<Connection>>,
    ) -> Result<Lease, Error> {
        let key = (target.endpoint.clone(), target.credential.pool_id());
        let slot = {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(key).or_default().clone();
            self.metrics.hosts(slots.len());
            slot
        };
        // Holding the slot while connecting makes concurrent users of one
        // host share a single new connection.
        let mut pooled = slot.lock().await;
        let usable = |c: &&Arc<Connection>| {
            !c.handle.is_closed() && stale.is_none_or(|s| !Arc::ptr_eq(s, c))
        };
        if let Some(conn) = pooled.as_ref().filter(usable) {
            return Ok(Lease::new(conn.clone()));
        }
        let conn = Arc::new(self.connect(target).await?);
        *pooled = Some(conn.clone());
        Ok(Lease::new(conn))
    }

    /// With reuse off, closes the connection once nobody uses it.
    fn release(&self, target: &Target) {
        if !self.settings.idle.is_zero() {
            return;
        }
        let key = (target.endpoint.clone(), target.credential.pool_id());
        let slot = lock(&self.slots).get(&key).cloned();
        if let Some(slot) = slot {
            tokio::spawn(async move {
                let mut pooled = slot.lock().await;
                if let Some(conn) = pooled.take_if(|c| c.users.load(Ordering::SeqCst) == 0) {
                    disconnect(&conn).await;
                }
            });
        }
    }

    async fn connect(&self, target: &Target) -> Result<Connection, Error> {
        let host = target.endpoint.host();
        let unreachable = |reason: String| Error::Unreachable {
            host: host.clone(),
            reason,
        };
        let attempt = async {
            let checker = Checker {
                store: self.store.clone(),
                host: host.clone(),
            };
            let address = (target.endpoint.address.as_str(), target.endpoint.port);
            let mut handle = client::connect(self.config.clone(), address, checker)
                .await
                .map_err(|e| match e {
                    Error::Ssh(e) => unreachable(describe_connect_error(&e)),
                    other => other,
                })?;
            self.authenticate(&mut handle, target).await?;
            Ok::<_, Error>(handle)
        };
        let handle = tokio::time::timeout(self.settings.connect_timeout, attempt)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no SSH login within {:?}",
                    self.settings.connect_timeout
                ))
            })
            .and_then(|logged_in| logged_in);
        self.metrics.connected(handle.is_ok());
        Ok(Connection {
            handle: handle?,
            host,
            sessions: Arc::new(Semaphore::new(self.settings.sessions_per_connection)),
            users: AtomicUsize::new(0),
            last_used: Mutex::new(Instant::now()),
            metrics: self.metrics.clone(),
        })
    }

    async fn authenticate(
        &self,
        handle: &mut Handle<Checker>,
        target: &Target,
    ) -> Result<(), Error> {
        let endpoint = &target.endpoint;
        let session = |e: russh::Error| Error::Session {
            host: endpoint.host(),
            reason: e.to_string(),
        };
        let key = match &target.credential {
            Credential::Key(key) => Some(key.clone()),
            Credential::Default => Some(
                self.default_key
                    .clone()
                    .ok_or_else(|| Error::NoCredential(endpoint.to_string()))?,
            ),
            Credential::Password(_) => None,
        };
        let (result, method) = match (key, &target.credential) {
            (Some(key), _) => {
                let hash = if key.algorithm().is_rsa() {
                    handle
                        .best_supported_rsa_hash()
                        .await
                        .map_err(session)?
                        .flatten()
                } else {
                    None
                };
                let key = PrivateKeyWithHashAlg::new(key, hash);
                let result = handle
                    .authenticate_publickey(&endpoint.user, key)
                    .await
                    .map_err(session)?;
                (result, "key")
            }
            (None, Credential::Password(password)) => {
                let result = handle
                    .authenticate_password(&endpoint.user, password.as_ref())
                    .await
                    .map_err(session)?;
                (result, "password")
            }
            (None, _) => return Err(Error::NoCredential(endpoint.to_string())),
        };
        if result.success() {
            Ok(())
        } else {
            Err(Error::AuthFailed {
                endpoint: endpoint.to_string(),
                method,
            })
        }
    }

    /// Sends TERM to the command's process group, waits a moment, then
    /// KILL, and closes the channel: closing alone would leave the remote
    /// command running. Both ways are used: a channel `signal` request
    /// (sshd signals the session's group), and `kill` on the group from a
    /// second session, since OpenSSH before 10.0 refuses `signal` for root.
    async fn kill(&self, conn: &Connection, channel: &mut russh::Channel<Msg>, pid: Option<u32>) {
        let _ = channel.signal(Sig::TERM).await;
        if let Some(pid) = pid {
            signal_group(conn, pid, "TERM").await;
        }
        let grace = sleep(self.settings.kill_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                msg = channel.wait() => if matches!(msg, Some(ChannelMsg::Close) | None) {
                    return;
                },
                () = &mut grace => break,
            }
        }
        let _ = channel.signal(Sig::KILL).await;
        if let Some(pid) = pid {
            signal_group(conn, pid, "KILL").await;
        }
        let _ = channel.close().await;
    }

    /// Forgets the hosts whose slot holds no connection and is in nobody's
    /// hands: without it the map would keep every host ever reached, and a
    /// fleet that expands and shrinks reaches new addresses all the time.
    /// A slot is only handed out under the map's lock, so one found unheld
    /// here cannot be taken while it goes.
    fn forget_empty_slots(&self) {
        let mut slots = lock(&self.slots);
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1 || slot.try_lock().is_ok_and(|pooled| pooled.is_some())
        });
        self.metrics.hosts(slots.len());
    }

    /// Every pooled slot with its host's address, for the reaper to inspect.
    fn all_slots(&self) -> Vec<(String, Slot)> {
        lock(&self.slots)
            .iter()
            .map(|((endpoint, _), slot)| (endpoint.address.clone(), slot.clone()))
            .collect::<Vec<_>>()
    }
}

/// Keeps a host's connections from being closed for idleness while alive
/// (see [`Transport::hold`]).
#[derive(Debug)]
pub struct Hold {
    transport: Weak<Transport>,
    address: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(transport) = self.transport.upgrade() else {
            return;
        };
        let mut held = lock(&transport.held);
        if let Some(count) = held.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// Closes connections idle past the transport's idle time, and forgets
/// the hosts left without one, until the transport is dropped. With reuse
/// off, connections close after use and it only forgets.
async fn reap(transport: Weak<Transport>) {
    loop {
        let period = match transport.upgrade() {
            Some(t) if t.settings.idle.is_zero() => Duration::from_secs(15),
            Some(t) => {
                (t.settings.idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(15))
            }
            None => return,
        };
        sleep(period).await;
        let Some(transport) = transport.upgrade() else {
            return;
        };
        let idle = transport.settings.idle;
        for (address, slot) in transport.all_slots() {
            let Ok(mut pooled) = slot.try_lock() else {
                continue;
            };
            let stale = pooled.as_ref().is_some_and(|c| {
                c.handle.is_closed()
                    || (c.users.load(Ordering::SeqCst) == 0
                        && c.idle_since().elapsed() >= idle
                        && !transport.is_held(&address))
            });
            if stale && let Some(conn) = pooled.take() {
                disconnect(&conn).await;
            }
        }
        transport.forget_empty_slots();
    }
}

/// How long output is still read after the command exited, for what a
/// background job it started keeps writing to the session.
const AFTER_EXIT: Duration = Duration::from_secs(1);

/// The marker line the remote shell prints first: its pid.
const PID_MARK: &[u8] = b"\x1edcp-pid ";

/// `command` preceded by printing the shell's pid, which is its process
/// group (sshd starts every session with `setsid`).
fn with_pid_mark(command: &str) -> String {
    format!("printf '\\036dcp-pid %s\\n' \"$$\"; {command}")
}

/// Sends `signal` to the process group `pid` from a second session on `conn`.
async fn signal_group(conn: &Connection, pid: u32, signal: &str) {
    let kill = async {
        let mut channel = conn.handle.channel_open_session().await.ok()?;
        conn.metrics.session();
        channel
            .exec(true, format!("kill -{signal} -{pid} 2>/dev/null"))
            .await
            .ok()?;
        while !matches!(channel.wait().await, Some(ChannelMsg::Close) | None) {}
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), kill).await;
}

async fn disconnect(conn: &Connection) {
    let _ = conn
        .handle
        .disconnect(Disconnect::ByApplication, "idle", "en")
        .await;
}

fn describe_connect_error(err: &russh::Error) -> String {
    match err {
        russh::Error::IO(io) => io.to_string(),
        other => other.to_string(),
    }
}

/// Output collected up to a cap per stream.
struct Output {
    max: usize,
    /// The start of stdout until the pid line is complete.
    head: Option<Vec<u8>>,
    /// The remote shell's pid, once read.
    pid: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
    exit_code: Option<i32>,
}

impl Output {
    fn new(max: usize) -> Self {
        Self {
            max,
            head: Some(Vec::new()),
            pid: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            exit_code: None,
        }
    }

    fn stdout(&mut self, data: &[u8]) {
        let Some(head) = self.head.as_mut() else {
            self.truncated |= keep(&mut self.stdout, data, self.max);
            return;
        };
        head.extend_from_slice(data);
        let Some(end) = head.iter().position(|b| *b == b'\n') else {
            if head.len() > 64 {
                // Not our marker (a shell that does not run it): all output.
                let head = self.head.take().unwrap_or_default();
                self.truncated |= keep(&mut self.stdout, &head, self.max);
            }
            return;
        };
        let head = self.head.take().unwrap_or_default();
        let (line, rest) = head.split_at(end + 1);
        match line.strip_prefix(PID_MARK) {
            Some(pid) => {
                self.pid = std::str::from_utf8(pid)
                    .ok()
                    .and_then(|p| p.trim().parse().ok());
                self.truncated |= keep(&mut self.stdout, rest, self.max);
            }
            None => self.truncated |= keep(&mut self.stdout, &head, self.max),
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        self.truncated |= keep(&mut self.stderr, data, self.max);
    }

    /// Output that never completed the pid line is the command's own.
    fn end_head(&mut self) {
        if let Some(head) = self.head.take() {
            self.truncated |= keep(&mut self.stdout, &head, self.max);
        }
    }

    fn finish(mut self) -> ExecOutput {
        self.end_head();
        ExecOutput {
            exit_code: self.exit_code,
            stdout: self.stdout,
            stderr: self.stderr,
            truncated: self.truncated,
        }
    }
}

/// One of a command's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// Appends what fits under `max`; says whether anything was cut.
fn keep(buffer: &mut Vec<u8>, data: &[u8], max: usize) -> bool {
    let room = max.saturating_sub(buffer.len());
    buffer.extend_from_slice(&data[..data.len().min(room)]);
    data.len() > room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_line_is_taken_out_of_stdout_however_it_arrives() {
        let mut out = Output::new(5);
        out.stdout(b"\x1edcp-p");
        out.stdout(b"id 4242\nhello");
        out.stdout(b" world");
        out.stderr(b"oops");
        assert_eq!(out.pid, Some(4242));
        let out = out.finish();
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice()),
            (&b"hello"[..], &b"oops"[..])
        );
        assert!(out.truncated);
    }

    #[test]
    fn output_without_the_marker_is_kept_whole() {
        let mut out = Output::new(100);
        out.stdout(b"no marker here\n");
        assert_eq!(
            (out.pid, out.finish().stdout),
            (None, b"no marker here\n".to_vec())
        );
    }
}
