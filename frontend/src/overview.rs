//! The overview, the first page after login: the fleet by provider and
//! state, the pools' health, tasks and executions under way and failed
//! lately, and quota use — each item a link to its own page. It reads
//! `/api/v1/overview` again every 10 s while the tab is visible.

use dcp_api_types::{ExecutionBrief, FleetCount, Overview, PoolHealth, QuotaUsage, TaskBrief};
use leptos::{prelude::*, task::spawn_local};
use leptos_router::components::A;

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, short_time},
    machines::every,
};

/// How often the page reads the overview again while it is visible.
const REFRESH_SECS: u64 = 10;

/// Whether the browser shows this tab (no point refreshing a hidden one).
pub(crate) fn visible() -> bool {
    web_sys::window()
        .and_then(|w| w.document())
        .is_none_or(|d| !d.hidden())
}

/// The overview page.
#[component]
pub(crate) fn OverviewPage() -> impl IntoView {
    let overview = RwSignal::new(None::<Overview>);
    let error = RwSignal::new(None::<ApiError>);
    let load = move || {
        spawn_local(async move {
            match api::overview().await {
                Ok(o) => {
                    overview.set(Some(o));
                    error.set(None);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    load();
    every(REFRESH_SECS, move || {
        if visible() {
            load();
        }
    });
    view! {
        <div class="page-head">
            <h1>"Overview"</h1>
            <p class="subtitle" id="overview-at">
                {move || overview.get().map(|o| format!(
                    "As of {} UTC, refreshed every {REFRESH_SECS} s", short_time(&o.at)
                ))}
            </p>
        </div>
        <ErrorBanner error all=true/>
        <Show when=move || overview.get().is_some() fallback=|| view! { <div class="loading">"Loading…"</div> }>
            {move || overview.get().map(|o| view! {
                <div class="overview">
                    <Fleet machines=o.machines fleet=o.fleet.clone()/>
                    <Pools total=o.pools pools=o.pool_health.clone()/>
                    <Tasks o=o.clone()/>
                    <Executions o=o.clone()/>
                    <Quotas o=o/>
                </div>
            })}
        </Show>
    }
}

/// Live machines per provider, each state a link to the machines in it.
#[component]
fn Fleet(machines: u64, fleet: Vec<FleetCount>) -> impl IntoView {
    let mut providers: Vec<(String, Vec<FleetCount>)> = Vec::new();
    for count in fleet {
        match providers.last_mut() {
            Some((provider, counts)) if *provider == count.provider => counts.push(count),
            _ => providers.push((count.provider.clone(), vec![count])),
        }
    }
    let empty = providers.is_empty();
    view! {
        <section class="overview-section" id="overview-fleet">
            <h2><A href="/machines">"Fleet"</A></h2>
            <p class="summary" data-test="fleet-total" data-count=machines.to_string()>
                {format!("{machines} live machine{}", plural(machines))}
            </p>
            <table class="table">
                <thead><tr><th>"Provider"</th><th>"Machines"</th><th>"By state"</th></tr></thead>
                <tbody>
                    {providers.into_iter().map(|(provider, counts)| {
                        let total: u64 = counts.iter().map(|c| c.machines).sum();
                        let label = provider.clone();
                        view! {
                            <tr data-test="fleet-row" data-provider=provider data-count=total.to_string()>
                                <td class="name">{label}</td>
                                <td>{total.to_string()}</td>
                                <td>
                                    {counts.into_iter().map(|c| view! {
                                        <A href=format!("/machines?state={}", c.state.as_str())>
                                            <span class=format!("badge machine-{}", c.state.as_str())
                                                data-test="fleet-state" data-state=c.state.as_str()
                                                data-count=c.machines.to_string()>
                                                {format!("{} {}", c.machines, c.state.as_str())}
                                            </span>
                                        </A>
                                    }).collect_view()}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            {empty.then(|| view! { <p class="empty">"No machines yet."</p> })}
        </section>
    }
}

/// How a pool is doing, in a word.
fn health(p: &PoolHealth) -> &'static str {
    if p.failed > 0 {
        "degraded"
    } else if p.nodes == 0 {
        "empty"
    } else if p.pending > 0 || p.removing > 0 {
        "changing"
    } else {
        "healthy"
    }
}

/// The least healthy pools with their nodes per state.
#[component]
fn Pools(total: u64, pools: Vec<PoolHealth>) -> impl IntoView {
    let shown = u64::try_from(pools.len()).unwrap_or(u64::MAX);
    let empty = pools.is_empty();
    view! {
        <section class="overview-section" id="overview-pools">
            <h2><A href="/services">"Pools"</A></h2>
            <p class="summary" data-test="pools-total" data-count=total.to_string()>
                {format!("{total} pool{}", plural(total))}
                {(total > shown).then(|| format!(", the {shown} least healthy shown"))}
            </p>
            <table class="table">
                <thead><tr>
                    <th>"Pool"</th><th>"Service"</th><th>"Health"</th><th>"Nodes"</th>
                    <th>"Running"</th><th>"Pending"</th><th>"Failed"</th><th>"Removing"</th>
                </tr></thead>
                <tbody>
                    {pools.into_iter().map(|p| {
                        let health = health(&p);
                        let name = p.name.clone();
                        view! {
                            <tr data-test="pool-health" data-name=name data-health=health
                                data-nodes=p.nodes.to_string() data-running=p.running.to_string()
                                data-pending=p.pending.to_string() data-failed=p.failed.to_string()>
                                <td class="name">
                                    <A href=format!("/pools/{}", p.id) attr:data-test="overview-pool">{p.name.clone()}</A>
                                </td>
                                <td>{p.service_name.clone()}</td>
                                <td><span class=format!("badge health-{health}")>{health}</span></td>
                                <td>{p.nodes.to_string()}</td>
                                <td>{p.running.to_string()}</td>
                                <td>{p.pending.to_string()}</td>
                                <td>{p.failed.to_string()}</td>
                                <td>{p.removing.to_string()}</td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            {empty.then(|| view! { <p class="empty">"No pools yet."</p> })}
        </section>
    }
}

/// A list of tasks, each a link to its page.
fn task_list(id: &'static str, tasks: Vec<TaskBrief>, none: &'static str) -> impl IntoView {
    let empty = tasks.is_empty();
    view! {
        <ul class="overview-list" id=id>
            {tasks.into_iter().map(|t| view! {
                <li data-test="overview-task" data-id=t.id.to_string() data-state=t.state.as_str()>
                    <A href=format!("/tasks/{}", t.id)>{format!("#{} {}", t.id, t.kind.as_str())}</A>
                    " on "
                    <A href=format!("/pools/{}", t.pool_id)>{t.pool_name.clone()}</A>
                    <span class=format!("badge state-{}", t.state.as_str())>{t.state.as_str()}</span>
                    <span class="muted">{format!(" {}", short_time(t.finished_at.as_deref().unwrap_or(&t.created_at)))}</span>
                    {(!t.reason.is_empty()).then(|| view! { <span class="muted">{format!(" · {}", t.reason)}</span> })}
                </li>
            }).collect_view()}
        </ul>
        {empty.then(|| view! { <p class="muted">{none}</p> })}
    }
}

/// Tasks under way and failed lately.
#[component]
fn Tasks(o: Overview) -> impl IntoView {
    let t = o.tasks;
    view! {
        <section class="overview-section" id="overview-tasks">
            <h2><A href="/tasks">"Tasks"</A></h2>
            <h3 data-test="tasks-active" data-count=t.active.to_string()>{format!("{} under way", t.active)}</h3>
            {task_list("overview-tasks-active", t.active_recent, "None.")}
            <h3 data-test="tasks-failed" data-count=t.failed.to_string()>{format!("{} failed in the last 24 h", t.failed)}</h3>
            {task_list("overview-tasks-failed", t.failed_recent, "None.")}
        </section>
    }
}

/// A list of executions, each a link to its page.
fn execution_list(
    id: &'static str,
    executions: Vec<ExecutionBrief>,
    none: &'static str,
) -> impl IntoView {
    let empty = executions.is_empty();
    view! {
        <ul class="overview-list" id=id>
            {executions.into_iter().map(|e| view! {
                <li data-test="overview-execution" data-id=e.id.to_string() data-state=e.state.as_str()>
                    <A href=format!("/executions/{}", e.id)>{format!("#{} {}", e.id, e.title)}</A>
                    <span class=format!("badge state-{}", e.state.as_str())>{e.state.as_str()}</span>
                    <span class="muted">{format!(" {} · {}", short_time(e.finished_at.as_deref().unwrap_or(&e.created_at)), e.created_by)}</span>
                </li>
            }).collect_view()}
        </ul>
        {empty.then(|| view! { <p class="muted">{none}</p> })}
    }
}

/// Executions under way and failed lately.
#[component]
fn Executions(o: Overview) -> impl IntoView {
    let e = o.executions;
    view! {
        <section class="overview-section" id="overview-executions">
            <h2><A href="/executions">"Executions"</A></h2>
            <h3 data-test="executions-active" data-count=e.active.to_string()>{format!("{} under way", e.active)}</h3>
            {execution_list("overview-executions-active", e.active_recent, "None.")}
            <h3 data-test="executions-failed" data-count=e.failed.to_string()>{format!("{} failed in the last 24 h", e.failed)}</h3>
            {execution_list("overview-executions-failed", e.failed_recent, "None.")}
        </section>
    }
}

/// Instance-hours used of those granted, and the templates closest to their limit.
#[component]
fn Quotas(o: Overview) -> impl IntoView {
    let q = o.quota;
    let tight = o.tightest_quotas;
    let empty = tight.is_empty();
    view! {
        <section class="overview-section" id="overview-quotas">
            <h2><A href="/quotas">"Quotas"</A></h2>
            <p class="summary" data-test="quota-total" data-used=q.used_hours.to_string() data-granted=q.quota_hours.to_string()>
                {format!(
                    "{} of {} instance-hours used over {} template{}",
                    q.used_hours, q.quota_hours, q.templates, plural(q.templates)
                )}
            </p>
            <table class="table">
                <thead><tr><th>"Template"</th><th>"Granted (h)"</th><th>"Used (h)"</th><th>"Credit (h)"</th><th>"Live machines"</th></tr></thead>
                <tbody>
                    {tight.into_iter().map(|t: QuotaUsage| {
                        let (name, exhausted) = (t.template_name.clone(), t.credit_hours <= 0);
                        view! {
                        <tr data-test="overview-quota" data-name=name class:exhausted=exhausted>
                            <td class="name"><A href=format!("/machines?template_id={}", t.template_id)>{t.template_name.clone()}</A></td>
                            <td>{t.quota_hours.to_string()}</td>
                            <td>{t.used_hours.to_string()}</td>
                            <td>{t.credit_hours.to_string()}</td>
                            <td>{t.live_machines.to_string()}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
            {empty.then(|| view! { <p class="empty">"No machine templates yet."</p> })}
        </section>
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}
