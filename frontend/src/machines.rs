//! Machines: the fleet chart, the list (filtered by state and template,
//! refreshed while machines are busy), creating from a template, adopting a
//! server, and one machine's page with its timeline and log.

use std::collections::{BTreeMap, BTreeSet};

use dcp_api_types::{
    AdoptMachine, CreateMachines, FleetPoint, Machine, MachineDetail, MachineState,
    MachineTemplate, PageQuery,
};
use leptos::{ev::SubmitEvent, html, prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_params_map, use_query_map},
};

use crate::{
    api::{self, ApiError},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time},
    templates::Labelled,
};

/// The state a filter or a wire name names.
fn parse_state(text: &str) -> Option<MachineState> {
    MachineState::ALL.into_iter().find(|s| s.as_str() == text)
}

/// A state as a badge (`data-test="machine-state"`), its reason as the tooltip.
fn state_badge(state: MachineState, reason: &str) -> impl IntoView + use<> {
    view! {
        <span class=format!("badge machine-{}", state.as_str()) data-test="machine-state"
            data-state=state.as_str() title=reason.to_owned()>{state.as_str()}</span>
    }
}

/// A link to the pool a machine is a node of (`data-test="machine-pool-link"`).
fn pool_link(pool_id: Option<i64>) -> impl IntoView + use<> {
    pool_id.map(|id| {
        view! { <A href=format!("/pools/{id}") attr:data-test="machine-pool-link">{format!("#{id}")}</A> }
    })
}

/// A key that makes a create request safe to send twice: random, made
/// once per opening of the dialog.
pub(crate) fn idempotency_key() -> String {
    let part = || {
        format!(
            "{:08x}",
            (js_sys::Math::random() * f64::from(u32::MAX)) as u32
        )
    };
    format!(
        "ui-{}-{}{}{}",
        js_sys::Date::now() as u64,
        part(),
        part(),
        part()
    )
}

/// Calls `tick` every `secs` seconds while the current owner lives.
pub(crate) fn every(secs: u64, tick: impl Fn() + 'static) {
    if let Ok(handle) = set_interval_with_handle(tick, std::time::Duration::from_secs(secs)) {
        on_cleanup(move || handle.clear());
    }
}

/// What happened last, above the table.
#[derive(Debug, Clone)]
struct Notice {
    text: String,
    machine: Option<(i64, String)>,
}

