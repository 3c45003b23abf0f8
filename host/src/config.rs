//! Configuration: built-in defaults, then a TOML file, then `DCP_*`
//! environment variables (and `DATABASE_URL`), then command-line flags —
//! each overriding the one before. `dcp.example.toml` documents every key.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// Everything `dcp serve` needs to know.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// Directory for DCP's own files (the SQLite database by default).
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; defaults to `sqlite://<data_dir>/dcp.db`.
    pub database_url: Option<String>,
    /// Directory holding the built web UI; by default `ui/` beside the binary or one level up.
    pub ui_dir: Option<PathBuf>,
    /// Directory of the bundled plugins (`<name>.wasm` + `<name>.toml`),
    /// installed at start; by default `plugins/` beside the binary or one level up.
    pub plugin_dir: Option<PathBuf>,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    /// Password for the `admin` user created on first start; random and printed once if unset.
    pub admin_password: Option<String>,
    /// How long a browser session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// Mark cookies `Secure` always; turn on when DCP is only served over HTTPS.
    pub secure_cookies: bool,
    /// Reverse proxies (addresses or CIDR ranges) whose forwarding headers
    /// are believed: `X-Forwarded-Proto: https` gets their requests `Secure`
    /// cookies, and `X-Forwarded-For` names the client that login
    /// throttling counts against (not the proxy every client shares).
    pub trusted_proxies: Vec<IpRange>,
    /// A separate address for `/metrics`; when set, the main listener does
    /// not serve it.
    pub metrics_bind: Option<SocketAddr>,
    /// A bearer token `/metrics` requires; unset, it is open to whoever
    /// reaches its address.
    pub metrics_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Connections served at once; further clients wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers, counted from when
    /// the connection is ready for one: also how long an idle keep-alive
    /// connection is kept.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a whole request body (408 past it).
    pub body_timeout_secs: u64,
    /// Password hashes computed at once; 0 means one per CPU core.
    pub login_concurrency: usize,
    /// Logins that may wait for a hashing slot; more are refused with 429.
    pub login_queue: usize,
    /// Failed logins a user name gets before it is locked out.
    pub login_user_free_failures: u32,
    /// Failed logins a client address gets before it is locked out.
    pub login_address_free_failures: u32,
    /// Seconds of the first lock-out; each further failure doubles it.
    pub login_lockout_secs: u64,
    /// Seconds of the longest lock-out.
    pub login_max_lockout_secs: u64,
    /// User names and addresses tracked for throttling, each.
    pub login_throttle_entries: usize,
    /// Milliseconds a locked-out login's 429 is held at most before it is
    /// sent, so clients ignoring `Retry-After` slow themselves; 0 answers
    /// at once.
    pub login_tarpit_ms: u64,
    /// DCP's SSH private key, used for hosts given without a key or password.
    pub ssh_key_file: Option<PathBuf>,
    /// Seconds to open an SSH connection (TCP, handshake, login).
    pub ssh_connect_timeout_secs: u64,
    /// Seconds an unused SSH connection is kept for reuse; 0 closes each
    /// after use. A task keeps a node's connection past it until the task's
    /// next step on that node.
    pub ssh_idle_secs: u64,
    /// The most hosts one execution may run at once (its `forks`).
    pub max_forks: u32,
    /// Base64 of the 32-byte key that seals account secrets and machine
    /// keys at rest; set it through `DCP_SECRET_KEY` rather than a file.
    pub secret_key: Option<String>,
    /// Where the sealing key lives when `secret_key` is unset; created with a
    /// random key on first start. Defaults to `<data_dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    /// The command group (by name) run on new machines whose template names none;
    /// without one, init only checks the machine answers over SSH.
    pub default_init_group: Option<String>,
    /// Milliseconds between asking the cloud whether an instance runs.
    pub machine_poll_ms: u64,
    /// Seconds an instance may take to run (or to stop before deletion).
    pub machine_start_timeout_secs: u64,
    /// Seconds a process's claim on a task lasts without a heartbeat: how
    /// soon another replica (or the next start) takes over a dead one's tasks.
    pub task_lease_secs: u64,
    /// The most output bytes one execution keeps, all hosts together (each
    /// host is also capped per step); hosts cut by it are marked `truncated`.
    pub max_execution_output_bytes: u64,
    /// Days a finished execution (with its output) is kept; 0 keeps forever.
    pub execution_retention_days: u32,
    /// Days the step logs of a finished task are kept; 0 keeps forever.
    pub task_log_retention_days: u32,
    /// Days a finished change of the discovery operation log is kept (with
    /// its idempotency key); 0 keeps forever.
    pub discovery_change_retention_days: u32,
    /// Runs DCP's own image registry (Debian's `docker-registry`) on this
    /// address, its storage and account under `<data_dir>/registry`. Nodes
    /// pull from it, so outside tests it is an address they reach (Docker
    /// trusts plain HTTP only on 127.0.0.0/8; elsewhere put TLS in front
    /// and set `registry_url`).
    pub registry_addr: Option<SocketAddr>,
    /// The `docker-registry` program DCP runs for `registry_addr`.
    pub registry_command: PathBuf,
    /// The registry as clients and nodes reach it (`http://host:port` or
    /// `https://…`): an external one (Harbor, distribution) when
    /// `registry_addr` is unset; with it, the address DCP's own registry is
    /// reached at, when that is not `registry_addr` itself.
    pub registry_url: Option<String>,
    /// The external registry's account (`registry_url` without
    /// `registry_addr`).
    pub registry_username: Option<String>,
    /// That account's password.
    pub registry_password: Option<String>,
    /// The Docker daemon image builds run on (its unix socket); it pushes
    /// to the registry, so it reaches the registry's address.
    pub docker_socket: PathBuf,
    /// Image builds one DCP runs at once; more wait, up to 64 each.
    pub max_builds: u32,
    /// Seconds an image build (sources, build, push) may take.
    pub build_timeout_secs: u64,
}

