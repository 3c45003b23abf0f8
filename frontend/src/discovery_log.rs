//! The discovery operation log: every change to an upstream's members and
//! every re-sync, who asked, and how each balancer node took it.

use std::collections::BTreeSet;

use dcp_api_types::{BackendSpec, ChangeFilter, DiscoveryChange, PageQuery};
use leptos::{prelude::*, task::spawn_local};
use leptos_router::{components::A, hooks::use_query_map};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Pager, short_time},
    discovery::state_badge,
};

/// The actions the log records, for its filter.
const ACTIONS: [&str; 4] = ["register", "unregister", "set-backends", "resync"];

/// `10.0.0.5:8080`.
fn backend_name(b: &BackendSpec) -> String {
    format!("{}:{}", b.address, b.port)
}

/// A backend's weight as the log says it.
fn weight_text(weight: Option<u32>) -> String {
    weight.map_or_else(|| "default".to_owned(), |w| w.to_string())
}

/// How a change moved an upstream's members, as diff lines (their CSS
/// class and text): re-weighted backends, removed ones, added ones, and
/// how many stayed as they were. `removed` and `added` are the change's own
/// (a re-weighted backend is in both); `before` is how many there were.
pub(crate) fn member_changes(
    removed: &[BackendSpec],
    added: &[BackendSpec],
    before: u32,
) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    for b in removed {
        match added.iter().find(|a| a.same_backend(b)) {
            None => lines.push((
                "removed",
                format!("- {} (weight {})", backend_name(b), weight_text(b.weight)),
            )),
            Some(a) => lines.push((
                "changed",
                format!(
                    "~ {} weight {} → {}",
                    backend_name(b),
                    weight_text(b.weight),
                    weight_text(a.weight)
                ),
            )),
        }
    }
    for a in added {
        if !removed.iter().any(|b| a.same_backend(b)) {
            lines.push((
                "added",
                format!("+ {} (weight {})", backend_name(a), weight_text(a.weight)),
            ));
        }
    }
    let kept = u64::from(before).saturating_sub(removed.len() as u64);
    if kept > 0 {
        let noun = if kept == 1 { "backend" } else { "backends" };
        lines.push(("same", format!("  {kept} {noun} unchanged")));
    }
    lines
}

/// One side of a change's whole membership: every member, those the change
/// took away (`before`) or brought (`after`) marked.
fn member_list(
    members: &[BackendSpec],
    moved: &[BackendSpec],
    class: &'static str,
    side: &'static str,
) -> impl IntoView + use<> {
    let items = members
        .iter()
        .map(|m| {
            let text = format!("{} (weight {})", backend_name(m), weight_text(m.weight));
            let class = if moved.contains(m) { class } else { "same" };
            view! { <li class=class>{text}</li> }
        })
        .collect_view();
    view! { <ul class="members-diff" data-test=side>{items}</ul> }
}

/// The upstream's whole membership before and after a change, asked of
/// the server on demand: the log keeps what each change moved, and the
/// server replays the rest.
#[component]
fn WholeMembership(
    /// The change.
    id: i64,
) -> impl IntoView {
    let loaded = RwSignal::new(None::<Result<DiscoveryChange, ApiError>>);
    let asked = RwSignal::new(false);
    let show = move |_| {
        asked.set(true);
        spawn_local(async move { loaded.set(Some(api::discovery_change(id).await)) });
    };
    let body = move || {
        let change = match loaded.get()? {
            Ok(change) => change,
            Err(e) => {
                return Some(view! { <p class="error">{e.message()}</p> }.into_any());
            }
        };
        let (Some(before), Some(after)) = (change.before, change.after) else {
            return Some(
                view! {
                    <p class="muted" data-test="change-whole-none">
                        "Not known: the change was not applied, or its upstream is gone."
                    </p>
                }
                .into_any(),
            );
        };
        let added = change.added.unwrap_or_default();
        let removed = change.removed.unwrap_or_default();
        Some(
            view! {
                <div class="whole-membership">
                    <div>
                        <h5>{format!("Before ({})", before.len())}</h5>
                        {member_list(&before, &removed, "removed", "change-before")}
                    </div>
                    <div>
                        <h5>{format!("After ({})", after.len())}</h5>
                        {member_list(&after, &added, "added", "change-after")}
                    </div>
                </div>
            }
            .into_any(),
        )
    };
    view! {
        <Show
            when=move || asked.get()
            fallback=move || view! {
                <button class="ghost" data-test="change-whole" on:click=show>"Whole membership"</button>
            }
        >
            {move || body().unwrap_or_else(|| view! { <p class="muted">"Loading…"</p> }.into_any())}
        </Show>
    }
}

