//! DCP: a container cloud platform. This crate is the `dcp` host: the REST
//! API, the store, authentication, and the web UI server.
//!
//! [`app`] builds the whole HTTP application from an [`AppState`], so tests
//! drive it with `tower::ServiceExt::oneshot` without opening a socket;
//! [`serve`] runs it on a socket until SIGINT or SIGTERM.

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod containers;
pub mod data_dir;
pub mod discovery;
pub mod engine;
pub mod images;
pub mod machines;
pub mod orchestration;
pub mod overview;
pub mod plugins;
pub mod remote;
pub mod retention;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod validate;
pub mod vault;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use crate::{config::Config, store::Store};

/// The data behind `mutex`, even if a panicking holder poisoned it. Every
/// std mutex in DCP guards a table updated in single statements, which a
/// panic cannot leave half done.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The SHA-256 of `bytes`, as lowercase hex: how DCP names plugin artifacts
/// and stores session and token secrets.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// What every request handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Passwords, sessions and tokens.
    pub auth: auth::Auth,
    /// The plugin registry and runtime.
    pub plugins: Arc<plugins::Registry>,
    /// Prometheus metrics.
    pub metrics: Arc<telemetry::Metrics>,
    /// Commands, command groups and executions over SSH.
    pub remote: Arc<remote::Remote>,
    /// Cloud accounts, machine templates, quotas and machines.
    pub machines: Arc<machines::Machines>,
    /// Task templates and the durable task engine.
    pub engine: Arc<engine::Engine>,
    /// Service discovery: balancers, upstreams, bindings.
    pub discovery: Arc<discovery::Discovery>,
    /// The image market: the registry and its images.
    pub images: Arc<images::Images>,
    /// Image builds.
    pub builds: Arc<images::builds::Builds>,
    /// Seals and opens stored secrets.
    pub vault: Arc<vault::Vault>,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Cancelled when the process starts shutting down: long-lived
    /// responses (event streams) end so the server can drain.
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Builds the state over an open (migrated) store, with a new plugin runtime.
    pub async fn new(store: Store, config: Config) -> anyhow::Result<Self> {
        let runtime = plugins::Runtime::new().context("starting the plugin runtime")?;
        Self::with_runtime(store, config, runtime).await
    }

    /// Builds the state over an open store and an existing plugin runtime
    /// (tests share one), opening the plugin registry and installing the
    /// bundled plugins.
    pub async fn with_runtime(
        store: Store,
        config: Config,
        runtime: Arc<plugins::Runtime>,
    ) -> anyhow::Result<Self> {
        let auth = auth::Auth::new(
            store.clone(),
            Duration::from_secs(config.session_ttl_secs),
            config.login_policy(),
        )
        .await
        .context("setting up authentication")?;
        // Uploads are compiled by `dcp check-plugin` first when this is `dcp`
        // (tests embedding the app have no such binary).
        let checker = std::env::current_exe()
            .ok()
            .filter(|exe| exe.file_stem().is_some_and(|stem| stem == "dcp"));
        let registry = plugins::Registry::open(
            runtime,
            store.clone(),
            config.data_dir.join("plugins"),
            checker,
        )
        .await
        .context("opening the plugin registry")?;
        if let Some(dir) = config.plugin_dir() {
            let installed = registry.install_builtins(&dir).await.with_context(|| {
                format!("installing the bundled plugins from {}", dir.display())
            })?;
            for record in installed {
                tracing::info!(plugin = %record.name, version = %record.version, "bundled plugin ready");
            }
        }
        let default_key = match &config.ssh_key_file {
            Some(path) => Some(
                russh::keys::load_secret_key(path, None)
                    .with_context(|| format!("reading ssh_key_file {}", path.display()))?,
            ),
            None => None,
        };
        let metrics = Arc::new(telemetry::Metrics::new());
        let transport = remote::ssh::Transport::new(
            store.clone(),
            remote::ssh::Settings {
                connect_timeout: Duration::from_secs(config.ssh_connect_timeout_secs.max(1)),
                idle: Duration::from_secs(config.ssh_idle_secs),
                ..remote::ssh::Settings::default()
            },
            default_key,
            metrics.ssh(),
        );
        let plugins = Arc::new(registry);
        let vault = Arc::new(match &config.secret_key {
            Some(key) => vault::Vault::from_base64(key).context("reading secret_key")?,
            None => vault::Vault::from_file(&config.secret_key_file())?,
        });
        let remote = remote::Remote::new(
            store.clone(),
            plugins.clone(),
            transport,
            Arc::new(machines::Keyring::new(store.clone(), vault.clone())),
            config.max_forks.max(1),
            usize::try_from(config.max_execution_output_bytes).unwrap_or(usize::MAX),
        );
        let machines = machines::Machines::start(
            store.clone(),
            plugins.clone(),
            remote.clone(),
            vault.clone(),
            machines::Settings {
                default_init_group: config.default_init_group.clone(),
                poll: Duration::from_millis(config.machine_poll_ms.max(10)),
                start_timeout: Duration::from_secs(config.machine_start_timeout_secs.max(1)),
            },
        )
        .await
        .context("resuming machine work")?;
        machines.track_fleet();
        let discovery = discovery::Discovery::new(
            store.clone(),
            plugins.clone(),
            remote.clone(),
            vault.clone(),
        );
        // A release runs in the process that started it; one that process
        // left behind is over, its nodes' outcome unknown.
        let abandoned = store
            .end_abandoned_releases()
            .await
            .context("ending abandoned releases")?;
        if abandoned > 0 {
            tracing::warn!(abandoned, "ended releases a stopped DCP left running");
        }
        let shutdown = CancellationToken::new();
        let images = images::Images::start(&config, store.clone(), &shutdown)?;
        let engine = engine::Engine::start(
            store.clone(),
            engine::Builtins::new(
                store.clone(),
                machines.clone(),
                remote.clone(),
                discovery.clone(),
                images.clone(),
            ),
            engine::Settings {
                lease: Duration::from_secs(config.task_lease_secs.max(1)),
                ..engine::Settings::default()
            },
        );
        let builds = images::builds::Builds::start(
            &config,
            store.clone(),
            images.clone(),
            vault.clone(),
            shutdown.clone(),
        )
        .await
        .context("resuming image builds")?;
        let abandoned = store
            .end_abandoned_cleanups()
            .await
            .context("ending abandoned registry clean-ups")?;
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "ended registry clean-ups a stopped DCP left running"
            );
        }
        tokio::spawn(retention::sweep(
            store.clone(),
            retention::Settings::from_config(&config),
            shutdown.clone(),
        ));
        Ok(Self {
            store,
            auth,
            plugins,
            remote,
            machines,
            engine,
            discovery,
            images,
            builds,
            vault,
            metrics,
            config: Arc::new(config),
            shutdown,
        })
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// Raises the soft limit on open files to the hard one, as Go's runtime and
/// nginx's `worker_rlimit_nofile` do: every SSH connection, API client,
/// plugin file and database file is a descriptor, and the usual soft limit
/// (1024) is below what a thousand-node expand holds at once.
fn raise_open_files_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit is not a value the kernel takes for files.
    if let Some(hard) = limit.maximum
        && limit.current.is_some_and(|soft| soft < hard)
    {
        let raised = Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "could not raise the open-files limit to {hard}");
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    tracing::info!(open_files = ?now, "open-files limit");
}