/// An address or a CIDR range (`10.0.0.0/8`, `::1`), as written in the
/// configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpRange(ipnet::IpNet);

impl IpRange {
    /// Whether `addr` is in the range. An IPv4 address a dual-stack socket
    /// reports as `::ffff:a.b.c.d` matches an IPv4 range.
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.0.contains(&addr)
    }
}

impl TryFrom<String> for IpRange {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let text = text.trim();
        text.parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(Self)
            .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))
    }
}

impl From<IpRange> for String {
    fn from(range: IpRange) -> Self {
        range.0.to_string()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text for a terminal.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            ui_dir: None,
            plugin_dir: None,
            log_format: LogFormat::Human,
            admin_password: None,
            session_ttl_secs: 12 * 60 * 60,
            secure_cookies: false,
            trusted_proxies: Vec::new(),
            metrics_bind: None,
            metrics_token: None,
            max_body_bytes: 1 << 20,
            max_connections: 4096,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            login_concurrency: 0,
            login_queue: 32,
            login_user_free_failures: 5,
            login_address_free_failures: 20,
            login_lockout_secs: 1,
            login_max_lockout_secs: 900,
            login_throttle_entries: 10_000,
            login_tarpit_ms: 1000,
            ssh_key_file: None,
            ssh_connect_timeout_secs: 10,
            ssh_idle_secs: 60,
            max_forks: 500,
            secret_key: None,
            secret_key_file: None,
            default_init_group: None,
            machine_poll_ms: 2000,
            machine_start_timeout_secs: 600,
            task_lease_secs: 15,
            max_execution_output_bytes: 64 << 20,
            execution_retention_days: 90,
            task_log_retention_days: 90,
            discovery_change_retention_days: 90,
            registry_addr: None,
            registry_command: PathBuf::from("docker-registry"),
            registry_url: None,
            registry_username: None,
            registry_password: None,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            max_builds: 2,
            build_timeout_secs: 3600,
        }
    }
}