/// The detail of one change: its correlation id, the members it moved,
/// each node's outcome and the arguments it was asked with.
fn change_detail(c: &DiscoveryChange) -> impl IntoView + use<> {
    let id = c.id;
    let correlation = (!c.correlation_id.is_empty()).then(|| {
        let href = format!(
            "/discovery-log?correlation_id={}",
            String::from(js_sys::encode_uri_component(&c.correlation_id))
        );
        let text = c.correlation_id.clone();
        view! { <A href=href attr:data-test="change-correlation">{text}</A> }
    });
    let members = match (&c.removed, &c.added, c.members_before, c.members_after) {
        (Some(removed), Some(added), Some(before), Some(after)) => {
            let summary = format!("{before} backends before, {after} after");
            let lines = member_changes(removed, added, before);
            Some(view! {
                <h4>"Members"</h4>
                <p class="muted">{summary}</p>
                <ul class="members-diff" data-test="change-members">
                    {lines.into_iter().map(|(class, text)| view! { <li class=class>{text}</li> }).collect_view()}
                </ul>
                <WholeMembership id=id />
            })
        }
        _ => None,
    };
    let args = serde_json::to_string_pretty(&c.args).unwrap_or_default();
    let message = if c.message.is_empty() {
        "(not finished yet)".to_owned()
    } else {
        c.message.clone()
    };
    view! {
        <div class="change-detail-body">
            <dl class="facts">
                <dt>"Correlation id"</dt><dd>{correlation.map_or_else(|| "—".into_any(), IntoAny::into_any)}</dd>
                <dt>"Upstream"</dt><dd>{c.upstream_id.map(|u| view! { <A href=format!("/upstreams/{u}")>{format!("#{u}")}</A> })}</dd>
                <dt>"Finished (UTC)"</dt><dd>{c.finished_at.as_deref().map_or_else(|| "—".to_owned(), short_time)}</dd>
            </dl>
            {members}
            <h4>"Node by node"</h4>
            <pre class="code change-message" data-test="change-message">{message}</pre>
            <h4>"Arguments"</h4>
            <pre class="code">{args}</pre>
        </div>
    }
}

/// Changes of the log, newest first; each row opens to its detail.
#[component]
pub(crate) fn ChangeTable(
    /// The changes shown.
    changes: Signal<Vec<DiscoveryChange>>,
    /// The table's element id.
    id: &'static str,
) -> impl IntoView {
    let open = RwSignal::new(BTreeSet::<i64>::new());
    view! {
        <table id=id class="table changes">
            <thead><tr><th>"When (UTC)"</th><th>"Who"</th><th>"Action"</th><th>"Target"</th><th>"State"</th><th>"Revision"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || changes.get().into_iter().map(|c| {
                    let cid = c.id;
                    let is_open = move || open.with(|o| o.contains(&cid));
                    let detail = c.clone();
                    view! {
                        <tr data-test="change" data-id=cid.to_string() data-state=c.state.clone() data-action=c.action.clone()>
                            <td>{short_time(&c.at)}</td>
                            <td>{c.actor.clone()}</td>
                            <td><code>{c.action.clone()}</code></td>
                            <td class="description">{c.target.clone()}</td>
                            <td>{state_badge(&c.state)}</td>
                            <td>{c.revision.map(|r| r.to_string()).unwrap_or_default()}</td>
                            <td class="actions">
                                <button class="ghost expand-change" on:click=move |_| open.update(|o| if !o.remove(&cid) { o.insert(cid); })>
                                    {move || if is_open() { "Hide" } else { "Details" }}
                                </button>
                            </td>
                        </tr>
                        {move || is_open().then(|| view! {
                            <tr class="change-detail" data-id=cid.to_string()>
                                <td colspan="7">{change_detail(&detail)}</td>
                            </tr>
                        })}
                    }
                }).collect_view()}
            </tbody>
        </table>
        <Show when=move || changes.with(Vec::is_empty)>
            <p class="empty">"No changes recorded."</p>
        </Show>
    }
}

