//! A cloud account's own load balancers (OpenDCP's SLB pages): the list of
//! a region's load balancers and creating one; one load balancer with its
//! listeners (started, stopped, white-listed, deleted), its backend
//! servers' health on each listener — read again every few seconds while
//! the page is shown — and the discovery units serving through it.

use dcp_api_types::{
    Account, BackendHealth, BackendServer, Choice, CloudLoadBalancer, CloudLoadBalancerDetail,
    CloudLoadBalancerInput, LbAddressType, LbStatus, LbTargetStatus, Listener, ListenerHealthCheck,
    ListenerInput, ListenerProtocol, ListenerStatus, LookupKind, LookupQuery, Scheduler,
    WhiteListInput,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{
    NavigateOptions,
    components::A,
    hooks::{use_navigate, use_params_map, use_query_map},
};

use crate::{
    api::{self, ApiError, CloudLb as At},
    components::{Confirm, ErrorBanner, Field, Modal, load_error, short_time},
    machines::{every, idempotency_key},
    overview::visible,
    templates::{Labelled, optional, whole},
};

/// How often a load balancer's page reads it again (backends' health
/// changes on its own).
const REFRESH_SECS: u64 = 3;

/// The list page of an account's region (`?region=` makes it shareable).
fn list_url(account: i64, region: &str) -> String {
    format!("/accounts/{account}/load-balancers?region={region}")
}

/// One load balancer's page.
fn detail_url(at: &At) -> String {
    format!(
        "/accounts/{}/load-balancers/{}?region={}",
        at.account, at.lb, at.region
    )
}

fn status_word(status: LbStatus) -> &'static str {
    match status {
        LbStatus::Active => "active",
        LbStatus::Inactive => "inactive",
        LbStatus::Locked => "locked",
    }
}

fn address_type_word(kind: LbAddressType) -> &'static str {
    match kind {
        LbAddressType::Internet => "internet",
        LbAddressType::Intranet => "intranet",
    }
}

fn protocol_word(protocol: ListenerProtocol) -> &'static str {
    match protocol {
        ListenerProtocol::Http => "http",
        ListenerProtocol::Tcp => "tcp",
    }
}

fn listener_status_word(status: ListenerStatus) -> &'static str {
    match status {
        ListenerStatus::Running => "running",
        ListenerStatus::Stopped => "stopped",
        ListenerStatus::Starting => "starting",
        ListenerStatus::Configuring => "configuring",
    }
}

fn health_word(health: BackendHealth) -> &'static str {
    match health {
        BackendHealth::Normal => "normal",
        BackendHealth::Abnormal => "abnormal",
        BackendHealth::Unavailable => "unavailable",
    }
}

/// A load balancer's state as a badge (`data-test="lb-status"`).
fn status_badge(status: LbStatus) -> impl IntoView + use<> {
    let word = status_word(status);
    view! { <span class=format!("badge lb-{word}") data-test="lb-status" data-status=word>{word}</span> }
}

/// "—" for an empty fact.
fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "—".to_owned()
    } else {
        text.to_owned()
    }
}

/// How a listener checks its backends, in a few words.
fn health_check_text(protocol: ListenerProtocol, check: &ListenerHealthCheck) -> String {
    if protocol == ListenerProtocol::Http && !check.enabled {
        return "off".to_owned();
    }
    let what = match protocol {
        ListenerProtocol::Http => format!("GET {}", check.uri),
        ListenerProtocol::Tcp => "connect".to_owned(),
    };
    format!(
        "{what} every {} s; healthy after {}, unhealthy after {}",
        check.interval_seconds, check.healthy_threshold, check.unhealthy_threshold
    )
}

/// A white list as typed: one entry a line, blank lines skipped.
fn entries_of(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `/accounts/:id/load-balancers`.
#[component]
pub(crate) fn LoadBalancersPage() -> impl IntoView {
    let params = use_params_map();
    let account =
        Memo::new(move |_| params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok())));
    move || match account.get() {
        Some(account) => view! { <LoadBalancers account/> }.into_any(),
        None => {
            let error = RwSignal::new(Some(ApiError::local("no such account")));
            view! { <ErrorBanner error all=true/> }.into_any()
        }
    }
}

/// The load balancer being created.
#[derive(Debug, Clone, Copy)]
struct Creating {
    name: RwSignal<String>,
    address_type: RwSignal<String>,
    subnet: RwSignal<String>,
    spec: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    busy: RwSignal<bool>,
    /// The last request sent and its idempotency key: sent again as it
    /// was (a double click, a retry), it keeps the key, so the cloud makes
    /// one load balancer; changed, it gets a key of its own.
    sent: StoredValue<Option<(CloudLoadBalancerInput, String)>>,
}