// Hand-written so the admin password and database credentials never reach a log.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field(
                "database_url",
                &crate::store::redact_url(&self.database_url()),
            )
            .field("ui_dir", &self.ui_dir)
            .field("plugin_dir", &self.plugin_dir)
            .field("log_format", &self.log_format)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "***"),
            )
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("secure_cookies", &self.secure_cookies)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("metrics_bind", &self.metrics_bind)
            .field("metrics_token", &self.metrics_token.as_ref().map(|_| "***"))
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("header_timeout_secs", &self.header_timeout_secs)
            .field("body_timeout_secs", &self.body_timeout_secs)
            .field("login_concurrency", &self.login_concurrency)
            .field("login_queue", &self.login_queue)
            .field("login_user_free_failures", &self.login_user_free_failures)
            .field(
                "login_address_free_failures",
                &self.login_address_free_failures,
            )
            .field("login_lockout_secs", &self.login_lockout_secs)
            .field("login_max_lockout_secs", &self.login_max_lockout_secs)
            .field("login_throttle_entries", &self.login_throttle_entries)
            .field("login_tarpit_ms", &self.login_tarpit_ms)
            .field("ssh_key_file", &self.ssh_key_file)
            .field("ssh_connect_timeout_secs", &self.ssh_connect_timeout_secs)
            .field("ssh_idle_secs", &self.ssh_idle_secs)
            .field("max_forks", &self.max_forks)
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("secret_key_file", &self.secret_key_file)
            .field("default_init_group", &self.default_init_group)
            .field("machine_poll_ms", &self.machine_poll_ms)
            .field(
                "machine_start_timeout_secs",
                &self.machine_start_timeout_secs,
            )
            .field("task_lease_secs", &self.task_lease_secs)
            .field(
                "max_execution_output_bytes",
                &self.max_execution_output_bytes,
            )
            .field("execution_retention_days", &self.execution_retention_days)
            .field("task_log_retention_days", &self.task_log_retention_days)
            .field(
                "discovery_change_retention_days",
                &self.discovery_change_retention_days,
            )
            .field("registry_addr", &self.registry_addr)
            .field("registry_command", &self.registry_command)
            .field("registry_url", &self.registry_url)
            .field("registry_username", &self.registry_username)
            .field(
                "registry_password",
                &self.registry_password.as_ref().map(|_| "***"),
            )
            .field("docker_socket", &self.docker_socket)
            .field("max_builds", &self.max_builds)
            .field("build_timeout_secs", &self.build_timeout_secs)
            .finish()
    }
}

/// Environment variables read as configuration keys, without the `DCP_` prefix.
const ENV_KEYS: &[&str] = &[
    "bind",
    "data_dir",
    "database_url",
    "ui_dir",
    "plugin_dir",
    "log_format",
    "admin_password",
    "session_ttl_secs",
    "secure_cookies",
    "trusted_proxies",
    "metrics_bind",
    "metrics_token",
    "max_body_bytes",
    "max_connections",
    "header_timeout_secs",
    "body_timeout_secs",
    "login_concurrency",
    "login_queue",
    "login_user_free_failures",
    "login_address_free_failures",
    "login_lockout_secs",
    "login_max_lockout_secs",
    "login_throttle_entries",
    "login_tarpit_ms",
    "ssh_key_file",
    "ssh_connect_timeout_secs",
    "ssh_idle_secs",
    "max_forks",
    "secret_key",
    "secret_key_file",
    "default_init_group",
    "machine_poll_ms",
    "machine_start_timeout_secs",
    "task_lease_secs",
    "max_execution_output_bytes",
    "execution_retention_days",
    "task_log_retention_days",
    "discovery_change_retention_days",
    "registry_addr",
    "registry_command",
    "registry_url",
    "registry_username",
    "registry_password",
    "docker_socket",
    "max_builds",
    "build_timeout_secs",
];

impl Config {
    /// Whether `addr` is one of `trusted_proxies`.
    #[must_use]
    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|r| r.contains(addr))
    }

    /// Loads the configuration from `file` (if given), the environment and
    /// `overrides` (typically command-line flags), in that order of precedence.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, Box<figment::Error>> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment
            .merge(Env::prefixed("DCP_").only(ENV_KEYS))
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(Box::new)
    }

    /// The database URL in use: the configured one, or a SQLite file in the data dir.
    #[must_use]
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("dcp.db").display()))
    }

    /// The file of the sealing key when `secret_key` is unset.
    #[must_use]
    pub fn secret_key_file(&self) -> PathBuf {
        self.secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secret.key"))
    }

    /// How logins are throttled and password hashing bounded.
    #[must_use]
    pub fn login_policy(&self) -> crate::auth::throttle::Policy {
        let defaults = crate::auth::throttle::Policy::default();
        crate::auth::throttle::Policy {
            concurrency: match self.login_concurrency {
                0 => defaults.concurrency,
                n => n,
            },
            queue: self.login_queue,
            user_free_failures: self.login_user_free_failures,
            address_free_failures: self.login_address_free_failures,
            lockout: std::time::Duration::from_secs(self.login_lockout_secs.max(1)),
            max_lockout: std::time::Duration::from_secs(
                self.login_max_lockout_secs
                    .max(self.login_lockout_secs)
                    .max(1),
            ),
            max_entries: self.login_throttle_entries.max(1),
            tarpit: std::time::Duration::from_millis(self.login_tarpit_ms),
        }
    }

    /// The directory to serve the web UI from, if one can be found.
    #[must_use]
    pub fn ui_dir(&self) -> Option<PathBuf> {
        self.ui_dir
            .clone()
            .or_else(|| beside_binary("ui", |dir| dir.join("index.html").is_file()))
    }

    /// The directory of the bundled plugins, if one can be found.
    #[must_use]
    pub fn plugin_dir(&self) -> Option<PathBuf> {
        self.plugin_dir
            .clone()
            .or_else(|| beside_binary("plugins", Path::is_dir))
    }
}