/// Opens the store, creates the first admin if needed, and serves HTTP on
/// `config.bind` until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    raise_open_files_limit();
    data_dir::create_private_dir(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the database {}", store::redact_url(&url)))?;
    tracing::info!(backend = ?store.backend(), "database ready");
    let state = AppState::new(store.clone(), config.clone()).await?;
    if let Some(password) = state
        .auth
        .bootstrap_admin(config.admin_password.as_deref())
        .await
        .context("creating the first admin user")?
    {
        // Printed, not logged: log lines are shipped and kept; this is shown once.
        println!(
            "\n  Created the first user.\n    user:     admin\n    password: {password}\n  \
             It is shown only now; change it or keep it safe.\n"
        );
    }
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {}", config.bind))?;
    let addr = listener.local_addr()?;
    let limits = server::Limits {
        max_connections: config.max_connections,
        header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
    };
    let streams = state.shutdown.clone();
    let metrics_server = match config.metrics_bind {
        Some(bind) => {
            let listener = tokio::net::TcpListener::bind(bind)
                .await
                .with_context(|| format!("binding metrics_bind {bind}"))?;
            tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
            Some(tokio::spawn(server::run(
                listener,
                api::metrics_router(state.clone()),
                limits,
                streams.clone().cancelled_owned(),
            )))
        }
        None => None,
    };
    match config.ui_dir() {
        Some(dir) => tracing::info!(ui = %dir.display(), "serving the web UI"),
        None => tracing::warn!("web UI not found; run scripts/build-ui or pass --ui-dir"),
    }
    let shutdown = shutdown_signal();
    tracing::info!("DCP listening on http://{addr}");
    let remote = Arc::clone(&state.remote);
    let stop = Arc::clone(&remote);
    let machines = Arc::clone(&state.machines);
    let engine = Arc::clone(&state.engine);
    server::run(listener, app(state), limits, async move {
        shutdown.await;
        streams.cancel();
        // Machine work stops where it is (it resumes on the next
        // start); running executions end (cancelled, remote processes
        // killed), so their event streams close and HTTP can drain.
        machines.stop();
        engine.stop();
        stop.stop();
    })
    .await;
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    remote.drain(Duration::from_secs(10)).await;
    store.close().await;
    tracing::info!("DCP stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: "listening" is logged
/// before the server polls it, and a SIGTERM in between would otherwise
/// end the process at once, without draining (a supervisor stopping a
/// fresh start does exactly that).
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        tokio::select! {
            () = received(interrupt.as_mut()) => {},
            () = received(terminate.as_mut()) => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: draining in-flight requests");
    }
}

/// Waits for `signal`; forever when its handler could not be installed.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}