impl Creating {
    fn new() -> Self {
        Self {
            name: RwSignal::new(String::new()),
            address_type: RwSignal::new("intranet".to_owned()),
            subnet: RwSignal::new(String::new()),
            spec: RwSignal::new(String::new()),
            error: RwSignal::new(None),
            busy: RwSignal::new(false),
            sent: StoredValue::new(None),
        }
    }

    fn input(&self, region: Option<String>) -> Result<CloudLoadBalancerInput, ApiError> {
        let region = region.ok_or_else(|| ApiError::invalid("region", "choose a region first"))?;
        let address_type = match self.address_type.get_untracked().as_str() {
            "internet" => LbAddressType::Internet,
            _ => LbAddressType::Intranet,
        };
        Ok(CloudLoadBalancerInput {
            region,
            name: self.name.get_untracked().trim().to_owned(),
            address_type,
            subnet: optional(&self.subnet.get_untracked()),
            spec: optional(&self.spec.get_untracked()),
        })
    }

    /// The key for `input`: the last one's when it is the same request.
    fn key_for(&self, input: &CloudLoadBalancerInput) -> String {
        if let Some((sent, key)) = self.sent.get_value()
            && &sent == input
        {
            return key;
        }
        let key = idempotency_key();
        self.sent.set_value(Some((input.clone(), key.clone())));
        key
    }
}