/// The fleet, its chart and its machines.
#[component]
pub(crate) fn MachinesPage() -> impl IntoView {
    let query = use_query_map();
    let page = RwSignal::new(1_u32);
    // The overview links here with `?state=`.
    let state = RwSignal::new(query.with_untracked(|q| q.get("state")).unwrap_or_default());
    let template = RwSignal::new(
        query
            .with_untracked(|q| q.get("template_id"))
            .unwrap_or_default(),
    );
    let reload = RwSignal::new(0_u32);
    let chart_reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let (page, state, template) = (page.get(), parse_state(&state.get()), template.get());
        reload.track();
        async move {
            api::machines(
                page,
                PageQuery::DEFAULT_PER_PAGE,
                state,
                template.parse().ok(),
            )
            .await
        }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    let templates = LocalResource::new(api::templates);
    let template_list =
        Signal::derive(move || templates.get().and_then(Result::ok).unwrap_or_default());
    // Busy machines change on their own: look again every 3 s while any is.
    every(3, move || {
        let busy = current.with_untracked(|p| {
            p.as_ref()
                .is_some_and(|p| p.items.iter().any(|m| m.state.is_busy()))
        });
        if busy {
            reload.update(|n| *n += 1);
        }
    });

    let creating = RwSignal::new(None::<Creating>);
    let adopting = RwSignal::new(None::<Adopting>);
    let notice = RwSignal::new(None::<Notice>);
    let changed = Callback::new(move |n: Notice| {
        notice.set(Some(n));
        reload.update(|n| *n += 1);
        chart_reload.update(|n| *n += 1);
    });

    view! {
        <div class="page-head">
            <h1>"Machines"</h1>
            <p class="subtitle">"Cloud instances made from templates, and servers adopted over SSH."</p>
        </div>
        <FleetChart reload=chart_reload/>
        <div class="toolbar">
            <select id="machine-state-filter" data-test="machine-state-filter"
                on:change=move |ev| { state.set(event_target_value(&ev)); page.set(1); }>
                <option value="" selected=move || state.get().is_empty()>"Not deleted"</option>
                {MachineState::ALL.into_iter().map(|s| view! {
                    <option value=s.as_str() selected=move || state.get() == s.as_str()>{s.as_str()}</option>
                }).collect_view()}
            </select>
            <select id="machine-template-filter" data-test="machine-template-filter"
                on:change=move |ev| { template.set(event_target_value(&ev)); page.set(1); }>
                <option value="" selected=move || template.get().is_empty()>"Any template"</option>
                {move || template_list.get().into_iter().map(|t| {
                    let id = t.id.to_string();
                    let picked = id.clone();
                    view! { <option value=id selected=move || template.get() == picked>{t.name}</option> }
                }).collect_view()}
            </select>
            <button id="create-machines" data-test="create-machines" class="primary"
                on:click=move |_| creating.set(Some(Creating::new(template.get_untracked())))>"Create machines"</button>
            <button id="adopt-machine" data-test="adopt-machine"
                on:click=move |_| adopting.set(Some(Adopting::new()))>"Adopt server"</button>
        </div>
        {move || notice.get().map(|n| view! {
            <div class="banner success" data-test="machines-notice">
                {n.text}
                {n.machine.map(|(id, name)| view! { " " <A href=format!("/machines/{id}")>{name}</A> })}
            </div>
        })}
        <ErrorBanner error=load_error all=true/>
        <table id="machines-table" class="table">
            <thead>
                <tr>
                    <th>"Name"</th><th>"State"</th><th>"Address"</th><th>"Template"</th>
                    <th>"Provider"</th><th>"Pool"</th><th>"Created (UTC)"</th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|m| (m.id, m.state, m.address.clone(), m.reason.clone(), m.pool_id)
                    children=move |m: Machine| {
                        let template_id = m.template_id;
                        let template_name = move || match template_id {
                            None => "adopted".to_owned(),
                            Some(id) => template_list
                                .with(|list| list.iter().find(|t| t.id == id).map(|t| t.name.clone()))
                                .unwrap_or_else(|| format!("#{id}")),
                        };
                        let troubled = matches!(
                            m.state,
                            MachineState::Error | MachineState::InitFailed | MachineState::InitTimeout
                        );
                        let link_text = m.name.clone();
                        view! {
                            <tr data-test="machine-row" data-id=m.id.to_string() data-name=m.name.clone()
                                data-state=m.state.as_str()>
                                <td class="name">
                                    <A href=format!("/machines/{}", m.id) attr:data-test="machine-link">{link_text}</A>
                                </td>
                                <td>
                                    {state_badge(m.state, &m.reason)}
                                    {troubled.then(|| view! { <div class="muted reason">{m.reason.clone()}</div> })}
                                </td>
                                <td><code>{m.address.clone().unwrap_or_default()}</code></td>
                                <td>{template_name}</td>
                                <td><span class="badge">{m.provider.clone()}</span></td>
                                <td>{pool_link(m.pool_id)}</td>
                                <td>{short_time(&m.created_at)}</td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"No machines here. Create some from a template, or adopt a server."</p>
        </Show>
        <Pager page=current current=page noun=("machine", "machines")/>
        <CreateDialog creating templates=template_list on_done=changed/>
        <AdoptDialog adopting on_done=changed/>
    }
}

/// The chart's line colours, one per provider in name order.
const COLOURS: [&str; 8] = [
    "#1f4fd8", "#d97706", "#059669", "#c026d3", "#dc2626", "#0891b2", "#4b5563", "#65a30d",
];

/// Hours (oldest first) and, per provider, its machines at each hour
/// (0 where the server has no point).
fn fleet_series(points: &[FleetPoint]) -> (Vec<String>, Vec<(String, Vec<u64>)>) {
    let hours: Vec<String> = points
        .iter()
        .map(|p| p.hour.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let providers: BTreeSet<&str> = points.iter().map(|p| p.provider.as_str()).collect();
    let at: BTreeMap<(&str, &str), u64> = points
        .iter()
        .map(|p| ((p.provider.as_str(), p.hour.as_str()), p.machines))
        .collect();
    let series = providers
        .into_iter()
        .map(|provider| {
            let values = hours
                .iter()
                .map(|h| at.get(&(provider, h.as_str())).copied().unwrap_or(0))
                .collect();
            (provider.to_owned(), values)
        })
        .collect();
    (hours, series)
}

/// An hour's tick label: "07:00", with the date ("03-01 07:00") on the
/// first tick and when the day changed since the tick before.
fn hour_label(hour: &str, previous: Option<&str>) -> String {
    let (Some(date), Some(time)) = (hour.get(5..10), hour.get(11..16)) else {
        return hour.to_owned();
    };
    if previous.and_then(|p| p.get(5..10)) == Some(date) {
        time.to_owned()
    } else {
        format!("{date} {time}")
    }
}

/// Live machines per provider over the last 48 hours: an inline SVG line
/// chart with a legend.
#[component]
fn FleetChart(reload: RwSignal<u32>) -> impl IntoView {
    let history = LocalResource::new(move || {
        reload.track();
        api::fleet_history(48)
    });
    move || match history.get() {
        None => {
            view! { <div class="fleet loading-chart">"Loading the fleet history…"</div> }.into_any()
        }
        Some(Err(e)) => view! {
            <div class="fleet"><p class="error-text" data-test="fleet-error">{e.message()}</p></div>
        }
        .into_any(),
        Some(Ok(points)) => fleet_chart(&points).into_any(),
    }
}

fn fleet_chart(points: &[FleetPoint]) -> impl IntoView + use<> {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 200.0;
    const LEFT: f64 = 36.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 12.0;
    const BOTTOM: f64 = 26.0;
    let (hours, series) = fleet_series(points);
    if hours.is_empty() {
        return view! {
            <div class="fleet" data-test="fleet-chart">
                <h2>"Fleet, last 48 hours"</h2>
                <p class="muted">"No machines in the last 48 hours."</p>
            </div>
        }
        .into_any();
    }
    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let n = hours.len();
    let x = move |i: usize| {
        if n < 2 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = move |v: u64| TOP + plot_h - plot_h * v as f64 / max as f64;
    let step = n.div_ceil(8).max(1);
    let ticks = hours
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0)
        .map(|(i, h)| {
            let previous = i.checked_sub(step).and_then(|p| hours.get(p));
            // The first label starts at the axis instead of overflowing it.
            let anchor = if i == 0 && n > 1 { "start" } else { "middle" };
            view! {
                <text x=format!("{:.1}", x(i)) y=format!("{:.1}", HEIGHT - 8.0) class="tick"
                    text-anchor=anchor>
                    {hour_label(h, previous.map(String::as_str))}
                </text>
                <line x1=format!("{:.1}", x(i)) x2=format!("{:.1}", x(i)) y1=format!("{:.1}", TOP + plot_h)
                    y2=format!("{:.1}", TOP + plot_h + 4.0) class="axis"/>
            }
        })
        .collect_view();
    let lines = series
        .iter()
        .zip(COLOURS.iter().cycle())
        .map(|((provider, values), colour)| {
            let points = values
                .iter()
                .enumerate()
                .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
                .collect::<Vec<_>>()
                .join(" ");
            let last = values.len().saturating_sub(1);
            let last_value = values.last().copied().unwrap_or(0);
            view! {
                <g class="series" data-provider=provider.clone()>
                    <polyline points=points fill="none" stroke=*colour stroke-width="2" stroke-linejoin="round"/>
                    <circle cx=format!("{:.1}", x(last)) cy=format!("{:.1}", y(last_value)) r="3" fill=*colour/>
                </g>
            }
        })
        .collect_view();
    let legend = series
        .iter()
        .zip(COLOURS.iter().cycle())
        .map(|((provider, values), colour)| {
            let now = values.last().copied().unwrap_or(0);
            view! {
                <li data-provider=provider.clone()>
                    <span class="swatch" style=format!("background:{colour}")></span>
                    {format!("{provider}: {now} now")}
                </li>
            }
        })
        .collect_view();
    let mid = (max >= 2).then(|| {
        let v = max / 2;
        view! {
            <line x1=format!("{LEFT:.1}") x2=format!("{:.1}", WIDTH - RIGHT) y1=format!("{:.1}", y(v)) y2=format!("{:.1}", y(v)) class="grid"/>
            <text x=format!("{:.1}", LEFT - 6.0) y=format!("{:.1}", y(v) + 4.0) text-anchor="end" class="tick">{v.to_string()}</text>
        }
    });
    view! {
        <div class="fleet" data-test="fleet-chart">
            <h2>"Fleet, last 48 hours"</h2>
            <svg class="fleet-chart" viewBox=format!("0 0 {WIDTH} {HEIGHT}") role="img"
                aria-label="Live machines per provider, hour by hour">
                <line x1=format!("{LEFT:.1}") x2=format!("{:.1}", WIDTH - RIGHT) y1=format!("{TOP:.1}") y2=format!("{TOP:.1}") class="grid"/>
                {mid}
                <line x1=format!("{LEFT:.1}") x2=format!("{:.1}", WIDTH - RIGHT) y1=format!("{:.1}", TOP + plot_h)
                    y2=format!("{:.1}", TOP + plot_h) class="axis"/>
                <text x=format!("{:.1}", LEFT - 6.0) y=format!("{:.1}", TOP + 4.0) text-anchor="end" class="tick"
                    data-test="fleet-max">{max.to_string()}</text>
                <text x=format!("{:.1}", LEFT - 6.0) y=format!("{:.1}", TOP + plot_h + 4.0) text-anchor="end" class="tick">"0"</text>
                {ticks}
                {lines}
            </svg>
            <ul class="legend" data-test="fleet-legend">{legend}</ul>
        </div>
    }
    .into_any()
}

/// The create dialog's state; the idempotency key is made when it opens.
#[derive(Debug, Clone, Copy)]
struct Creating {
    template: RwSignal<String>,
    count: RwSignal<String>,
    key: StoredValue<String>,
    busy: RwSignal<bool>,
    error: RwSignal<Option<ApiError>>,
}

impl Creating {
    fn new(template: String) -> Self {
        Self {
            template: RwSignal::new(template),
            count: RwSignal::new("1".to_owned()),
            key: StoredValue::new(idempotency_key()),
            busy: RwSignal::new(false),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<CreateMachines, ApiError> {
        let template_id = self
            .template
            .get_untracked()
            .parse()
            .map_err(|_| ApiError::invalid("template_id", "choose a template"))?;
        let count = self
            .count
            .get_untracked()
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::invalid("count", "must be a number from 1 to 100"))?;
        Ok(CreateMachines {
            template_id,
            count,
            idempotency_key: Some(self.key.get_value()),
        })
    }
}

/// "credit 88 of 100 instance-hours", or that creating is refused.
fn credit_text(t: &MachineTemplate) -> (bool, String) {
    let credit = t.quota_hours - t.used_hours;
    if credit <= 0 {
        (
            true,
            format!(
                "Quota exhausted ({} of {} instance-hours used) — creating is refused.",
                t.used_hours, t.quota_hours
            ),
        )
    } else {
        (
            false,
            format!("Credit {credit} of {} instance-hours.", t.quota_hours),
        )
    }
}

/// Asks for machines from a template. A retry or a double click sends the
/// same idempotency key, so the server answers the same machines.
#[component]
fn CreateDialog(
    creating: RwSignal<Option<Creating>>,
    templates: Signal<Vec<MachineTemplate>>,
    on_done: Callback<Notice>,
) -> impl IntoView {
    move || {
        creating.get().map(|c| {
            let submit = move |ev: SubmitEvent| {
                ev.prevent_default();
                if c.busy.get_untracked() {
                    return;
                }
                let input = match c.input() {
                    Ok(input) => input,
                    Err(e) => return c.error.set(Some(e)),
                };
                c.busy.set(true);
                spawn_local(async move {
                    match api::create_machines(&input).await {
                        Ok(machines) => {
                            creating.set(None);
                            let n = machines.len();
                            on_done.run(Notice {
                                text: format!(
                                    "Asked for {n} machine{}; they appear below as they are created.",
                                    if n == 1 { "" } else { "s" }
                                ),
                                machine: None,
                            });
                        }
                        Err(e) => {
                            c.busy.set(false);
                            c.error.set(Some(e));
                        }
                    }
                });
            };
            let credit = move || {
                let id = c.template.get().parse::<i64>().ok()?;
                templates.with(|list| list.iter().find(|t| t.id == id).map(credit_text))
            };
            let shown = vec!["template_id".to_owned(), "count".to_owned()];
            view! {
                <Modal title=Signal::derive(|| "Create machines".to_owned())
                    on_close=Callback::new(move |()| creating.set(None))>
                    <form id="create-machines-form" data-test="create-machines-form" novalidate on:submit=submit>
                        <ErrorBanner error=c.error all=true shown/>
                        <Labelled field="template_id" id="create-template" label="Template" error=c.error>
                            <select id="create-template" data-test="create-template"
                                on:change=move |ev| c.template.set(event_target_value(&ev))>
                                <option value="" selected=move || c.template.get().is_empty()>"Choose…"</option>
                                {move || templates.get().into_iter().map(|t| {
                                    let id = t.id.to_string();
                                    let picked = id.clone();
                                    view! {
                                        <option value=id selected=move || c.template.get() == picked>
                                            {format!("{} ({}, {})", t.name, t.provider, t.spec.instance_type)}
                                        </option>
                                    }
                                }).collect_view()}
                            </select>
                            {move || credit().map(|(exhausted, text)| view! {
                                <p class="hint" class:error-text=exhausted data-test="create-credit">{text}</p>
                            })}
                        </Labelled>
                        <Labelled field="count" id="create-count" label="How many" error=c.error hint="1–100">
                            <input id="create-count" data-test="create-count" type="number" min="1" max="100"
                                bind:value=c.count/>
                        </Labelled>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| creating.set(None)>"Cancel"</button>
                            <button id="create-submit" data-test="create-submit" type="submit" class="primary"
                                disabled=move || c.busy.get()>
                                {move || if c.busy.get() { "Creating…" } else { "Create" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

/// The adopt dialog's state.
#[derive(Debug, Clone, Copy)]
struct Adopting {
    name: RwSignal<String>,
    address: RwSignal<String>,
    port: RwSignal<String>,
    user: RwSignal<String>,
    with_key: RwSignal<bool>,
    password: RwSignal<String>,
    private_key: RwSignal<String>,
    busy: RwSignal<bool>,
    error: RwSignal<Option<ApiError>>,
}

impl Adopting {
    fn new() -> Self {
        Self {
            name: RwSignal::new(String::new()),
            address: RwSignal::new(String::new()),
            port: RwSignal::new("22".to_owned()),
            user: RwSignal::new("root".to_owned()),
            with_key: RwSignal::new(false),
            password: RwSignal::new(String::new()),
            private_key: RwSignal::new(String::new()),
            busy: RwSignal::new(false),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<AdoptMachine, ApiError> {
        let text = |s: RwSignal<String>| {
            let s = s.get_untracked().trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        let port =
            match text(self.port) {
                None => None,
                Some(p) => Some(p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                    ApiError::invalid("port", "must be a number from 1 to 65535")
                })?),
            };
        let with_key = self.with_key.get_untracked();
        let password = self.password.get_untracked();
        Ok(AdoptMachine {
            name: text(self.name),
            address: self.address.get_untracked().trim().to_owned(),
            port,
            user: text(self.user),
            password: (!with_key && !password.is_empty()).then_some(password),
            private_key: if with_key {
                text(self.private_key)
            } else {
                None
            },
        })
    }
}

/// Adopts a server DCP can reach over SSH.
#[component]
fn AdoptDialog(adopting: RwSignal<Option<Adopting>>, on_done: Callback<Notice>) -> impl IntoView {
    move || {
        adopting.get().map(|a| {
            let submit = move |ev: SubmitEvent| {
                ev.prevent_default();
                if a.busy.get_untracked() {
                    return;
                }
                let input = match a.input() {
                    Ok(input) => input,
                    Err(e) => return a.error.set(Some(e)),
                };
                a.busy.set(true);
                spawn_local(async move {
                    match api::adopt_machine(&input).await {
                        Ok(m) => {
                            adopting.set(None);
                            on_done.run(Notice {
                                text: "Adopted:".to_owned(),
                                machine: Some((m.id, m.name)),
                            });
                        }
                        Err(e) => {
                            a.busy.set(false);
                            a.error.set(Some(e));
                        }
                    }
                });
            };
            let shown: Vec<String> = ["name", "address", "port", "user", "password", "private_key"]
                .map(str::to_owned)
                .into();
            view! {
                <Modal title=Signal::derive(|| "Adopt a server".to_owned())
                    on_close=Callback::new(move |()| adopting.set(None))>
                    <form id="adopt-form" data-test="adopt-form" on:submit=submit>
                        <ErrorBanner error=a.error all=true shown/>
                        <Field field="address" id_prefix="adopt" label="Address" value=a.address error=a.error
                            hint="IP address or host name"/>
                        <div class="row">
                            <Field field="port" id_prefix="adopt" label="SSH port" value=a.port error=a.error/>
                            <Field field="user" id_prefix="adopt" label="User" value=a.user error=a.error/>
                        </div>
                        <Field field="name" id_prefix="adopt" label="Name" value=a.name error=a.error
                            hint="Optional: the address by default."/>
                        <div class="field">
                            <label>"Credential"</label>
                            <div class="segmented" role="radiogroup">
                                <button type="button" id="adopt-with-password" data-test="adopt-with-password"
                                    class:selected=move || !a.with_key.get() on:click=move |_| a.with_key.set(false)>"Password"</button>
                                <button type="button" id="adopt-with-key" data-test="adopt-with-key"
                                    class:selected=move || a.with_key.get() on:click=move |_| a.with_key.set(true)>"Private key"</button>
                            </div>
                        </div>
                        <Show when=move || !a.with_key.get()>
                            <Labelled field="password" id="adopt-password" label="Password" error=a.error
                                hint="Used once to install a key DCP generates; never stored.">
                                <input id="adopt-password" data-test="adopt-password" type="password"
                                    autocomplete="off" bind:value=a.password/>
                            </Labelled>
                        </Show>
                        <Show when=move || a.with_key.get()>
                            <Labelled field="private_key" id="adopt-private-key" label="Private key" error=a.error
                                hint="OpenSSH or PEM; kept encrypted.">
                                <textarea id="adopt-private-key" data-test="adopt-private-key" class="code" rows="6"
                                    spellcheck="false" bind:value=a.private_key></textarea>
                            </Labelled>
                        </Show>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| adopting.set(None)>"Cancel"</button>
                            <button id="adopt-submit" data-test="adopt-submit" type="submit" class="primary"
                                disabled=move || a.busy.get()>
                                {move || if a.busy.get() { "Adopting…" } else { "Adopt" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

/// One machine: state, facts, timeline and log, refreshed every 2 s while
/// it is busy.
#[component]
pub(crate) fn MachinePage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let detail = RwSignal::new(None::<MachineDetail>);
    let error = RwSignal::new(None::<ApiError>);
    let load = move || {
        let Some(id) = id() else {
            error.set(Some(ApiError::local("no such machine")));
            return;
        };
        spawn_local(async move {
            match api::machine(id).await {
                Ok(fresh) => {
                    error.set(None);
                    detail.set(Some(fresh));
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };
    Effect::new(move || {
        // Another machine's page: not the last one's facts meanwhile.
        if let Some(id) = id()
            && detail.with_untracked(|d| d.as_ref().is_some_and(|d| d.machine.id != id))
        {
            detail.set(None);
        }
        load();
    });
    every(2, move || {
        if detail.with_untracked(|d| d.as_ref().is_some_and(|d| d.machine.state.is_busy())) {
            load();
        }
    });
    let template_id =
        Memo::new(move |_| detail.with(|d| d.as_ref().and_then(|d| d.machine.template_id)));
    let template = LocalResource::new(move || {
        let id = template_id.get();
        async move {
            match id {
                Some(id) => api::template(id).await.ok().map(|t| t.name),
                None => None,
            }
        }
    });
    let deleting = RwSignal::new(None::<Doomed>);
    // Keep the newest log line in view as lines arrive.
    let log_box = NodeRef::<html::Pre>::new();
    let log_size =
        Memo::new(move |_| detail.with(|d| d.as_ref().map(|d| (d.machine.id, d.log.len()))));
    Effect::new(move || {
        // Read, not only tracked: a memo never read never runs.
        let _size = log_size.get();
        if let Some(pre) = log_box.get() {
            // After the new lines are in the page.
            request_animation_frame(move || pre.set_scroll_top(pre.scroll_height()));
        }
    });

    view! {
        <ErrorBanner error all=true/>
        <p class="crumbs"><A href="/machines">"‹ Machines"</A></p>
        {move || detail.get().map(|d| {
            let m = d.machine;
            let key_file = format!("{}.pem", m.name);
            let name = m.name.clone();
            let id = m.id;
            let address = m.address.as_ref().map_or_else(
                || "not known yet".to_owned(),
                |a| format!("{}@{a}:{}", m.user, m.port),
            );
            let troubled = matches!(
                m.state,
                MachineState::Error | MachineState::InitFailed | MachineState::InitTimeout
            );
            view! {
                <div class="page-head">
                    <h1 data-test="machine-name">{m.name.clone()}</h1>
                    <p class="subtitle">
                        <span id="machine-state" class=format!("badge machine-{}", m.state.as_str())
                            data-test="machine-state" data-state=m.state.as_str()>{m.state.as_str()}</span>
                        {m.state.is_busy().then(|| view! { <span class="muted">" refreshing every 2 s"</span> })}
                    </p>
                </div>
                <div class="toolbar">
                    <a class="button-link" href=api::machine_key_url(id) download=key_file data-test="download-key">"Download key"</a>
                    {(m.state != MachineState::Deleted).then(|| view! {
                        <button id="delete-machine" data-test="delete-machine" class="danger"
                            on:click=move |_| deleting.set(Some(Doomed { id, name: name.clone() }))>"Delete"</button>
                    })}
                </div>
                <dl class="facts machine-facts">
                    <dt>"Address"</dt><dd data-test="machine-address"><code>{address}</code></dd>
                    <dt>"Instance id"</dt><dd data-test="machine-instance-id"><code>{m.instance_id.clone().unwrap_or_else(|| "—".to_owned())}</code></dd>
                    <dt>"Template"</dt>
                    <dd data-test="machine-template">
                        {match m.template_id {
                            None => "adopted".to_owned().into_any(),
                            Some(tid) => view! {
                                <A href="/machine-templates">
                                    {move || template.get().flatten().unwrap_or_else(|| format!("#{tid}"))}
                                </A>
                            }.into_any(),
                        }}
                    </dd>
                    <dt>"Provider"</dt><dd>{m.provider.clone()} {(!m.region.is_empty()).then(|| format!(" · {}", m.region))}</dd>
                    <dt>"Pool"</dt><dd data-test="machine-pool">{m.pool_id.map_or_else(|| "—".into_any(), |id| pool_link(Some(id)).into_any())}</dd>
                    <dt>"Created"</dt><dd>{short_time(&m.created_at)}</dd>
                    <dt>"Ready"</dt><dd>{m.ready_at.as_deref().map_or_else(|| "—".to_owned(), short_time)}</dd>
                    {m.released_at.as_deref().map(|at| view! { <dt>"Released"</dt><dd>{short_time(at)}</dd> })}
                    {m.charged_hours.map(|h| view! { <dt>"Charged"</dt><dd>{format!("{h} instance-hours")}</dd> })}
                    <dt>"Reason"</dt>
                    <dd data-test="machine-reason" class:error-text=troubled>{if m.reason.is_empty() { "—".to_owned() } else { m.reason.clone() }}</dd>
                </dl>
                <h2>"Timeline"</h2>
                <ol class="timeline" data-test="machine-timeline">
                    {d.events.into_iter().map(|e| view! {
                        <li data-state=e.state.as_str()>
                            <span class="when">{short_time(&e.at)}</span>
                            <span class=format!("badge machine-{}", e.state.as_str())>{e.state.as_str()}</span>
                            <span class="why">{e.reason}</span>
                        </li>
                    }).collect_view()}
                </ol>
            }
        })}
        <Show when=move || detail.with(Option::is_some)>
            <h2>"Log"</h2>
        </Show>
        <pre class="code machine-log" id="machine-log" data-test="machine-log" node_ref=log_box
            class:hidden=move || detail.with(Option::is_none)>
            {move || detail.with(|d| d.as_ref().map(|d| {
                if d.log.is_empty() {
                    "No log lines yet.".to_owned()
                } else {
                    d.log.iter().map(|l| format!("{}  {}", l.at.get(11..19).unwrap_or(&l.at), l.line)).collect::<Vec<_>>().join("\n")
                }
            }))}
        </pre>
        <ConfirmDelete noun="machine" target=deleting
            delete=|id| async move { api::delete_machine(id).await.map(|_| ()) }
            note="The instance is released and its hours are charged to the template's quota."
            on_deleted=Callback::new(move |()| load())/>
    }
}

/// Picks ready machines: a search by name or address and a checkbox per
/// machine (the first page of matches, newest first). With `free`, only
/// machines in no pool are offered, those a pool can take. Ids of the
/// checked machines are in `chosen`; `id` prefixes the elements' ids.
#[component]
pub(crate) fn MachinePicker(
    /// The picked machines' ids.
    chosen: RwSignal<BTreeSet<i64>>,
    /// Only machines in no pool.
    free: bool,
    /// Prefix of the search input's and list's ids.
    id: &'static str,
) -> impl IntoView {
    let search = RwSignal::new(String::new());
    let found = LocalResource::new(move || {
        let q = search.get();
        async move { api::ready_machines(&q, free).await }
    });
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        error.set(match found.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    let page = move || found.get().and_then(Result::ok);
    view! {
        <div class="picker">
            <input id=format!("{id}-search") type="search" autocomplete="off"
                placeholder="Search by name or address"
                prop:value=move || search.get()
                on:input=move |ev| search.set(event_target_value(&ev))
                // Enter searches; it does not submit the dialog's form.
                on:keydown=|ev| if ev.key() == "Enter" { ev.prevent_default(); }/>
            <ErrorBanner error all=true/>
            <ul id=format!("{id}-list") class="pick-list">
                {move || page().map(|p| p.items.into_iter().map(|m| {
                    let picked = m.id;
                    view! {
                        <li data-test="pick-machine" data-id=m.id.to_string() data-name=m.name>
                            <label>
                                <input type="checkbox" class="pick-machine"
                                    prop:checked=move || chosen.with(|c| c.contains(&picked))
                                    on:change=move |_| chosen.update(|c| if !c.remove(&picked) { c.insert(picked); })/>
                                <span class="name">{m.name.clone()}</span>
                                <code>{format!("{}@{}:{}", m.user, m.address.clone().unwrap_or_default(), m.port)}</code>
                                <span class="badge">{m.provider.clone()}</span>
                                {m.pool_id.map(|p| view! { <span class="muted">{format!("pool #{p}")}</span> })}
                            </label>
                        </li>
                    }
                }).collect_view())}
            </ul>
            {move || page().map(|p| {
                let shown = p.items.len() as u64;
                if p.total == 0 {
                    let what = if free { "No ready machine outside a pool matches." } else { "No ready machine matches." };
                    view! { <p class="hint" data-test="pick-none">{what}</p> }.into_any()
                } else if p.total > shown {
                    view! { <p class="hint">{format!("{shown} of {} shown: search to narrow.", p.total)}</p> }.into_any()
                } else {
                    ().into_any()
                }
            })}
            <p class="hint" data-test="pick-count">{move || format!("{} picked", chosen.with(BTreeSet::len))}</p>
        </div>
    }
}