/// The operation log: searched, filtered by action, actor, correlation id
/// and upstream (the last two from the address, e.g. a link of a change).
#[component]
pub(crate) fn DiscoveryLogPage() -> impl IntoView {
    let query = use_query_map();
    let given = move |name: &str| query.with_untracked(|p| p.get(name)).unwrap_or_default();
    let page = RwSignal::new(1_u32);
    let q = RwSignal::new(given("q"));
    let action = RwSignal::new(given("action"));
    let actor = RwSignal::new(given("actor"));
    let correlation = RwSignal::new(given("correlation_id"));
    let upstream = RwSignal::new(given("upstream_id").parse::<i64>().ok());
    // A link to the log with other filters (a change's correlation id)
    // while the page is open sets them; filters typed since stay unless
    // the address names them.
    Effect::new(move || {
        query.with(|params| {
            let mut moved = false;
            for (name, signal) in [
                ("q", q),
                ("action", action),
                ("actor", actor),
                ("correlation_id", correlation),
            ] {
                if let Some(value) = params.get(name).filter(|v| *v != signal.get_untracked()) {
                    signal.set(value);
                    moved = true;
                }
            }
            let id = params
                .get("upstream_id")
                .and_then(|u| u.parse::<i64>().ok());
            if id.is_some() && id != upstream.get_untracked() {
                upstream.set(id);
                moved = true;
            }
            if moved {
                page.set(1);
            }
        });
    });
    let listing = LocalResource::new(move || {
        let filter = ChangeFilter {
            upstream_id: upstream.get(),
            actor: Some(actor.get()),
            action: Some(action.get()),
            correlation_id: Some(correlation.get()),
            q: Some(q.get()),
        };
        let page = page.get();
        async move { api::discovery_changes(&filter, page, PageQuery::DEFAULT_PER_PAGE).await }
    });
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        error.set(match listing.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let typed = move |signal: RwSignal<String>| {
        move |ev| {
            signal.set(event_target_value(&ev));
            page.set(1);
        }
    };
    view! {
        <div class="page-head">
            <h1>"Operation log"</h1>
            <p class="subtitle">
                "Every change to an upstream's members and every re-sync: who asked, the members each added and removed, and how each balancer node took it. "
                <A href="/discovery">"Service discovery"</A>
            </p>
        </div>
        <div class="toolbar filters">
            <input id="log-search" type="search" placeholder="Search targets, arguments and messages"
                prop:value=move || q.get() on:input=typed(q)/>
            <select id="log-action" on:change=typed(action)>
                <option value="" selected=move || action.get().is_empty()>"Any action"</option>
                {ACTIONS.into_iter().map(|a| view! { <option value=a selected=move || action.get() == a>{a}</option> }).collect_view()}
            </select>
            <input id="log-actor" type="search" placeholder="Who, e.g. user:admin or task:12"
                prop:value=move || actor.get() on:input=typed(actor)/>
            <input id="log-correlation" type="search" placeholder="Correlation id"
                prop:value=move || correlation.get() on:input=typed(correlation)/>
            {move || upstream.get().map(|u| view! {
                <button id="log-upstream" class="ghost" title="Show every upstream's changes"
                    on:click=move |_| { upstream.set(None); page.set(1); }>{format!("Upstream #{u} ×")}</button>
            })}
        </div>
        <ErrorBanner error all=true/>
        <ChangeTable id="changes-table" changes=Signal::derive(move || current.get().map(|p| p.items).unwrap_or_default())/>
        <Pager page=current current=page noun=("change", "changes")/>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(address: &str, port: u16, weight: u32) -> BackendSpec {
        BackendSpec {
            address: address.to_owned(),
            port,
            weight: Some(weight),
        }
    }

    #[test]
    fn member_changes_name_removed_added_and_reweighted_backends() {
        let before = [
            backend("10.0.0.1", 80, 10),
            backend("10.0.0.2", 80, 10),
            backend("10.0.0.3", 80, 10),
        ];
        let after = [
            backend("10.0.0.1", 80, 10),
            backend("10.0.0.2", 80, 5),
            backend("10.0.0.4", 8080, 10),
        ];
        // What the server says the change moved.
        let (added, removed) = dcp_api_types::member_delta(&before, &after);
        assert_eq!(
            member_changes(&removed, &added, 3),
            [
                ("changed", "~ 10.0.0.2:80 weight 10 → 5".to_owned()),
                ("removed", "- 10.0.0.3:80 (weight 10)".to_owned()),
                ("added", "+ 10.0.0.4:8080 (weight 10)".to_owned()),
                ("same", "  1 backend unchanged".to_owned()),
            ]
        );
        assert!(member_changes(&[], &[], 0).is_empty());
        // The same backend, however its address is spelled.
        let (added, removed) =
            dcp_api_types::member_delta(&[backend("Web-1", 80, 1)], &[backend("web-1", 80, 1)]);
        assert_eq!(
            member_changes(&removed, &added, 1),
            [("same", "  1 backend unchanged".to_owned())]
        );
    }
}
