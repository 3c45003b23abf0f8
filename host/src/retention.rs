//! Retention: old history is deleted so the database does not grow without
//! bound. Executions (with every host's output), task step logs and the
//! discovery operation log's changes (with the snapshots only they needed)
//! that ended longer ago than the configured age are removed by a periodic
//! sweep. Every replica may sweep: the deletes only touch rows that ended
//! before a cutoff, so running them twice or at once is harmless, and
//! nothing still running ever matches.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::{Config, store::Store};

/// How often the sweep runs.
const EVERY: Duration = Duration::from_secs(3600);

/// How long history is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Finished executions older than this are deleted; `None` keeps them.
    pub executions: Option<Duration>,
    /// Step logs of finished tasks older than this are cleared; `None` keeps them.
    pub task_logs: Option<Duration>,
    /// Discovery changes that ended longer ago than this are deleted;
    /// `None` keeps them.
    pub changes: Option<Duration>,
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Executions deleted, with their hosts' output.
    pub executions: u64,
    /// Tasks whose step logs were cleared.
    pub tasks: u64,
    /// Discovery changes deleted.
    pub changes: u64,
}

impl Settings {
    /// The retention the configuration asks for (0 days keeps forever).
    #[must_use]
    pub fn from_config(config: &Config) -> Self {
        let days = |d: u32| (d > 0).then(|| Duration::from_secs(u64::from(d) * 86_400));
        Self {
            executions: days(config.execution_retention_days),
            task_logs: days(config.task_log_retention_days),
            changes: days(config.discovery_change_retention_days),
        }
    }
}

/// Deletes what `settings` no longer keeps as of `now`.
pub async fn sweep_once(
    store: &Store,
    settings: Settings,
    now: OffsetDateTime,
) -> Result<Swept, crate::store::Error> {
    let mut swept = Swept::default();
    if let Some(age) = settings.executions {
        swept.executions = store.delete_executions_ended_before(now - age).await?;
    }
    if let Some(age) = settings.task_logs {
        swept.tasks = store.clear_task_logs_ended_before(now - age).await?;
    }
    if let Some(age) = settings.changes {
        swept.changes = store.delete_changes_ended_before(now - age).await?;
    }
    Ok(swept)
}

/// Sweeps every [`EVERY`] until `shutdown`.
pub(crate) async fn sweep(store: Store, settings: Settings, shutdown: CancellationToken) {
    if settings == Settings::default() {
        return;
    }
    loop {
        match sweep_once(&store, settings, OffsetDateTime::now_utc()).await {
            Ok(swept) if swept == Swept::default() => {}
            Ok(Swept {
                executions,
                tasks,
                changes,
            }) => {
                tracing::info!(
                    executions,
                    tasks,
                    changes,
                    "deleted history past its retention"
                );
            }
            Err(e) => tracing::warn!("deleting old history failed: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
