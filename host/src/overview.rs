//! The overview: what an operator wants to see first — the fleet, the
//! pools' health, work under way, what failed lately and quota use — read
//! with a fixed number of aggregate queries, however large the installation.

use time::{Duration, OffsetDateTime};

use crate::store::{
    self, Activity, ExecutionBriefRecord, FleetCountRecord, PoolHealthRecord, QuotaTotalsRecord,
    Store, TaskBriefRecord, TemplateRecord,
};

/// How far back a failure counts as recent.
pub const RECENT: Duration = Duration::hours(24);
/// How many tasks or executions each list holds.
pub const LIST_LIMIT: u32 = 10;
/// How many pools the health list holds.
pub const POOL_LIMIT: u32 = 20;
/// How many templates the quota list holds.
pub const QUOTA_LIMIT: u32 = 10;

/// The overview at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// When it was read.
    pub at: OffsetDateTime,
    /// Failures from here on are recent.
    pub recent_since: OffsetDateTime,
    /// Live machines per provider and state.
    pub fleet: Vec<FleetCountRecord>,
    /// Pools in all.
    pub pools: u64,
    /// The least healthy pools, with their nodes per state.
    pub pool_health: Vec<PoolHealthRecord>,
    /// Tasks under way and failed lately.
    pub tasks: Activity<TaskBriefRecord>,
    /// Executions under way and failed lately.
    pub executions: Activity<ExecutionBriefRecord>,
    /// Quotas over every template.
    pub quota: QuotaTotalsRecord,
    /// The templates with the least credit left.
    pub tightest_quotas: Vec<TemplateRecord>,
}

impl Overview {
    /// Reads the overview now.
    pub async fn read(store: &Store) -> Result<Self, store::Error> {
        let at = OffsetDateTime::now_utc();
        let recent_since = at - RECENT;
        let (pools, pool_health) = store.pool_health(POOL_LIMIT).await?;
        Ok(Self {
            at,
            recent_since,
            fleet: store.fleet_counts().await?,
            pools,
            pool_health,
            tasks: store.task_activity(recent_since, LIST_LIMIT).await?,
            executions: store.execution_activity(recent_since, LIST_LIMIT).await?,
            quota: store.quota_totals().await?,
            tightest_quotas: store.templates_by_credit(QUOTA_LIMIT).await?,
        })
    }

    /// Live machines in all.
    #[must_use]
    pub fn machines(&self) -> u64 {
        self.fleet.iter().map(|f| f.machines).sum()
    }
}