/// Account `account`'s load balancers in the chosen region.
#[component]
fn LoadBalancers(account: i64) -> impl IntoView {
    let query = use_query_map();
    let navigate = StoredValue::new_local(use_navigate());
    let loaded_account = LocalResource::new(move || api::account(account));
    let account_error = load_error(loaded_account);
    let name = move || {
        loaded_account
            .get()
            .and_then(Result::ok)
            .map_or_else(|| format!("account #{account}"), |a: Account| a.name)
    };
    let regions = LocalResource::new(move || async move {
        api::lookup(account, LookupKind::Regions, &LookupQuery::default()).await
    });
    let regions_error = load_error(regions);
    let region_list =
        Signal::derive(move || regions.get().and_then(Result::ok).unwrap_or_default());
    // The address's region, else the cloud's first.
    let region = Memo::new(move |_| {
        query
            .with(|q| q.get("region"))
            .filter(|r| !r.is_empty())
            .or_else(|| region_list.with(|list| list.first().map(|c: &Choice| c.id.clone())))
    });
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let region = region.get();
        reload.track();
        async move {
            match region {
                Some(region) => api::cloud_load_balancers(account, &region).await.map(Some),
                None => Ok(None),
            }
        }
    });
    let list_error = load_error(listing);
    let rows = Signal::derive(move || listing.get().and_then(Result::ok).flatten());
    let creating = RwSignal::new(None::<Creating>);
    let pick_region = move |picked: String| {
        navigate.with_value(|go| {
            go(
                &list_url(account, &picked),
                NavigateOptions {
                    replace: true,
                    ..NavigateOptions::default()
                },
            );
        });
    };

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(c) = creating.get_untracked() else {
            return;
        };
        if c.busy.get_untracked() {
            return;
        }
        let input = match c.input(region.get_untracked()) {
            Ok(input) => input,
            Err(e) => return c.error.set(Some(e)),
        };
        let key = c.key_for(&input);
        c.busy.set(true);
        spawn_local(async move {
            let result = api::create_cloud_load_balancer(account, &input, &key).await;
            c.busy.set(false);
            match result {
                Ok(_) => {
                    creating.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => c.error.set(Some(e)),
            }
        });
    };

    view! {
        <p class="crumbs"><A href="/accounts">"‹ Cloud accounts"</A></p>
        <div class="page-head">
            <h1 id="lbs-account">{move || format!("Load balancers of {}", name())}</h1>
            <p class="subtitle">
                "The account's own load balancers in its cloud: their listeners, white lists and backends' health."
            </p>
        </div>
        <div class="toolbar">
            <select id="lb-region" data-test="lb-region" on:change=move |ev| pick_region(event_target_value(&ev))>
                {move || {
                    let mut list = region_list.get();
                    // A region in the address the cloud does not list still shows.
                    if let Some(current) = region.get()
                        && !list.iter().any(|c| c.id == current)
                    {
                        list.insert(0, Choice { id: current.clone(), name: current, details: serde_json::Value::Null });
                    }
                    list.into_iter().map(|c| {
                        let label = if c.name.is_empty() || c.name == c.id { c.id.clone() } else { format!("{} ({})", c.name, c.id) };
                        let picked = c.id.clone();
                        view! { <option value=c.id selected=move || region.get().as_deref() == Some(picked.as_str())>{label}</option> }
                    }).collect_view()
                }}
            </select>
            <button id="new-load-balancer" data-test="new-load-balancer" class="primary"
                on:click=move |_| creating.set(Some(Creating::new()))>"New load balancer"</button>
        </div>
        <ErrorBanner error=account_error all=true/>
        <ErrorBanner error=regions_error all=true/>
        <ErrorBanner error=list_error all=true/>
        <table id="load-balancers-table" class="table">
            <thead>
                <tr>
                    <th>"Name"</th><th>"Id"</th><th>"Address"</th><th>"Address type"</th>
                    <th>"Status"</th><th>"Spec"</th><th>"Created (UTC)"</th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=move || rows.get().unwrap_or_default()
                    key=|lb| (lb.id.clone(), lb.name.clone(), status_word(lb.status), lb.address.clone(), lb.spec.clone())
                    children=move |lb: CloudLoadBalancer| {
                        let at = At { account, region: lb.region.clone(), lb: lb.id.clone() };
                        let shown = if lb.name.is_empty() { lb.id.clone() } else { lb.name.clone() };
                        view! {
                            <tr data-test="lb-row" data-id=lb.id.clone() data-name=lb.name.clone()
                                data-status=status_word(lb.status)>
                                <td class="name"><A href=detail_url(&at) attr:data-test="lb-link">{shown}</A></td>
                                <td><code>{lb.id.clone()}</code></td>
                                <td><code>{or_dash(&lb.address)}</code></td>
                                <td>{address_type_word(lb.address_type)}</td>
                                <td>{status_badge(lb.status)}</td>
                                <td>{or_dash(&lb.spec)}</td>
                                <td>{if lb.created_at.is_empty() { "—".to_owned() } else { short_time(&lb.created_at) }}</td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || rows.get().is_some_and(|r| r.is_empty())>
            <p class="empty">"No load balancers in this region."</p>
        </Show>

        {move || creating.get().map(|c| {
            let shown: Vec<String> = ["name", "address_type", "subnet", "spec"].map(str::to_owned).into();
            view! {
                <Modal title=Signal::derive(move || format!("New load balancer in {}", region.get().unwrap_or_default()))
                    on_close=Callback::new(move |()| creating.set(None))>
                    <form id="lb-form" data-test="lb-form" on:submit=save>
                        <ErrorBanner error=c.error all=true shown/>
                        <Field field="name" id_prefix="lb" label="Name" value=c.name error=c.error
                            hint="1–80 characters, e.g. web-internal"/>
                        <Labelled field="address_type" id="lb-address-type" label="Address type" error=c.error
                            hint="Internet: a public address; intranet: inside the cloud network only.">
                            <select id="lb-address-type" data-test="lb-address-type"
                                on:change=move |ev| c.address_type.set(event_target_value(&ev))>
                                {["intranet", "internet"].map(|kind| view! {
                                    <option value=kind selected=move || c.address_type.get() == kind>{kind}</option>
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <div class="row">
                            <Field field="subnet" id_prefix="lb" label="Subnet" value=c.subnet error=c.error
                                hint="Optional: the vswitch of an intranet one in a VPC."/>
                            <Field field="spec" id_prefix="lb" label="Spec" value=c.spec error=c.error
                                hint="Optional, e.g. slb.s1.small; none: shared."/>
                        </div>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| creating.set(None)>"Cancel"</button>
                            <button id="lb-save" data-test="lb-save" type="submit" class="primary"
                                disabled=move || c.busy.get()>
                                {move || if c.busy.get() { "Creating…" } else { "Create" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })}
    }
}

/// `/accounts/:id/load-balancers/:lb?region=R`.
#[component]
pub(crate) fn LoadBalancerPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let at = Memo::new(move |_| {
        let account = params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()))?;
        let lb = params.with(|p| p.get("lb")).filter(|lb| !lb.is_empty())?;
        let region = query.with(|q| q.get("region")).filter(|r| !r.is_empty())?;
        Some(At {
            account,
            region,
            lb,
        })
    });
    move || match at.get() {
        Some(at) => view! { <LoadBalancer at/> }.into_any(),
        None => {
            let error = RwSignal::new(Some(ApiError::local(
                "no such load balancer: the address names the account, the load balancer and ?region=",
            )));
            view! { <ErrorBanner error all=true/> }.into_any()
        }
    }
}

/// A listener about to be deleted.
type DoomedListener = (At, u16);

fn listener_deletion_question((_, port): &DoomedListener) -> String {
    format!("Delete the listener on port {port}? Connections to it stop.")
}

/// Load balancer `at`'s page.
#[component]
fn LoadBalancer(at: At) -> impl IntoView {
    let at = StoredValue::new(at);
    let detail = RwSignal::new(None::<CloudLoadBalancerDetail>);
    let error = RwSignal::new(None::<ApiError>);
    // Each read is numbered: an answer older than the newest asked is dropped.
    let asked = StoredValue::new(0_u32);
    // Called after an action's answer too, when the page may be gone.
    let load = move || {
        let generation = asked.try_update_value(|n| {
            *n += 1;
            *n
        });
        let (Some(generation), Some(at)) = (generation, at.try_get_value()) else {
            return;
        };
        spawn_local(async move {
            let result = api::cloud_load_balancer(&at).await;
            if asked.try_get_value() != Some(generation) {
                return;
            }
            match result {
                Ok(fresh) => {
                    error.try_set(None);
                    // Only a change redraws: the page stays put between reads.
                    detail.try_maybe_update(|d| {
                        let changed = d.as_ref() != Some(&fresh);
                        if changed {
                            *d = Some(fresh);
                        }
                        (changed, ())
                    });
                }
                Err(e) => {
                    error.try_set(Some(e));
                }
            }
        });
    };
    load();
    every(REFRESH_SECS, move || {
        if visible() {
            load();
        }
    });

    let action_error = RwSignal::new(None::<ApiError>);
    let busy = RwSignal::new(false);
    // Runs a change, then reads the load balancer again.
    let act = move |change: Change| {
        busy.set(true);
        action_error.set(None);
        let at = at.get_value();
        spawn_local(async move {
            let result = match change {
                Change::Status(status) => api::set_cloud_load_balancer_status(&at, status).await,
                Change::Running(port, running) => {
                    api::set_cloud_listener_running(&at, port, running).await
                }
            };
            busy.try_set(false);
            if let Err(e) = result {
                action_error.try_set(Some(e));
            }
            load();
        });
    };
    let deleting = RwSignal::new(None::<At>);
    let deleting_listener = RwSignal::new(None::<DoomedListener>);
    let adding = RwSignal::new(None::<NewListener>);
    let white_list = RwSignal::new(None::<WhiteListEditor>);
    let navigate = StoredValue::new_local(use_navigate());
    let back = at.with_value(|at| list_url(at.account, &at.region));

    view! {
        <p class="crumbs"><A href=back.clone()>"‹ Load balancers"</A></p>
        <ErrorBanner error all=true/>
        {move || detail.get().map(|d| {
            let lb = d.load_balancer;
            let region = at.with_value(|at| at.region.clone());
            let status = lb.status;
            view! {
                <div class="page-head">
                    <h1 id="lb-title">{if lb.name.is_empty() { lb.id.clone() } else { lb.name.clone() }}</h1>
                    <p class="subtitle">
                        <span id="lb-status" class=format!("badge lb-{}", status_word(status))
                            data-status=status_word(status)>{status_word(status)}</span>
                        <span class="muted">{format!(" {region} · refreshing every {REFRESH_SECS} s")}</span>
                    </p>
                </div>
                <div class="toolbar">
                    {match status {
                        LbStatus::Active => view! {
                            <button id="lb-toggle-status" data-test="lb-toggle-status" disabled=move || busy.get()
                                on:click=move |_| act(Change::Status(LbTargetStatus::Inactive))>"Stop"</button>
                        }.into_any(),
                        LbStatus::Inactive => view! {
                            <button id="lb-toggle-status" data-test="lb-toggle-status" class="primary" disabled=move || busy.get()
                                on:click=move |_| act(Change::Status(LbTargetStatus::Active))>"Activate"</button>
                        }.into_any(),
                        LbStatus::Locked => view! {
                            <span class="muted">"Locked by the cloud: it cannot be changed."</span>
                        }.into_any(),
                    }}
                    <button id="lb-delete" data-test="lb-delete" class="ghost danger"
                        on:click=move |_| deleting.set(Some(at.get_value()))>"Delete"</button>
                </div>
                <dl class="facts" id="lb-facts">
                    <dt>"Id"</dt><dd data-test="lb-id"><code>{lb.id.clone()}</code></dd>
                    <dt>"Address"</dt><dd data-test="lb-address"><code>{or_dash(&lb.address)}</code></dd>
                    <dt>"Address type"</dt><dd>{address_type_word(lb.address_type)}</dd>
                    <dt>"Status"</dt><dd>{status_badge(status)}</dd>
                    <dt>"VPC"</dt><dd><code>{if lb.vpc_id.is_empty() { "classic network".to_owned() } else { lb.vpc_id.clone() }}</code></dd>
                    <dt>"Spec"</dt><dd>{if lb.spec.is_empty() { "shared".to_owned() } else { lb.spec.clone() }}</dd>
                    <dt>"Created"</dt><dd>{if lb.created_at.is_empty() { "—".to_owned() } else { short_time(&lb.created_at) }}</dd>
                    <dt>"Served by"</dt>
                    <dd data-test="lb-served-by">
                        {if d.served_by.is_empty() {
                            "no discovery unit".into_any()
                        } else {
                            d.served_by.into_iter().map(|u| view! {
                                <A href=format!("/lb-units/{}", u.id) attr:class="served-by" attr:data-test="lb-unit-link">{u.name}</A>" "
                            }).collect_view().into_any()
                        }}
                    </dd>
                </dl>
            }
        })}
        <ErrorBanner error=action_error all=true/>
        <Show when=move || detail.with(Option::is_some)>
            <div class="section-head">
                <h2>"Listeners"</h2>
                <span class="spacer"></span>
                <button id="new-listener" data-test="new-listener" class="primary"
                    on:click=move |_| adding.set(Some(NewListener::new()))>"New listener"</button>
            </div>
            <table id="listeners-table" class="table">
                <thead>
                    <tr>
                        <th>"Port"</th><th>"Protocol"</th><th>"Backend port"</th><th>"Scheduler"</th>
                        <th>"Health check"</th><th>"Status"</th><th>"Access control"</th><th class="actions"></th>
                    </tr>
                </thead>
                <tbody>
                    {move || detail.with(|d| d.as_ref().map(|d| d.listeners.clone())).unwrap_or_default().into_iter().map(|l: Listener| {
                        let port = l.port;
                        let word = listener_status_word(l.status);
                        let running = matches!(l.status, ListenerStatus::Running | ListenerStatus::Starting);
                        let (enforced, entries) = (l.access_control, l.white_list.clone());
                        view! {
                            <tr data-test="listener-row" data-port=port.to_string() data-status=word>
                                <td class="name">{port.to_string()}</td>
                                <td>{protocol_word(l.protocol)}</td>
                                <td>{l.backend_port.to_string()}</td>
                                <td>{l.scheduler.clone()}</td>
                                <td class="muted">{health_check_text(l.protocol, &l.health_check)}</td>
                                <td><span class=format!("badge listener-{word}") data-test="listener-status" data-status=word>{word}</span></td>
                                <td data-test="listener-access" data-enforced=l.access_control.to_string()>
                                    {if l.access_control { "white list enforced" } else { "open to all" }}
                                    <ul class="white-list" data-test="white-list">
                                        {l.white_list.iter().map(|e| view! { <li><code>{e.clone()}</code></li> }).collect_view()}
                                    </ul>
                                </td>
                                <td class="actions">
                                    <button class="ghost listener-toggle" data-test="listener-toggle" disabled=move || busy.get()
                                        on:click=move |_| act(Change::Running(port, !running))>
                                        {if running { "Stop" } else { "Start" }}
                                    </button>
                                    <button class="ghost edit-white-list" data-test="edit-white-list"
                                        on:click=move |_| white_list.set(Some(WhiteListEditor::new(port, enforced, &entries)))>"White list"</button>
                                    <button class="ghost danger delete-listener" data-test="delete-listener"
                                        on:click=move |_| deleting_listener.set(Some((at.get_value(), port)))>"Delete"</button>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <Show when=move || detail.with(|d| d.as_ref().is_some_and(|d| d.listeners.is_empty()))>
                <p class="empty">"No listeners yet: add one to take connections."</p>
            </Show>

            <div class="section-head">
                <h2>"Backends"</h2>
            </div>
            <table id="backends-table" class="table">
                <thead>
                    <tr><th>"Instance"</th><th>"Address"</th><th>"Weight"</th><th>"Health by listener"</th></tr>
                </thead>
                <tbody>
                    {move || detail.with(|d| d.as_ref().map(|d| d.backends.clone())).unwrap_or_default().into_iter().map(|b: BackendServer| {
                        let shown = if b.address.is_empty() { "gone".to_owned() } else { b.address.clone() };
                        view! {
                            <tr data-test="backend-row" data-instance=b.instance_id.clone() data-address=b.address>
                                <td class="name"><code>{b.instance_id.clone()}</code></td>
                                <td><code>{shown}</code></td>
                                <td>{b.weight.to_string()}</td>
                                <td>
                                    {if b.health.is_empty() {
                                        view! { <span class="muted">"no listener checks it"</span> }.into_any()
                                    } else {
                                        b.health.iter().map(|h| {
                                            let word = health_word(h.health);
                                            view! {
                                                <span class=format!("badge health-{word}") data-test="backend-health"
                                                    data-port=h.port.to_string() data-health=word>{format!("{}: {word}", h.port)}</span>
                                            }
                                        }).collect_view().into_any()
                                    }}
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <Show when=move || detail.with(|d| d.as_ref().is_some_and(|d| d.backends.is_empty()))>
                <p class="empty">"No backend servers: discovery bindings register them, or add them in the cloud."</p>
            </Show>
        </Show>

        <ListenerDialog at adding on_added=Callback::new(move |()| load())/>
        <WhiteListDialog at editing=white_list on_saved=Callback::new(move |()| load())/>
        <Confirm title="Delete load balancer" target=deleting
            question=|at: &At| format!("Delete load balancer {} with its listeners? This cannot be undone.", at.lb)
            action="Delete" id="confirm-delete" danger=true
            run=|at: At| async move { api::delete_cloud_load_balancer(&at).await }
            on_done=Callback::new(move |()| navigate.with_value(|go| go(&back, NavigateOptions::default())))/>
        <Confirm title="Delete listener" target=deleting_listener question=listener_deletion_question
            action="Delete" id="confirm-delete-listener" danger=true
            run=|(at, port): DoomedListener| async move { api::delete_cloud_listener(&at, port).await }
            on_done=Callback::new(move |()| load())/>
    }
}

/// A change the page's buttons make.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Activate or stop the load balancer.
    Status(LbTargetStatus),
    /// Start or stop the listener on a port.
    Running(u16, bool),
}

/// The listener being created, as typed.
#[derive(Debug, Clone, Copy)]
struct NewListener {
    port: RwSignal<String>,
    protocol: RwSignal<String>,
    backend_port: RwSignal<String>,
    bandwidth: RwSignal<String>,
    scheduler: RwSignal<String>,
    check_enabled: RwSignal<bool>,
    uri: RwSignal<String>,
    interval: RwSignal<String>,
    healthy: RwSignal<String>,
    unhealthy: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    busy: RwSignal<bool>,
}

impl NewListener {
    fn new() -> Self {
        let defaults = ListenerHealthCheck::default();
        Self {
            port: RwSignal::new(String::new()),
            protocol: RwSignal::new("tcp".to_owned()),
            backend_port: RwSignal::new(String::new()),
            bandwidth: RwSignal::new("-1".to_owned()),
            scheduler: RwSignal::new("wrr".to_owned()),
            check_enabled: RwSignal::new(defaults.enabled),
            uri: RwSignal::new(defaults.uri),
            interval: RwSignal::new(defaults.interval_seconds.to_string()),
            healthy: RwSignal::new(defaults.healthy_threshold.to_string()),
            unhealthy: RwSignal::new(defaults.unhealthy_threshold.to_string()),
            error: RwSignal::new(None),
            busy: RwSignal::new(false),
        }
    }

    fn input(&self) -> Result<ListenerInput, ApiError> {
        let protocol = match self.protocol.get_untracked().as_str() {
            "http" => ListenerProtocol::Http,
            _ => ListenerProtocol::Tcp,
        };
        let scheduler = match self.scheduler.get_untracked().as_str() {
            "wlc" => Scheduler::Wlc,
            "rr" => Scheduler::Rr,
            _ => Scheduler::Wrr,
        };
        Ok(ListenerInput {
            port: whole("port", &self.port.get_untracked())?,
            protocol,
            backend_port: whole("backend_port", &self.backend_port.get_untracked())?,
            bandwidth_mbps: whole("bandwidth_mbps", &self.bandwidth.get_untracked())?,
            scheduler,
            health_check: ListenerHealthCheck {
                enabled: self.check_enabled.get_untracked(),
                uri: self.uri.get_untracked().trim().to_owned(),
                interval_seconds: whole(
                    "health_check.interval_seconds",
                    &self.interval.get_untracked(),
                )?,
                healthy_threshold: whole(
                    "health_check.healthy_threshold",
                    &self.healthy.get_untracked(),
                )?,
                unhealthy_threshold: whole(
                    "health_check.unhealthy_threshold",
                    &self.unhealthy.get_untracked(),
                )?,
            },
        })
    }
}

/// The fields the listener form shows next to their inputs.
const LISTENER_FIELDS: [&str; 9] = [
    "port",
    "protocol",
    "backend_port",
    "bandwidth_mbps",
    "scheduler",
    "health_check.uri",
    "health_check.interval_seconds",
    "health_check.healthy_threshold",
    "health_check.unhealthy_threshold",
];

/// A number input for the listener form, under `Labelled`.
#[component]
fn NumberInput(id: &'static str, value: RwSignal<String>) -> impl IntoView {
    view! { <input id=id data-test=id type="text" inputmode="numeric" autocomplete="off" bind:value=value/> }
}

/// "New listener": the form, shown while `adding` is set.
#[component]
fn ListenerDialog(
    at: StoredValue<At>,
    adding: RwSignal<Option<NewListener>>,
    on_added: Callback<()>,
) -> impl IntoView {
    move || {
        adding.get().map(|l| {
            let submit = move |ev: SubmitEvent| {
                ev.prevent_default();
                if l.busy.get_untracked() {
                    return;
                }
                let input = match l.input() {
                    Ok(input) => input,
                    Err(e) => return l.error.set(Some(e)),
                };
                l.busy.set(true);
                let at = at.get_value();
                spawn_local(async move {
                    let result = api::create_cloud_listener(&at, &input).await;
                    l.busy.try_set(false);
                    match result {
                        Ok(()) => {
                            adding.set(None);
                            on_added.run(());
                        }
                        Err(e) => {
                            l.error.try_set(Some(e));
                        }
                    }
                });
            };
            let shown: Vec<String> = LISTENER_FIELDS.map(str::to_owned).into();
            let http = move || l.protocol.get() == "http";
            view! {
                <Modal title=Signal::derive(|| "New listener".to_owned())
                    on_close=Callback::new(move |()| adding.set(None))>
                    <form id="listener-form" data-test="listener-form" on:submit=submit>
                        <ErrorBanner error=l.error all=true shown/>
                        <div class="row">
                            <Labelled field="port" id="listener-port" label="Port" error=l.error hint="1–65535">
                                <NumberInput id="listener-port" value=l.port/>
                            </Labelled>
                            <Labelled field="protocol" id="listener-protocol" label="Protocol" error=l.error>
                                <select id="listener-protocol" data-test="listener-protocol"
                                    on:change=move |ev| l.protocol.set(event_target_value(&ev))>
                                    {["tcp", "http"].map(|p| view! {
                                        <option value=p selected=move || l.protocol.get() == p>{p}</option>
                                    }).collect_view()}
                                </select>
                            </Labelled>
                        </div>
                        <div class="row">
                            <Labelled field="backend_port" id="listener-backend-port" label="Backend port" error=l.error
                                hint="Where the backends listen.">
                                <NumberInput id="listener-backend-port" value=l.backend_port/>
                            </Labelled>
                            <Labelled field="bandwidth_mbps" id="listener-bandwidth" label="Bandwidth (Mbit/s)" error=l.error
                                hint="-1: no cap">
                                <NumberInput id="listener-bandwidth" value=l.bandwidth/>
                            </Labelled>
                        </div>
                        <Labelled field="scheduler" id="listener-scheduler" label="Scheduler" error=l.error>
                            <select id="listener-scheduler" data-test="listener-scheduler"
                                on:change=move |ev| l.scheduler.set(event_target_value(&ev))>
                                {[("wrr", "weighted round robin"), ("wlc", "weighted least connections"), ("rr", "round robin")]
                                    .map(|(value, label)| view! {
                                        <option value=value selected=move || l.scheduler.get() == value>{label}</option>
                                    }).collect_view()}
                            </select>
                        </Labelled>
                        <fieldset class="group">
                            <legend>"Health check"</legend>
                            <Show when=http>
                                <label class="check"><input id="listener-check-enabled" type="checkbox" bind:checked=l.check_enabled/>" Check the backends"</label>
                                <Labelled field="health_check.uri" id="listener-check-uri" label="Path" error=l.error
                                    hint="What an HTTP check asks for, e.g. /healthz">
                                    <input id="listener-check-uri" type="text" autocomplete="off" bind:value=l.uri/>
                                </Labelled>
                            </Show>
                            <div class="row3">
                                <Labelled field="health_check.interval_seconds" id="listener-interval" label="Interval (s)" error=l.error>
                                    <NumberInput id="listener-interval" value=l.interval/>
                                </Labelled>
                                <Labelled field="health_check.healthy_threshold" id="listener-healthy-threshold" label="Healthy after" error=l.error>
                                    <NumberInput id="listener-healthy-threshold" value=l.healthy/>
                                </Labelled>
                                <Labelled field="health_check.unhealthy_threshold" id="listener-unhealthy-threshold" label="Unhealthy after" error=l.error>
                                    <NumberInput id="listener-unhealthy-threshold" value=l.unhealthy/>
                                </Labelled>
                            </div>
                        </fieldset>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| adding.set(None)>"Cancel"</button>
                            <button id="listener-save" data-test="listener-save" type="submit" class="primary"
                                disabled=move || l.busy.get()>
                                {move || if l.busy.get() { "Creating…" } else { "Create" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

/// A listener's white list being edited.
#[derive(Debug, Clone, Copy)]
struct WhiteListEditor {
    port: u16,
    enabled: RwSignal<bool>,
    entries: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
    busy: RwSignal<bool>,
}

impl WhiteListEditor {
    fn new(port: u16, enabled: bool, entries: &[String]) -> Self {
        Self {
            port,
            enabled: RwSignal::new(enabled),
            entries: RwSignal::new(entries.join("\n")),
            error: RwSignal::new(None),
            busy: RwSignal::new(false),
        }
    }
}

/// The white-list editor of one listener, shown while `editing` is set.
#[component]
fn WhiteListDialog(
    at: StoredValue<At>,
    editing: RwSignal<Option<WhiteListEditor>>,
    on_saved: Callback<()>,
) -> impl IntoView {
    move || {
        editing.get().map(|w| {
            let submit = move |ev: SubmitEvent| {
                ev.prevent_default();
                if w.busy.get_untracked() {
                    return;
                }
                let input = WhiteListInput {
                    enabled: w.enabled.get_untracked(),
                    entries: entries_of(&w.entries.get_untracked()),
                };
                w.busy.set(true);
                let at = at.get_value();
                spawn_local(async move {
                    let result = api::set_cloud_white_list(&at, w.port, &input).await;
                    w.busy.try_set(false);
                    match result {
                        Ok(()) => {
                            editing.set(None);
                            on_saved.run(());
                        }
                        Err(e) => {
                            w.error.try_set(Some(e));
                        }
                    }
                });
            };
            let shown = vec!["entries".to_owned(), "enabled".to_owned()];
            view! {
                <Modal title=Signal::derive(move || format!("White list of port {}", w.port))
                    on_close=Callback::new(move |()| editing.set(None))>
                    <form id="white-list-form" data-test="white-list-form" data-port=w.port.to_string() on:submit=submit>
                        <ErrorBanner error=w.error all=true shown/>
                        <Labelled field="entries" id="white-list-entries" label="Addresses" error=w.error
                            hint="One IPv4 address or CIDR block a line, e.g. 10.0.0.0/8; at most 300.">
                            <textarea id="white-list-entries" data-test="white-list-entries" class="code" rows="8"
                                spellcheck="false" bind:value=w.entries></textarea>
                        </Labelled>
                        <label class="check">
                            <input id="white-list-enabled" data-test="white-list-enabled" type="checkbox" bind:checked=w.enabled/>
                            " Enforced: only these addresses get in"
                        </label>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editing.set(None)>"Cancel"</button>
                            <button id="white-list-save" data-test="white-list-save" type="submit" class="primary"
                                disabled=move || w.busy.get()>
                                {move || if w.busy.get() { "Saving…" } else { "Save" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_white_list_is_one_entry_a_line_and_checks_read_in_words() {
        assert_eq!(
            entries_of(" 10.0.0.0/8\n\n127.0.0.1 \n"),
            ["10.0.0.0/8", "127.0.0.1"]
        );
        let check = ListenerHealthCheck {
            interval_seconds: 1,
            healthy_threshold: 2,
            ..ListenerHealthCheck::default()
        };
        assert_eq!(
            health_check_text(ListenerProtocol::Tcp, &check),
            "connect every 1 s; healthy after 2, unhealthy after 3"
        );
        let off = ListenerHealthCheck {
            enabled: false,
            ..check
        };
        assert_eq!(health_check_text(ListenerProtocol::Http, &off), "off");
        assert!(whole::<u16>("port", "70000").is_err());
    }
}
