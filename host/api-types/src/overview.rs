//! `GET /api/v1/overview`: the page an operator opens first.

use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

use crate::{ExecutionState, MachineState, QuotaUsage, TaskKind, TaskState};

/// The whole installation at a glance: the fleet, the pools' health, work
/// under way and what failed lately, and quota use. Every list is bounded;
/// the counts beside them say how many there are in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Overview {
    /// When it was read (RFC 3339).
    pub at: String,
    /// "Recently" (failed tasks and executions) starts here (RFC 3339): 24 hours before `at`.
    pub recent_since: String,
    /// Live (not released) machines in all.
    pub machines: u64,
    /// Live machines per provider and state, by provider then state.
    pub fleet: Vec<FleetCount>,
    /// Pools in all.
    pub pools: u64,
    /// At most 20 pools with their nodes per state, the least healthy
    /// first (most failed nodes, then pending, then removing), then by name.
    pub pool_health: Vec<PoolHealth>,
    /// Tasks under way and tasks that failed lately.
    pub tasks: TaskActivity,
    /// Executions under way and executions that failed lately.
    pub executions: ExecutionActivity,
    /// Instance-hour quotas over every template.
    pub quota: QuotaTotals,
    /// At most 10 templates with the least credit left, least first.
    pub tightest_quotas: Vec<QuotaUsage>,
}

/// How many live machines one provider has in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FleetCount {
    /// The provider plugin, or `adopted`.
    pub provider: String,
    /// The state.
    pub state: MachineState,
    /// Machines (≥ 1).
    pub machines: u64,
}

/// A pool and its nodes per state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PoolHealth {
    /// The pool.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its service.
    pub service_id: i64,
    /// The service's name.
    pub service_name: String,
    /// Nodes in all.
    pub nodes: u64,
    /// Nodes the service has not been started on.
    pub pending: u64,
    /// Nodes running the service.
    pub running: u64,
    /// Nodes whose last step failed.
    pub failed: u64,
    /// Nodes a task is taking out of the pool.
    pub removing: u64,
}

/// Tasks under way and tasks that failed since `recent_since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskActivity {
    /// Tasks pending, running or paused.
    pub active: u64,
    /// The 10 newest of them, newest first.
    pub active_recent: Vec<TaskBrief>,
    /// Tasks that ended failed or partially failed since `recent_since`.
    pub failed: u64,
    /// The 10 that ended last, last first.
    pub failed_recent: Vec<TaskBrief>,
}

/// A task in the overview; its page is `/tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TaskBrief {
    /// Id.
    pub id: i64,
    /// What it does.
    pub kind: TaskKind,
    /// The pool.
    pub pool_id: i64,
    /// The pool's name.
    pub pool_name: String,
    /// Where it stands.
    pub state: TaskState,
    /// Why it ended so, when it did.
    pub reason: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// Executions under way and executions that failed since `recent_since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionActivity {
    /// Executions pending or running.
    pub active: u64,
    /// The 10 newest of them, newest first.
    pub active_recent: Vec<ExecutionBrief>,
    /// Executions that ended failed or partially failed since `recent_since`.
    pub failed: u64,
    /// The 10 that ended last, last first.
    pub failed_recent: Vec<ExecutionBrief>,
}

/// An execution in the overview; its page is `/executions/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ExecutionBrief {
    /// Id.
    pub id: i64,
    /// What ran.
    pub title: String,
    /// Where it stands.
    pub state: ExecutionState,
    /// Who started it.
    pub created_by: String,
    /// When it was accepted (RFC 3339).
    pub created_at: String,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

/// Instance-hour quotas summed over every machine template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct QuotaTotals {
    /// Machine templates.
    pub templates: u64,
    /// Instance-hours granted.
    pub quota_hours: i64,
    /// Instance-hours charged at release.
    pub used_hours: i64,
}
