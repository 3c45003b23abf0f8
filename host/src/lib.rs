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
pub mod orchestration;
pub mod plugins;
pub mod store;
pub mod telemetry;
pub mod ui;
pub mod validate;

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;

pub use crate::{config::Config, store::Store};

/// What every request handler can reach. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// Passwords, sessions and tokens.
    pub auth: auth::Auth,
    /// Prometheus metrics.
    pub metrics: Arc<telemetry::Metrics>,
    /// The configuration the server started with.
    pub config: Arc<Config>,
}

impl AppState {
    /// Builds the state over an open (migrated) store.
    pub async fn new(store: Store, config: Config) -> anyhow::Result<Self> {
        let auth = auth::Auth::new(store.clone(), Duration::from_secs(config.session_ttl_secs))
            .await
            .context("setting up authentication")?;
        Ok(Self {
            store,
            auth,
            metrics: Arc::new(telemetry::Metrics::new()),
            config: Arc::new(config),
        })
    }
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    api::router(state)
}

/// Opens the store, creates the first admin if needed, and serves HTTP on
/// `config.bind` until SIGINT or SIGTERM, then drains in-flight requests.
pub async fn serve(config: Config) -> anyhow::Result<()> {
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
    match config.ui_dir() {
        Some(dir) => tracing::info!(ui = %dir.display(), "serving the web UI"),
        None => tracing::warn!("web UI not found; run scripts/build-ui or pass --ui-dir"),
    }
    tracing::info!("DCP listening on http://{addr}");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    store.close().await;
    tracing::info!("DCP stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
