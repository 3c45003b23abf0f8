//! Executions: the history (paged, filtered by state) and one execution's
//! page with a live per-host table fed by the server's event stream.

use std::collections::BTreeSet;

use dcp_api_types::{
    Execution, ExecutionHost, ExecutionState, ExecutionSummary, HostCounts, HostState, PageQuery,
};
use leptos::{prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_params_map, use_query_map},
};
use wasm_bindgen::{JsCast as _, closure::Closure};

use crate::{
    api::{self, ApiError},
    commands::{Run, RunDialog},
    components::{ErrorBanner, Pager, short_time},
};

/// How many of each final state, as "17 ok · 1 failed · …".
fn counts_text(c: &HostCounts) -> String {
    let parts: Vec<String> = [
        (c.ok, "ok"),
        (c.failed, "failed"),
        (c.unreachable, "unreachable"),
        (c.timed_out, "timed out"),
        (c.cancelled, "cancelled"),
        (c.running, "running"),
        (c.pending, "pending"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    format!("{} of {} hosts", parts.join(" · "), c.total)
}

/// Seconds between two RFC 3339 timestamps, as "1.2 s".
pub(crate) fn duration(from: Option<&str>, to: Option<&str>) -> String {
    match (from, to) {
        (Some(from), Some(to)) => {
            let ms = js_sys::Date::parse(to) - js_sys::Date::parse(from);
            if ms.is_finite() {
                format!("{:.1} s", ms / 1000.0)
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

/// The history of executions.
#[component]
pub(crate) fn ExecutionsPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let state = RwSignal::new(String::new());
    let listing = LocalResource::new(move || {
        let (page, state) = (page.get(), state.get());
        async move { api::executions(page, 20, &state).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    let running = RwSignal::new(None::<Run>);
    let states = [
        ExecutionState::Pending,
        ExecutionState::Running,
        ExecutionState::Succeeded,
        ExecutionState::PartiallyFailed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
    ];
    view! {
        <div class="page-head">
            <h1>"Executions"</h1>
            <p class="subtitle">"Every run of a command or group, newest first."</p>
        </div>
        <div class="toolbar">
            <select id="execution-state" on:change=move |ev| { state.set(event_target_value(&ev)); page.set(1); }>
                <option value="">"Any state"</option>
                {states.into_iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
            </select>
            <button id="new-run" class="primary" on:click=move |_| running.set(Some(Run::ad_hoc()))>"New ad-hoc run"</button>
            <A href="/host-keys" attr:class="toolbar-link">"SSH host keys"</A>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="executions-table" class="table">
            <thead>
                <tr><th>"#"</th><th>"What"</th><th>"State"</th><th>"Hosts"</th><th>"By"</th><th>"Started (UTC)"</th></tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|e| (e.id, e.state, e.counts)
                    children=move |e: ExecutionSummary| view! {
                        <tr data-id=e.id.to_string()>
                            <td><A href=format!("/executions/{}", e.id)>{e.id.to_string()}</A></td>
                            <td class="name"><A href=format!("/executions/{}", e.id)>{e.title.clone()}</A></td>
                            <td><span class=format!("badge state-{}", e.state.as_str())>{e.state.as_str()}</span></td>
                            <td>{counts_text(&e.counts)}</td>
                            <td>{e.created_by.clone()}</td>
                            <td>{short_time(&e.created_at)}</td>
                        </tr>
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"No executions yet. Run a command from the Commands page, or start an ad-hoc run."</p>
        </Show>
        <Pager page=current current=page noun=("execution", "executions")/>
        <RunDialog run=running/>
    }
}

/// The page of hosts on show and what keeps it current: host events
/// change it in place, and it is read again when they may have moved hosts
/// onto or off it.
#[derive(Clone, Copy)]
struct HostsShown {
    /// The hosts on the page, as last read and since changed by events.
    hosts: RwSignal<Vec<ExecutionHost>>,
    /// Only hosts in this state; empty for all.
    state: RwSignal<String>,
    /// Bumped to read the page again.
    reload: RwSignal<u32>,
    /// Host events received, so a read that raced one is done again.
    events: StoredValue<u64>,
    /// Whether a read is already scheduled by [`HostsShown::reload_soon`].
    due: StoredValue<bool>,
}

impl HostsShown {
    fn new() -> Self {
        Self {
            hosts: RwSignal::new(Vec::new()),
            state: RwSignal::new(String::new()),
            reload: RwSignal::new(0),
            events: StoredValue::new(0),
            due: StoredValue::new(false),
        }
    }

    /// Reads the page again now.
    fn reload(self) {
        self.reload.try_update(|n| *n += 1);
    }

    /// Reads the page again in a second, once however many hosts change
    /// meanwhile: thousands of hosts finishing must not mean thousands of reads.
    fn reload_soon(self) {
        if self.due.try_get_value().unwrap_or(true) {
            return;
        }
        self.due.set_value(true);
        set_timeout(
            move || {
                self.due.try_set_value(false);
                self.reload();
            },
            std::time::Duration::from_secs(1),
        );
    }

    /// Shows a host's change: in its row if it is on the page; with a state
    /// filter, a host that entered or left the state moves rows and counts,
    /// so the page is read again.
    fn apply(self, host: ExecutionHost) {
        self.events.try_update_value(|n| *n += 1);
        let wanted = self.state.get_untracked();
        let matches = wanted.is_empty() || host.state.as_str() == wanted;
        let index = host.index;
        let on_page = self
            .hosts
            .try_update(|list| match list.iter_mut().find(|h| h.index == index) {
                Some(slot) => {
                    *slot = host;
                    true
                }
                None => false,
            })
            .unwrap_or(false);
        if on_page != matches {
            self.reload_soon();
        }
    }
}

/// Follows `/api/v1/executions/{id}/events` into `execution` and the hosts
/// shown; on a broken stream, polls instead until the execution ends.
fn follow(id: i64, execution: RwSignal<Option<Execution>>, shown: HostsShown) {
    let Ok(source) = web_sys::EventSource::new(&format!("/api/v1/executions/{id}/events")) else {
        poll(id, execution, shown);
        return;
    };
    let on = |name: &str, handle: Box<dyn Fn(&str)>| api::on_event(&source, name, handle);
    on(
        "snapshot",
        Box::new(move |data| {
            if let Ok(snapshot) = serde_json::from_str::<Execution>(data) {
                execution.set(Some(snapshot));
                // Hosts may have changed before the stream (re)started.
                shown.reload();
            }
        }),
    );
    on(
        "host",
        Box::new(move |data| {
            if let Ok(host) = serde_json::from_str::<ExecutionHost>(data) {
                shown.apply(host);
            }
        }),
    );
    let closer = source.clone();
    on(
        "execution",
        Box::new(move |data| {
            if let Ok(summary) = serde_json::from_str::<ExecutionSummary>(data) {
                if summary.state.is_final() {
                    closer.close();
                }
                execution.update(|e| {
                    if let Some(e) = e.as_mut() {
                        e.summary = summary;
                    }
                });
            }
        }),
    );
    let broken = source.clone();
    let on_error = Closure::<dyn Fn()>::new(move || {
        // The server ends the stream after the final event; anything else
        // is a broken connection.
        broken.close();
        if !execution
            .get_untracked()
            .is_some_and(|e| e.summary.state.is_final())
        {
            poll(id, execution, shown);
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    on_cleanup(move || source.close());
}

/// Reloads the execution and its page of hosts every 2 s until it ends.
fn poll(id: i64, execution: RwSignal<Option<Execution>>, shown: HostsShown) {
    spawn_local(async move {
        if let Ok(fresh) = api::execution(id).await {
            let done = fresh.summary.state.is_final();
            if execution.try_set(Some(fresh)).is_some() {
                // The page went away.
                return;
            }
            shown.reload();
            if done {
                return;
            }
        }
        set_timeout(
            move || poll(id, execution, shown),
            std::time::Duration::from_secs(2),
        );
    });
}

/// Hosts per page, unless the address asks for another size
/// (`/executions/7?per_page=25`, up to [`PageQuery::MAX_PER_PAGE`]).
const HOSTS_PER_PAGE: u32 = 50;

/// One execution: state, counts, cancel, and its hosts page by page (all or
/// those in one state), live.
#[component]
pub(crate) fn ExecutionPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let per_page = use_query_map()
        .with_untracked(|q| q.get("per_page"))
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=PageQuery::MAX_PER_PAGE).contains(n))
        .unwrap_or(HOSTS_PER_PAGE);
    let execution = RwSignal::new(None::<Execution>);
    let error = RwSignal::new(None::<ApiError>);
    let expanded = RwSignal::new(BTreeSet::<u32>::new());
    let page = RwSignal::new(1_u32);
    let shown = HostsShown::new();
    let listing = LocalResource::new(move || {
        let (id, page, state, reload) = (id(), page.get(), shown.state.get(), shown.reload.get());
        let before = shown.events.get_value();
        async move {
            // Nothing before the event stream's snapshot: its reload reads
            // the hosts once the stream misses no change.
            let (Some(id), 1..) = (id, reload) else {
                return None;
            };
            let listing = api::execution_hosts(id, page, per_page, &state).await;
            if shown.events.try_get_value().is_some_and(|n| n != before) {
                // A host changed while this was read: its event went to
                // the old rows, and this answer may predate it.
                shown.reload_soon();
            }
            Some(listing)
        }
    });
    let current = Signal::derive(move || listing.get().flatten().and_then(Result::ok));
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || match listing.get().flatten() {
        Some(Ok(p)) => {
            load_error.set(None);
            shown.hosts.set(p.items);
        }
        Some(Err(e)) => load_error.set(Some(e)),
        None => {}
    });
    Effect::new(move || {
        if let Some(id) = id() {
            follow(id, execution, shown);
        } else {
            error.set(Some(ApiError::local("no such execution")));
        }
    });
    let cancel = move |_| {
        let Some(id) = id() else { return };
        spawn_local(async move {
            match api::cancel_execution(id).await {
                Ok(_) => error.set(None),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let running =
        move || execution.with(|e| e.as_ref().is_some_and(|e| !e.summary.state.is_final()));
    view! {
        <ErrorBanner error all=true/>
        {move || execution.get().map(|e| {
            let s = e.summary.clone();
            let state = s.state;
            view! {
                <div class="page-head">
                    <h1>{format!("#{} {}", s.id, s.title)}</h1>
                    <p class="subtitle">
                        <span id="execution-state" class=format!("badge state-{}", state.as_str())>{state.as_str()}</span>
                        " " <span id="execution-counts">{counts_text(&s.counts)}</span>
                        {format!(" · forks {} · timeout {} s · by {} · {}", s.forks, s.timeout_secs, s.created_by, short_time(&s.created_at))}
                    </p>
                    <p class="subtitle">
                        {e.steps.iter().map(|st| format!("{} ({}/{})", st.name, st.plugin, st.module)).collect::<Vec<_>>().join(" → ")}
                    </p>
                </div>
            }
        })}
        <div class="toolbar">
            <select id="host-state" on:change=move |ev| { shown.state.set(event_target_value(&ev)); page.set(1); }>
                <option value="">"Any state"</option>
                {HostState::ALL.into_iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
            </select>
            <Show when=running>
                <button id="cancel-execution" class="danger" on:click=cancel>"Cancel"</button>
            </Show>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="hosts-table" class="table">
            <thead><tr><th>"Host"</th><th>"State"</th><th>"Exit"</th><th>"Took"</th><th>"Message"</th><th></th></tr></thead>
            <tbody>
                <For
                    each=move || shown.hosts.get()
                    key=|h| (h.index, h.state, h.finished_at.clone(), h.stdout_bytes, h.stderr_bytes)
                    children=move |h: ExecutionHost| {
                        let index = h.index;
                        let open = move || expanded.get().contains(&index);
                        let toggle = move |_| expanded.update(|set| {
                            if !set.remove(&index) {
                                set.insert(index);
                            }
                        });
                        let truncated = h.truncated;
                        let execution_id = id().unwrap_or_default();
                        view! {
                            <tr class="host-row" data-index=index.to_string() data-address=h.address.clone() data-state=h.state.as_str()>
                                <td class="name">{format!("{}@{}:{}", h.user, h.address, h.port)}</td>
                                <td><span class=format!("badge host-{}", h.state.as_str())>{h.state.as_str()}</span></td>
                                <td>{h.exit_code.map(|c| c.to_string()).unwrap_or_default()}</td>
                                <td>{duration(h.started_at.as_deref(), h.finished_at.as_deref())}</td>
                                <td class="description">
                                    {h.message.clone()}
                                    <Show when={
                                        let changed = h.message.contains("host key");
                                        move || changed
                                    }>
                                        " " <A href="/host-keys">"Manage host keys"</A>
                                    </Show>
                                </td>
                                <td class="actions">
                                    <button class="ghost logs" on:click=toggle>{move || if open() { "Hide output" } else { "Output" }}</button>
                                </td>
                            </tr>
                            <Show when=open>
                                <tr class="host-output">
                                    <td colspan="6">
                                        <Show when=move || truncated>
                                            <p class="hint">"Output was cut at the limit."</p>
                                        </Show>
                                        <HostOutputView id=execution_id index=index/>
                                    </td>
                                </tr>
                            </Show>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">{move || format!("No {} hosts.", shown.state.get())}</p>
        </Show>
        <Pager page=current current=page noun=("host", "hosts")/>
    }
}

/// Reads a whole output stream of one host, piece by piece from offset 0.
async fn read_stream(id: i64, index: u32, stream: &'static str) -> Result<String, ApiError> {
    let mut text = String::new();
    let mut offset = 0;
    loop {
        let piece = api::host_output(id, index, stream, offset).await?;
        text.push_str(&piece.data);
        if piece.next_offset >= piece.total_bytes {
            return Ok(text);
        }
        offset = piece.next_offset;
    }
}

/// One host's stdout and stderr, fetched when shown (the row is redrawn,
/// and so re-read, when the host reports more output).
#[component]
fn HostOutputView(id: i64, index: u32) -> impl IntoView {
    let output = LocalResource::new(move || async move {
        let stdout = read_stream(id, index, "stdout").await?;
        let stderr = read_stream(id, index, "stderr").await?;
        Ok::<_, ApiError>((stdout, stderr))
    });
    view! {
        {move || match output.get() {
            Some(Ok((stdout, stderr))) => view! {
                <h4>"stdout"</h4>
                <pre class="code stdout">{stdout}</pre>
                <h4>"stderr"</h4>
                <pre class="code stderr">{stderr}</pre>
            }.into_any(),
            Some(Err(e)) => view! { <p class="hint">{e.0.message}</p> }.into_any(),
            None => view! { <p class="hint">"Loading output…"</p> }.into_any(),
        }}
    }
}