/// `<exe dir>/name` or `<exe dir>/../name`, whichever passes `check` first
/// (a release layout, or `target/<profile>/dcp` next to `target/name`).
fn beside_binary(name: &str, check: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?;
    [beside.join(name), beside.parent()?.join(name)]
        .into_iter()
        .find(|dir| check(dir))
}

/// Values given on the command line; `None` leaves the lower layers' value.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Address to listen on [env: DCP_BIND] [default: 127.0.0.1:8080]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Directory for DCP's files [env: DCP_DATA_DIR] [default: ./data]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// sqlite://… or postgres://… [env: DATABASE_URL] [default: sqlite://<data-dir>/dcp.db]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Directory holding the built web UI [env: DCP_UI_DIR]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui_dir: Option<PathBuf>,
    /// Directory of the bundled plugins [env: DCP_PLUGIN_DIR]
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_dir: Option<PathBuf>,
    /// Log line format [env: DCP_LOG_FORMAT] [default: human]
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail fixes the closure type
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "dcp.toml",
                "bind = \"127.0.0.1:9000\"\ndata_dir = \"/from-file\"\nlog_format = \"json\"",
            )?;
            jail.set_env("DCP_DATA_DIR", "/from-env");
            jail.set_env("DCP_TEST_SOMETHING_ELSE", "ignored");
            let flags = Overrides {
                log_format: Some(LogFormat::Human),
                ..Overrides::default()
            };
            let config = Config::load(Some(Path::new("dcp.toml")), &flags).map_err(|e| *e)?;
            assert_eq!(config.bind.port(), 9000);
            assert_eq!(config.data_dir, PathBuf::from("/from-env"));
            assert_eq!(config.log_format, LogFormat::Human);
            assert_eq!(config.database_url(), "sqlite:///from-env/dcp.db");
            Ok(())
        });
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "DCP_TRUSTED_PROXIES",
                r#"["127.0.0.1", "10.1.0.0/16", "::1"]"#,
            );
            jail.set_env("DCP_METRICS_BIND", "127.0.0.1:9464");
            let config = Config::load(None, &Overrides::default()).map_err(|e| *e)?;
            let trusted = |ip: &str| {
                let ip: IpAddr = ip.parse().unwrap();
                config.trusted_proxies.iter().any(|r| r.contains(ip))
            };
            assert!(trusted("127.0.0.1") && trusted("::ffff:127.0.0.1") && trusted("::1"));
            assert!(trusted("10.1.200.3") && !trusted("10.2.0.1") && !trusted("127.0.0.2"));
            assert_eq!(config.metrics_bind, Some("127.0.0.1:9464".parse().unwrap()));
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.create_file("dcp.toml", r#"trusted_proxies = ["10.0.0.0/33"]"#)?;
            let err = Config::load(Some(Path::new("dcp.toml")), &Overrides::default())
                .expect_err("a bad range must not be ignored");
            assert!(err.to_string().contains("10.0.0.0/33"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("dcp.toml", "bnid = \"127.0.0.1:9000\"")?;
            let err = Config::load(Some(Path::new("dcp.toml")), &Overrides::default())
                .expect_err("a typo must not be ignored");
            assert!(err.to_string().contains("bnid"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dcp.example.toml");
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file_exact(&example));
        let config: Config = figment.extract().expect("dcp.example.toml parses");
        let defaults = Config::default();
        assert_eq!(
            serde_json::to_value(&config).unwrap(),
            serde_json::to_value(&defaults).unwrap()
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = Config {
            admin_password: Some("hunter2".into()),
            secret_key: Some("c2VjcmV0LWtleQ==".into()),
            metrics_token: Some("scrape-token".into()),
            database_url: Some("postgres://dcp:pw@db/dcp".into()),
            registry_password: Some("registry-pw".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2")
                && !shown.contains("registry-pw")
                && !shown.contains(":pw@")
                && !shown.contains("c2VjcmV0")
                && !shown.contains("scrape-token"),
            "{shown}"
        );
    }
}
