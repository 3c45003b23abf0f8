//! `/api/v1/overview`: the fleet, the pools' health, work under way, what
//! failed lately and quota use, in one answer.

use axum::extract::State;
use dcp_api_types::{
    ExecutionActivity, ExecutionBrief, FleetCount, Overview, PoolHealth, QuotaTotals, TaskActivity,
    TaskBrief,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AppState, Result, extract::Json, rfc3339};
use crate::{machines::quota_to_api, overview, store};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_overview))
}

/// The overview: live machines per provider and state, the 20 least
/// healthy pools with their nodes per state, tasks and executions under way
/// and those that failed in the last 24 hours (the 10 newest of each, with
/// counts), and instance-hour quotas (totals and the 10 templates with the
/// least credit). Computed from grouped counts, so it costs the same for any
/// fleet size.
#[utoipa::path(
    get, path = "/overview", tag = "overview",
    responses(
        (status = 200, description = "The overview now", body = Overview),
    )
)]
async fn get_overview(State(state): State<AppState>) -> Result<Json<Overview>> {
    Ok(Json(to_api(overview::Overview::read(&state.store).await?)))
}

fn to_api(o: overview::Overview) -> Overview {
    let machines = o.machines();
    Overview {
        at: rfc3339(o.at),
        recent_since: rfc3339(o.recent_since),
        machines,
        fleet: o
            .fleet
            .into_iter()
            .map(|f| FleetCount {
                provider: f.provider,
                state: f.state,
                machines: f.machines,
            })
            .collect(),
        pools: o.pools,
        pool_health: o
            .pool_health
            .into_iter()
            .map(|p| PoolHealth {
                id: p.id,
                name: p.name,
                service_id: p.service_id,
                service_name: p.service_name,
                nodes: p.nodes,
                pending: p.pending,
                running: p.running,
                failed: p.failed,
                removing: p.removing,
            })
            .collect(),
        tasks: TaskActivity {
            active: o.tasks.active,
            active_recent: o.tasks.active_recent.into_iter().map(task).collect(),
            failed: o.tasks.failed,
            failed_recent: o.tasks.failed_recent.into_iter().map(task).collect(),
        },
        executions: ExecutionActivity {
            active: o.executions.active,
            active_recent: o
                .executions
                .active_recent
                .into_iter()
                .map(execution)
                .collect(),
            failed: o.executions.failed,
            failed_recent: o
                .executions
                .failed_recent
                .into_iter()
                .map(execution)
                .collect(),
        },
        quota: QuotaTotals {
            templates: o.quota.templates,
            quota_hours: o.quota.quota_hours,
            used_hours: o.quota.used_hours,
        },
        tightest_quotas: o.tightest_quotas.iter().map(quota_to_api).collect(),
    }
}

fn task(t: store::TaskBriefRecord) -> TaskBrief {
    TaskBrief {
        id: t.id,
        kind: t.kind,
        pool_id: t.pool_id,
        pool_name: t.pool_name,
        state: t.state,
        reason: t.reason,
        created_at: rfc3339(t.created_at),
        finished_at: t.finished_at.map(rfc3339),
    }
}

fn execution(e: store::ExecutionBriefRecord) -> ExecutionBrief {
    ExecutionBrief {
        id: e.id,
        title: e.title,
        state: e.state,
        created_by: e.created_by,
        created_at: rfc3339(e.created_at),
        finished_at: e.finished_at.map(rfc3339),
    }
}
