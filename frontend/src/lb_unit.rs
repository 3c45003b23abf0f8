//! One balancer unit: its nodes and what each serves, its configuration
//! files (every version kept, viewed, edited and compared), and its
//! releases, followed live node by node.

use std::collections::BTreeMap;

use dcp_api_types::{
    ConfigFileInput, ConfigFileVersion, FileRef, LbNode, LbNodeInput, LbNodeUpdate, LbUnit,
    MachineState, PageQuery, Release, ReleaseInput, SyncReport,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_params_map},
};

use crate::{
    api::{self, ApiError},
    components::{
        Confirm, ConfirmDelete, Doomed, ErrorBanner, Modal, Pager, load_error, short_time,
        show_form_error,
    },
    diff::{self, Shown},
    discovery::{UnitDialog, UnitEditor, parse_settings, settings_text, state_badge},
    executions::duration,
    templates::Labelled,
};

/// Releases a page of the list shows.
const RELEASES_PER_PAGE: u32 = 10;
/// Unchanged lines a diff shows around each change.
const DIFF_CONTEXT: usize = 3;

/// A unit's files: each path with its versions, newest first.
fn by_path(versions: &[ConfigFileVersion]) -> BTreeMap<String, Vec<ConfigFileVersion>> {
    let mut files: BTreeMap<String, Vec<ConfigFileVersion>> = BTreeMap::new();
    for v in versions {
        files.entry(v.path.clone()).or_default().push(v.clone());
    }
    for list in files.values_mut() {
        list.sort_by_key(|v| std::cmp::Reverse(v.version));
    }
    files
}

/// "nginx.conf v3, conf.d/gzip.conf v1".
fn files_text(files: &[FileRef]) -> String {
    if files.is_empty() {
        return "no files".to_owned();
    }
    files
        .iter()
        .map(|f| format!("{} v{}", f.path, f.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether a release is still going (its page follows it).
fn under_way(state: &str) -> bool {
    matches!(state, "pending" | "running")
}

/// Whether the unit can go back to `release`: an earlier one whose files
/// went live on some node at least (a failed release's files would fail
/// again).
fn can_roll_back_to(release: &Release, newest: Option<i64>) -> bool {
    newest.is_some_and(|n| release.id < n)
        && matches!(release.state.as_str(), "succeeded" | "partial")
}

/// One unit, by the id in the address.
#[component]
pub(crate) fn UnitPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    move || match id() {
        Some(id) => view! { <Unit id/> }.into_any(),
        None => {
            let error = RwSignal::new(Some(ApiError::local("no such unit")));
            view! { <ErrorBanner error all=true/> }.into_any()
        }
    }
}

/// Unit `id`'s page.
#[component]
fn Unit(id: i64) -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let loaded = LocalResource::new(move || {
        reload.track();
        api::lb_unit(id)
    });
    let groups = LocalResource::new(api::lb_groups);
    let error = load_error(loaded);
    let unit = Signal::derive(move || loaded.get().and_then(Result::ok));
    let files_reload = RwSignal::new(0_u32);
    let files = LocalResource::new(move || {
        files_reload.track();
        api::unit_files(id)
    });
    let files_error = load_error(files);
    let versions = Signal::derive(move || files.get().and_then(Result::ok).unwrap_or_default());
    let editor = RwSignal::new(None::<UnitEditor>);
    let deleting = RwSignal::new(None::<Doomed>);
    let navigate = StoredValue::new_local(use_navigate());
    view! {
        <ErrorBanner error all=true/>
        {move || unit.get().map(|u| {
            let group = groups.get().and_then(Result::ok).and_then(|gs| gs.into_iter().find(|g| g.id == u.group_id))
                .map_or_else(|| format!("group #{}", u.group_id), |g| format!("group {}", g.name));
            let config = settings_text(&u.config);
            let (for_edit, doomed) = (u.clone(), Doomed { id: u.id, name: u.name.clone() });
            view! {
                <div class="page-head">
                    <h1 id="unit-name">{u.name.clone()}</h1>
                    <p class="subtitle">
                        <A href="/discovery">"Service discovery"</A>
                        {format!(" · {group} · plugin {}", u.plugin)}
                        {u.publish_group_id.map(|g| view! { " · after each publish runs " <A href="/command-groups">{format!("command group #{g}")}</A> })}
                    </p>
                    {(!u.description.is_empty()).then(|| view! { <p class="subtitle">{u.description.clone()}</p> })}
                </div>
                <div class="toolbar">
                    <button id="unit-edit" class="ghost" on:click=move |_| editor.set(Some(UnitEditor::new(for_edit.group_id, Some(&for_edit))))>"Edit unit"</button>
                    <button id="unit-delete" class="ghost danger" on:click=move |_| deleting.set(Some(doomed.clone()))>"Delete unit"</button>
                </div>
                {(!config.is_empty()).then(|| view! {
                    <h3>"Settings"</h3>
                    <pre id="unit-config" class="code">{config}</pre>
                })}
            }
        })}
        <Nodes unit_id=id unit reload/>
        <ErrorBanner error=files_error all=true/>
        <Configuration unit_id=id versions files_reload/>
        <Releases unit_id=id versions on_ended=Callback::new(move |()| reload.update(|n| *n += 1))/>
        <UnitDialog editor on_saved=Callback::new(move |_| reload.update(|n| *n += 1))/>
        <ConfirmDelete noun="unit" target=deleting delete=api::delete_lb_unit
            note="Only a unit without nodes can go. Its files and releases go with it."
            on_deleted=Callback::new(move |()| navigate.with_value(|go| go("/discovery", Default::default())))/>
    }
}

/// A node whose own settings are being edited.
#[derive(Debug, Clone, Copy)]
struct NodeSettings {
    id: i64,
    text: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

/// A node about to be taken out of its unit: (id, address, unit name,
/// whether it is a cloud load balancer).
type NodeRemoval = (i64, String, String, bool);

fn node_removal_question((_, address, unit, cloud): &NodeRemoval) -> String {
    format!(
        "Take {address} out of unit {unit}? DCP stops pushing upstreams and releases to it; \
         its balancer keeps serving what it has now, and {} stays.",
        if *cloud {
            "the cloud load balancer"
        } else {
            "the machine"
        }
    )
}

/// A node as the page names it: its machine's address, or its account and
/// the load balancer its settings (its own over the unit's) name.
fn node_address(node: &LbNode, unit_config: &serde_json::Value) -> String {
    if let Some(address) = &node.address {
        return address.clone();
    }
    match (&node.account_name, node.machine_id) {
        (Some(account), _) => {
            let balancer = node
                .settings
                .get("load_balancer_id")
                .or_else(|| unit_config.get("load_balancer_id"))
                .and_then(serde_json::Value::as_str);
            match balancer {
                Some(id) => format!("{account} · {id}"),
                None => account.clone(),
            }
        }
        (None, Some(machine)) => format!("machine #{machine}"),
        (None, None) => format!("node #{}", node.id),
    }
}

/// Where a node runs: its machine (and the machine's state), or the cloud
/// account its load balancer belongs to.
fn node_host(node: &LbNode) -> AnyView {
    match (node.machine_id, node.account_id) {
        (Some(machine), _) => {
            let state = node.machine_state.clone().unwrap_or_default();
            view! {
                <A href=format!("/machines/{machine}")>{format!("#{machine}")}</A>
                <span class=format!("badge machine-{state}")>{state.clone()}</span>
            }
            .into_any()
        }
        (None, Some(_)) => {
            let account = node.account_name.clone().unwrap_or_default();
            view! {
                <A href="/accounts">{account}</A>
                <span class="badge" data-test="node-cloud">"cloud load balancer"</span>
            }
            .into_any()
        }
        (None, None) => ().into_any(),
    }
}

/// The unit's nodes: what each serves, re-syncs, adding and removing.
#[component]
fn Nodes(unit_id: i64, unit: Signal<Option<LbUnit>>, reload: RwSignal<u32>) -> impl IntoView {
    // The last re-sync: of what, and what each node did.
    let report = RwSignal::new(None::<(String, SyncReport)>);
    // The node being re-synced; 0 is the whole unit.
    let busy = RwSignal::new(None::<i64>);
    let action_error = RwSignal::new(None::<ApiError>);
    let bump = move || reload.update(|n| *n += 1);
    let resync = move |node: Option<(i64, String)>| {
        busy.set(Some(node.as_ref().map_or(0, |n| n.0)));
        action_error.set(None);
        spawn_local(async move {
            let result = match &node {
                Some((id, _)) => api::resync_lb_node(*id).await,
                None => api::resync_unit(unit_id).await,
            };
            busy.set(None);
            match result {
                Ok(done) => {
                    let what = node.map_or_else(|| "every node".to_owned(), |n| n.1);
                    report.set(Some((what, done)));
                    bump();
                }
                Err(e) => action_error.set(Some(e)),
            }
        });
    };
    let adding = RwSignal::new(false);
    let settings = RwSignal::new(None::<NodeSettings>);
    let removing = RwSignal::new(None::<NodeRemoval>);
    let save_settings = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = settings.get_untracked() else {
            return;
        };
        let value = match parse_settings("settings", &ed.text.get_untracked()) {
            Ok(v) => v,
            Err(e) => return ed.error.set(Some(e)),
        };
        spawn_local(async move {
            match api::update_lb_node(ed.id, &LbNodeUpdate { settings: value }).await {
                Ok(_) => {
                    settings.set(None);
                    bump();
                }
                Err(e) => ed.error.set(Some(e)),
            }
        });
    };
    view! {
        <div class="section-head">
            <h2>"Nodes"</h2>
            <span class="spacer"></span>
            <button id="add-lb-node" class="primary" on:click=move |_| adding.set(true)>"Add node"</button>
            <button id="unit-resync" disabled=move || busy.get().is_some() on:click=move |_| resync(None)>
                {move || if busy.get() == Some(0) { "Re-syncing…" } else { "Re-sync every node" }}
            </button>
        </div>
        <ErrorBanner error=action_error all=true/>
        {move || report.get().map(|(what, r)| {
            let tone = match r.state.as_str() {
                "succeeded" => "banner success",
                "partial" => "banner warning",
                _ => "banner error",
            };
            view! {
                <div id="sync-report" class=tone data-state=r.state.clone()>
                    <p>{format!("Re-sync of {what}: ")}{state_badge(&r.state)}
                        <button class="ghost" on:click=move |_| report.set(None)>"Dismiss"</button></p>
                    <pre class="code">{r.message.clone()}</pre>
                </div>
            }
        })}
        <table id="lb-nodes-table" class="table">
            <thead><tr><th>"Address"</th><th>"Machine or account"</th><th>"Serves"</th><th>"Added (UTC)"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || unit.get().map(|u| u.nodes.into_iter().map(|n| {
                    let (nid, address) = (n.id, node_address(&n, &u.config));
                    let for_resync = address.clone();
                    let removal = (nid, address.clone(), u.name.clone(), n.account_id.is_some());
                    let own = settings_text(&n.settings);
                    let sync = if n.in_sync {
                        view! { <span class="badge in-sync" data-test="node-in-sync">"in sync"</span> }.into_any()
                    } else {
                        view! {
                            <ul class="drift" data-test="node-drift">
                                {n.drift.iter().map(|d| {
                                    let name = d.upstream.clone();
                                    view! {
                                    <li data-upstream=d.upstream.clone()>
                                        <A href=format!("/upstreams/{}", d.upstream_id)>{name}</A>
                                        {format!(": serves {}, not the current one", d.revision.map_or_else(|| "nothing yet".to_owned(), |r| format!("revision {r}")))}
                                        {(!d.error.is_empty()).then(|| view! { <div class="error-text">{d.error.clone()}</div> })}
                                    </li>
                                }}).collect_view()}
                            </ul>
                        }.into_any()
                    };
                    view! {
                        <tr data-test="lb-node" data-id=nid.to_string() data-address=address data-in-sync=n.in_sync.to_string()>
                            <td class="name"><code>{address.clone()}</code>
                                {(!own.is_empty()).then(|| view! { <div class="muted" title=own.clone()>"own settings"</div> })}</td>
                            <td>{node_host(&n)}</td>
                            <td class="sync">{sync}</td>
                            <td>{short_time(&n.created_at)}</td>
                            <td class="actions">
                                <button class="ghost resync-node" disabled=move || busy.get().is_some()
                                    on:click=move |_| resync(Some((nid, for_resync.clone())))>
                                    {move || if busy.get() == Some(nid) { "Re-syncing…" } else { "Re-sync" }}
                                </button>
                                <button class="ghost node-settings" on:click=move |_| settings.set(Some(NodeSettings {
                                    id: nid, text: RwSignal::new(own.clone()), error: RwSignal::new(None),
                                }))>"Settings"</button>
                                <button class="ghost danger remove-node" on:click=move |_| removing.set(Some(removal.clone()))>"Remove"</button>
                            </td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || unit.get().is_some_and(|u| u.nodes.is_empty())>
            <p class="empty">"No nodes yet: add a machine that runs the balancer, or a cloud load balancer."</p>
        </Show>

        <AddNodeDialog unit_id open=adding on_added=Callback::new(move |_| bump())/>
        {move || settings.get().map(|ed| view! {
            <Modal title=Signal::derive(|| "A node's own settings".to_owned()) on_close=Callback::new(move |()| settings.set(None))>
                <form id="lb-node-settings-form" novalidate on:submit=save_settings>
                    <ErrorBanner error=ed.error all=true shown=vec!["settings".into()]/>
                    <Labelled field="settings" id="lb-node-settings-edit" label="Settings" error=ed.error
                        hint="a JSON object over the unit's settings; empty: the unit's as they are">
                        <textarea id="lb-node-settings-edit" class="code" rows="6" bind:value=ed.text></textarea>
                    </Labelled>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| settings.set(None)>"Cancel"</button>
                        <button id="lb-node-settings-save" type="submit" class="primary">"Save"</button>
                    </div>
                </form>
            </Modal>
        })}
        <Confirm title="Remove a node" target=removing question=node_removal_question
            action="Remove" id="lb-node-remove-confirm" danger=true
            run=|(id, _, _, _): NodeRemoval| api::delete_lb_node(id)
            on_done=Callback::new(move |()| bump())/>
    }
}

/// Adds a node, with its own settings over the unit's: a machine DCP has,
/// picked or by address, or a cloud load balancer of a cloud account.
#[component]
fn AddNodeDialog(unit_id: i64, open: RwSignal<bool>, on_added: Callback<LbNode>) -> impl IntoView {
    // A cloud load balancer, not a machine.
    let cloud = RwSignal::new(false);
    let by_machine = RwSignal::new(true);
    let machine = RwSignal::new(String::new());
    let account = RwSignal::new(String::new());
    let address = RwSignal::new(String::new());
    let port = RwSignal::new(String::new());
    let settings = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ApiError>);
    // Ready machines, asked each time the dialog opens.
    let machines = LocalResource::new(move || {
        let open = open.get();
        async move {
            if !open {
                return Ok(Vec::new());
            }
            api::machines(1, PageQuery::MAX_PER_PAGE, Some(MachineState::Ready), None)
                .await
                .map(|p| p.items)
        }
    });
    // The cloud accounts, asked when the dialog opens on a cloud load balancer.
    let accounts = LocalResource::new(move || {
        let wanted = open.get() && cloud.get();
        async move {
            if !wanted {
                return Ok(Vec::new());
            }
            api::accounts().await
        }
    });
    let close = move || {
        open.set(false);
        error.set(None);
    };
    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let input = (|| {
            let settings = parse_settings("settings", &settings.get_untracked())?;
            if cloud.get_untracked() {
                let id = account
                    .get_untracked()
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid("account_id", "choose an account"))?;
                return Ok::<_, ApiError>(LbNodeInput {
                    machine_id: None,
                    address: None,
                    port: None,
                    account_id: Some(id),
                    settings,
                });
            }
            if by_machine.get_untracked() {
                let id = machine
                    .get_untracked()
                    .parse::<i64>()
                    .map_err(|_| ApiError::invalid("machine_id", "choose a machine"))?;
                return Ok::<_, ApiError>(LbNodeInput {
                    machine_id: Some(id),
                    address: None,
                    port: None,
                    account_id: None,
                    settings,
                });
            }
            Ok(LbNodeInput {
                machine_id: None,
                address: Some(address.get_untracked().trim().to_owned()),
                port: crate::discovery::optional_number(
                    "port",
                    &port.get_untracked(),
                    "must be 1–65535",
                )?,
                account_id: None,
                settings,
            })
        })();
        let input = match input {
            Ok(input) => input,
            Err(e) => return show_form_error(error, e),
        };
        spawn_local(async move {
            match api::add_lb_node(unit_id, &input).await {
                Ok(node) => {
                    close();
                    machine.set(String::new());
                    account.set(String::new());
                    address.set(String::new());
                    settings.set(String::new());
                    on_added.run(node);
                }
                Err(e) => show_form_error(error, e),
            }
        });
    };
    move || {
        open.get().then(|| view! {
            <Modal title=Signal::derive(|| "Add a node".to_owned()) on_close=Callback::new(move |()| close())>
                <form id="lb-node-form" novalidate on:submit=save>
                    <div class="segmented">
                        <button id="lb-node-kind-machine" type="button" class:selected=move || !cloud.get()
                            on:click=move |_| cloud.set(false)>"Machine"</button>
                        <button id="lb-node-kind-cloud" type="button" class:selected=move || cloud.get()
                            on:click=move |_| cloud.set(true)>"Cloud load balancer"</button>
                    </div>
                    <ErrorBanner error all=true shown=vec!["machine_id".into(), "address".into(), "port".into(), "account_id".into(), "settings".into()]/>
                    <Show when=move || cloud.get()>
                        <p class="hint">"A load balancer of a cloud account (e.g. an Aliyun SLB for the slb plugin), driven through the cloud's API with the account's key; the settings name which one."</p>
                        <Labelled field="account_id" id="lb-node-account" label="Cloud account" error hint="the account the load balancer belongs to">
                            <select id="lb-node-account" on:change=move |ev| account.set(event_target_value(&ev))>
                                <option value="" selected=move || account.get().is_empty()>"Choose…"</option>
                                {move || accounts.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|a| {
                                    let picked = a.id.to_string();
                                    view! { <option value=a.id.to_string() selected=move || account.get() == picked>
                                        {format!("{} ({})", a.name, a.provider)}</option> }
                                }).collect_view()}
                            </select>
                        </Labelled>
                    </Show>
                    <Show when=move || !cloud.get()>
                        <p class="hint">"A machine DCP made or adopted that runs the balancer; DCP logs in to it with the machine's key."</p>
                        <div class="segmented">
                            <button id="lb-node-by-machine" type="button" class:selected=move || by_machine.get()
                                on:click=move |_| by_machine.set(true)>"Pick a machine"</button>
                            <button id="lb-node-by-address" type="button" class:selected=move || !by_machine.get()
                                on:click=move |_| by_machine.set(false)>"By address"</button>
                        </div>
                    </Show>
                    <Show when=move || !cloud.get() && by_machine.get()>
                        <Labelled field="machine_id" id="lb-node-machine" label="Machine" error hint="ready machines">
                            <select id="lb-node-machine" on:change=move |ev| machine.set(event_target_value(&ev))>
                                <option value="" selected=move || machine.get().is_empty()>"Choose…"</option>
                                {move || machines.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|m| {
                                    let picked = m.id.to_string();
                                    view! { <option value=m.id.to_string() selected=move || machine.get() == picked>
                                        {format!("{} ({})", m.name, m.address.clone().unwrap_or_default())}</option> }
                                }).collect_view()}
                            </select>
                        </Labelled>
                    </Show>
                    <Show when=move || !cloud.get() && !by_machine.get()>
                        <div class="row">
                            <Labelled field="address" id="lb-node-address" label="Address" error hint="of a machine DCP has">
                                <input id="lb-node-address" type="text" autocomplete="off" bind:value=address/>
                            </Labelled>
                            <Labelled field="port" id="lb-node-port" label="SSH port" error hint="empty: 22">
                                <input id="lb-node-port" type="number" min="1" max="65535" bind:value=port/>
                            </Labelled>
                        </div>
                    </Show>
                    <Labelled field="settings" id="lb-node-settings" label="Own settings" error
                        hint=r#"a JSON object over the unit's, e.g. {"prefix": "/srv/nginx"}, or a cloud load balancer's {"load_balancer_id": "lb-…"}; empty: the unit's"#>
                        <textarea id="lb-node-settings" class="code" rows="4" bind:value=settings></textarea>
                    </Labelled>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| close()>"Cancel"</button>
                        <button id="lb-node-save" type="submit" class="primary">"Add"</button>
                    </div>
                </form>
            </Modal>
        })
    }
}

/// The file being written: its path, the version it starts from, its text.
#[derive(Debug, Clone, Copy)]
struct FileEditor {
    /// A new file: the path is typed.
    new: bool,
    path: RwSignal<String>,
    from: Option<i64>,
    content: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

/// The unit's configuration files: every version, its text, edits saved as
/// new versions, and diffs between any two versions.
#[component]
fn Configuration(
    unit_id: i64,
    versions: Signal<Vec<ConfigFileVersion>>,
    files_reload: RwSignal<u32>,
) -> impl IntoView {
    let files = Memo::new(move |_| by_path(&versions.get()));
    // The file whose history is open.
    let selected = RwSignal::new(None::<String>);
    let editor = RwSignal::new(None::<FileEditor>);
    let saved = RwSignal::new(None::<ConfigFileVersion>);
    let open_error = RwSignal::new(None::<ApiError>);
    // Edits start from the newest version's text.
    let edit = move |path: String, version: Option<i64>| {
        open_error.set(None);
        let Some(version) = version else {
            editor.set(Some(FileEditor {
                new: true,
                path: RwSignal::new(path),
                from: None,
                content: RwSignal::new(String::new()),
                error: RwSignal::new(None),
            }));
            return;
        };
        spawn_local(async move {
            match api::unit_file(unit_id, &path, version).await {
                Ok(file) => editor.set(Some(FileEditor {
                    new: false,
                    path: RwSignal::new(path),
                    from: Some(version),
                    content: RwSignal::new(file.content.unwrap_or_default()),
                    error: RwSignal::new(None),
                })),
                Err(e) => open_error.set(Some(e)),
            }
        });
    };
    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        let input = ConfigFileInput {
            path: ed.path.get_untracked().trim().to_owned(),
            content: ed.content.get_untracked(),
        };
        spawn_local(async move {
            match api::add_unit_file(unit_id, &input).await {
                Ok(file) => {
                    editor.set(None);
                    selected.set(Some(file.path.clone()));
                    saved.set(Some(file));
                    files_reload.update(|n| *n += 1);
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    view! {
        <div class="section-head">
            <h2>"Configuration"</h2>
            <span class="spacer"></span>
            <button id="new-file" on:click=move |_| edit(String::new(), None)>"New file"</button>
        </div>
        <p class="hint">"Files relative to the balancer's configuration directory. Every save is a new version; a release puts versions live."</p>
        <ErrorBanner error=open_error all=true/>
        {move || saved.get().map(|f| view! {
            <div id="file-saved" class="banner success">
                {format!("Saved {} as version {}. Publish a release to put it live.", f.path, f.version)}
                <button class="ghost" on:click=move |_| saved.set(None)>"Dismiss"</button>
            </div>
        })}
        <table id="files-table" class="table">
            <thead><tr><th>"File"</th><th>"Newest"</th><th>"Versions"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || files.get().into_iter().map(|(path, list)| {
                    let newest = list.first().map(|v| v.version);
                    let (for_view, for_edit) = (path.clone(), path.clone());
                    let latest = list.first().map(|v| format!("v{} by {}, {}", v.version, v.created_by, short_time(&v.created_at))).unwrap_or_default();
                    view! {
                        <tr data-test="file" data-path=path>
                            <td class="name"><code>{path.clone()}</code></td>
                            <td>{latest}</td>
                            <td>{list.len().to_string()}</td>
                            <td class="actions">
                                <button class="ghost file-history" on:click=move |_| selected.set(Some(for_view.clone()))>"History"</button>
                                <button class="ghost edit-file" on:click=move |_| edit(for_edit.clone(), newest)>"Edit"</button>
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        <Show when=move || files.with(BTreeMap::is_empty)>
            <p class="empty">"No files yet: write the balancer's main configuration (nginx.conf) first."</p>
        </Show>
        {move || selected.get().and_then(|path| {
            let list = files.with(|f| f.get(&path).cloned())?;
            Some(view! { <FileHistory unit_id path list on_close=Callback::new(move |()| selected.set(None))/> })
        })}

        {move || editor.get().map(|ed| {
            let title = Signal::derive(move || if ed.new { "New file".to_owned() } else { format!("Edit {}", ed.path.get()) });
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="file-form" class="wide" novalidate on:submit=save>
                        <ErrorBanner error=ed.error all=true shown=vec!["path".into(), "content".into()]/>
                        <Labelled field="path" id="file-path" label="Path" error=ed.error hint="e.g. nginx.conf or conf.d/gzip.conf">
                            <input id="file-path" type="text" autocomplete="off" prop:readonly=!ed.new bind:value=ed.path/>
                        </Labelled>
                        <Labelled field="content" id="file-content" label="Text" error=ed.error>
                            <textarea id="file-content" class="code" rows="22" spellcheck="false" bind:value=ed.content></textarea>
                        </Labelled>
                        <p class="hint">{match ed.from {
                            Some(v) => format!("Starts from version {v}; saving makes the next version. Nothing goes live until a release."),
                            None => "Saving makes version 1. Nothing goes live until a release.".to_owned(),
                        }}</p>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="file-save" type="submit" class="primary">"Save as a new version"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}
    }
}

/// A file's versions: one version's text, and the diff between two.
#[component]
fn FileHistory(
    unit_id: i64,
    path: String,
    list: Vec<ConfigFileVersion>,
    on_close: Callback<()>,
) -> impl IntoView {
    let newest = list.first().map_or(1, |v| v.version);
    let viewing = RwSignal::new(newest);
    // The diff compares the previous version with the newest unless told.
    let from = RwSignal::new(list.get(1).map_or(newest, |v| v.version));
    let to = RwSignal::new(newest);
    let path = StoredValue::new(path);
    let text_of = move |version: i64| async move {
        let path = path.get_value();
        api::unit_file(unit_id, &path, version)
            .await
            .map(|f| f.content.unwrap_or_default())
    };
    let shown = LocalResource::new(move || text_of(viewing.get()));
    let compared = LocalResource::new(move || {
        let (a, b) = (from.get(), to.get());
        async move { Ok::<_, ApiError>((text_of(a).await?, text_of(b).await?)) }
    });
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        error.set(match (shown.get(), compared.get()) {
            (Some(Err(e)), _) | (_, Some(Err(e))) => Some(e),
            _ => None,
        });
    });
    let options = |picked: RwSignal<i64>| {
        list.iter()
            .map(|v| {
                let version = v.version;
                view! { <option value=version.to_string() selected=move || picked.get() == version>{format!("v{version}")}</option> }
            })
            .collect_view()
    };
    let (view_options, from_options, to_options) = (options(viewing), options(from), options(to));
    let pick = |signal: RwSignal<i64>| {
        move |ev| {
            if let Ok(v) = event_target_value(&ev).parse() {
                signal.set(v);
            }
        }
    };
    view! {
        <div id="file-panel" class="panel" data-path=path.get_value()>
            <div class="section-head">
                <h3><code>{path.get_value()}</code></h3>
                <span class="spacer"></span>
                <button class="ghost" id="file-panel-close" on:click=move |_| on_close.run(())>"Close"</button>
            </div>
            <ErrorBanner error all=true/>
            <table class="table compact" id="file-versions">
                <thead><tr><th>"Version"</th><th>"By"</th><th>"Saved (UTC)"</th><th class="actions"></th></tr></thead>
                <tbody>
                    {list.into_iter().map(|v| {
                        let version = v.version;
                        view! {
                            <tr data-test="file-version" data-version=version.to_string()>
                                <td>{format!("v{version}")}</td>
                                <td>{v.created_by.clone()}</td>
                                <td>{short_time(&v.created_at)}</td>
                                <td class="actions">
                                    <button class="ghost view-version" on:click=move |_| viewing.set(version)>"View"</button>
                                </td>
                            </tr>
                        }
                    }).collect_view()}
                </tbody>
            </table>
            <h4>"Text of "
                <select id="file-version" on:change=pick(viewing)>{view_options}</select></h4>
            <pre id="file-text" class="code" data-version=move || viewing.get().to_string()>
                {move || shown.get().and_then(Result::ok).unwrap_or_default()}
            </pre>
            <h4>"Changes from "
                <select id="diff-from" on:change=pick(from)>{from_options}</select>
                " to "
                <select id="diff-to" on:change=pick(to)>{to_options}</select></h4>
            <div id="file-diff" class="diff-view" data-from=move || from.get().to_string() data-to=move || to.get().to_string()>
                {move || compared.get().and_then(Result::ok).map(|(old, new)| {
                    let lines = diff::diff(&old, &new);
                    if lines.iter().all(|l| matches!(l, diff::Line::Same(_))) {
                        return view! { <p class="muted" data-test="diff-same">"The two versions are the same."</p> }.into_any();
                    }
                    diff::with_context(&lines, DIFF_CONTEXT).into_iter().map(|shown| match shown {
                        Shown::Line(line) => view! {
                            <div class=line.class()><span class="mark">{line.mark().to_string()}</span>{line.text().to_owned()}</div>
                        }.into_any(),
                        Shown::Folded(n) => view! {
                            <div class="diff-fold">{format!("… {n} unchanged line{}", if n == 1 { "" } else { "s" })}</div>
                        }.into_any(),
                    }).collect_view().into_any()
                })}
            </div>
        </div>
    }
}

/// Which versions a release publishes: the newest of every file, or those
/// picked (path → version; absent: left out).
#[derive(Debug, Clone, Copy)]
struct PublishForm {
    pick: RwSignal<bool>,
    picked: RwSignal<BTreeMap<String, i64>>,
    error: RwSignal<Option<ApiError>>,
}

/// The unit's releases: publishing, the list, and one release followed
/// live with every node's state and log; earlier good ones can be rolled
/// back to.
#[component]
fn Releases(
    unit_id: i64,
    versions: Signal<Vec<ConfigFileVersion>>,
    /// Called when a release followed here ends (its nodes changed).
    on_ended: Callback<()>,
) -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::releases(unit_id, page.get(), RELEASES_PER_PAGE)
    });
    let list_error = load_error(listing);
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    // The unit's newest release: page 1's first (newest first).
    let newest = RwSignal::new(None::<i64>);
    Effect::new(move || {
        if page.get() == 1
            && let Some(p) = current.get()
        {
            newest.set(p.items.first().map(|r| r.id));
        }
    });
    let shown = RwSignal::new(None::<i64>);
    let publishing = RwSignal::new(None::<PublishForm>);
    let rolling_back = RwSignal::new(None::<Release>);
    let files = Memo::new(move |_| by_path(&versions.get()));
    let bump = move || reload.update(|n| *n += 1);

    let open_publish = move |_| {
        let picked = files.with_untracked(|f| {
            f.iter()
                .filter_map(|(path, list)| list.first().map(|v| (path.clone(), v.version)))
                .collect()
        });
        publishing.set(Some(PublishForm {
            pick: RwSignal::new(false),
            picked: RwSignal::new(picked),
            error: RwSignal::new(None),
        }));
    };
    let publish = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(form) = publishing.get_untracked() else {
            return;
        };
        let input = ReleaseInput {
            files: form.pick.get_untracked().then(|| {
                form.picked
                    .get_untracked()
                    .into_iter()
                    .map(|(path, version)| FileRef { path, version })
                    .collect()
            }),
        };
        if input.files.as_ref().is_some_and(Vec::is_empty) {
            return form.error.set(Some(ApiError::invalid(
                "files",
                "pick a version of one file at least",
            )));
        }
        spawn_local(async move {
            match api::publish(unit_id, &input).await {
                Ok(release) => {
                    publishing.set(None);
                    shown.set(Some(release.id));
                    page.set(1);
                    bump();
                }
                Err(e) => form.error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="section-head">
            <h2>"Releases"</h2>
            <span class="spacer"></span>
            <button id="unit-publish" class="primary" disabled=move || files.with(BTreeMap::is_empty)
                title="Publish file versions to every node, one node at a time"
                on:click=open_publish>"Publish…"</button>
        </div>
        <ErrorBanner error=list_error all=true/>
        {move || shown.get().map(|id| view! {
            <ReleaseDetail id newest
                on_rollback=Callback::new(move |r: Release| rolling_back.set(Some(r)))
                on_ended=Callback::new(move |()| { bump(); on_ended.run(()); })
                on_close=Callback::new(move |()| shown.set(None))/>
        })}
        <table id="releases-table" class="table">
            <thead><tr><th>"Release"</th><th>"Files"</th><th>"State"</th><th>"By"</th><th>"Published (UTC)"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || current.get().map(|p| p.items.into_iter().map(|r| {
                    let id = r.id;
                    let back = can_roll_back_to(&r, newest.get()).then(|| {
                        let r = r.clone();
                        view! { <button class="ghost rollback-release" on:click=move |_| rolling_back.set(Some(r.clone()))>"Roll back to this release"</button> }
                    });
                    view! {
                        <tr data-test="release-row" data-id=id.to_string() data-state=r.state.clone()
                            class:selected=move || shown.get() == Some(id)>
                            <td class="name">{format!("#{id}")}
                                {r.rollback_of.map(|o| view! { <div class="muted">{format!("rollback to #{o}")}</div> })}</td>
                            <td>{files_text(&r.files)}</td>
                            <td>{state_badge(&r.state)}</td>
                            <td>{r.created_by.clone()}</td>
                            <td>{short_time(&r.created_at)}</td>
                            <td class="actions">
                                <button class="ghost release-details" on:click=move |_| shown.set(Some(id))>"Details"</button>
                                {back}
                            </td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"Nothing published yet."</p>
        </Show>
        <Pager page=current current=page noun=("release", "releases")/>

        {move || publishing.get().map(|form| view! {
            <Modal title=Signal::derive(|| "Publish a release".to_owned()) on_close=Callback::new(move |()| publishing.set(None))>
                <form id="publish-form" novalidate on:submit=publish>
                    <p class="hint">"Each node checks the files (nginx -t) before they go live and keeps its configuration if they fail; the first node that fails stops the release."</p>
                    <ErrorBanner error=form.error all=true/>
                    <label class="check"><input id="publish-newest" type="radio" name="publish-what"
                        prop:checked=move || !form.pick.get() on:change=move |_| form.pick.set(false)/>
                        " The newest version of every file"</label>
                    <label class="check"><input id="publish-pick" type="radio" name="publish-what"
                        prop:checked=move || form.pick.get() on:change=move |_| form.pick.set(true)/>
                        " Versions I pick"</label>
                    <table class="table compact" id="publish-files">
                        <thead><tr><th>"File"</th><th>"Version"</th></tr></thead>
                        <tbody>
                            {move || files.get().into_iter().map(|(path, list)| {
                                let key = path.clone();
                                let chosen = move || form.picked.with(|p| p.get(&key).copied());
                                let for_change = path.clone();
                                view! {
                                    <tr data-path=path>
                                        <td><code>{path.clone()}</code></td>
                                        <td>
                                            <select class="publish-version" data-path=path.clone() prop:disabled=move || !form.pick.get()
                                                on:change=move |ev| {
                                                    let value = event_target_value(&ev);
                                                    let path = for_change.clone();
                                                    form.picked.update(|p| match value.parse::<i64>() {
                                                        Ok(v) => { p.insert(path, v); }
                                                        Err(_) => { p.remove(&path); }
                                                    });
                                                }>
                                                {list.iter().map(|v| {
                                                    let version = v.version;
                                                    let chosen = chosen.clone();
                                                    view! { <option value=version.to_string() selected=move || chosen() == Some(version)>{format!("v{version}")}</option> }
                                                }).collect_view()}
                                                <option value="" selected=move || chosen().is_none()>"Leave out"</option>
                                            </select>
                                        </td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| publishing.set(None)>"Cancel"</button>
                        <button id="publish-confirm" type="submit" class="primary">"Publish"</button>
                    </div>
                </form>
            </Modal>
        })}

        <Confirm title="Roll back" target=rolling_back question=rollback_question
            action="Roll back" id="rollback-release-confirm"
            run=move |r: Release| async move {
                let again = api::rollback_release(r.id).await?;
                shown.set(Some(again.id));
                page.set(1);
                bump();
                Ok(())
            }
            on_done=Callback::new(|()| ())/>
    }
}

fn rollback_question(r: &Release) -> String {
    format!(
        "Publish the files of release #{} again ({}) to every node, one node at a time, as a new release?",
        r.id,
        files_text(&r.files)
    )
}

/// How long a node's part took, or since when it runs.
fn node_took(started: Option<&str>, finished: Option<&str>) -> String {
    match (started, finished) {
        (None, _) => String::new(),
        (Some(s), None) => format!("since {}", short_time(s)),
        (s, f) => duration(s, f),
    }
}

/// One release with each node's state and log, read again every second
/// while it is under way.
#[component]
fn ReleaseDetail(
    id: i64,
    newest: RwSignal<Option<i64>>,
    on_rollback: Callback<Release>,
    on_ended: Callback<()>,
    on_close: Callback<()>,
) -> impl IntoView {
    let release = RwSignal::new(None::<Release>);
    let error = RwSignal::new(None::<ApiError>);
    let asking = StoredValue::new(false);
    let fetch = move || {
        // One question at a time: a slow answer is not overtaken.
        if asking.get_value() {
            return;
        }
        asking.set_value(true);
        spawn_local(async move {
            match api::release(id).await {
                Ok(fresh) => {
                    error.set(None);
                    let was_going = release.get_untracked().is_none_or(|r| under_way(&r.state));
                    let ended = !under_way(&fresh.state);
                    release.set(Some(fresh));
                    if was_going && ended {
                        on_ended.run(());
                    }
                }
                Err(e) => error.set(Some(e)),
            }
            asking.set_value(false);
        });
    };
    fetch();
    crate::machines::every(1, move || {
        if release.with_untracked(|r| r.as_ref().is_none_or(|r| under_way(&r.state))) {
            fetch();
        }
    });
    view! {
        <div id="release-detail" class="panel" data-id=id.to_string()>
            <ErrorBanner error all=true/>
            {move || release.get().map(|r| {
                let back = can_roll_back_to(&r, newest.get()).then(|| {
                    let r = r.clone();
                    view! { <button id="release-rollback" class="ghost" on:click=move |_| on_rollback.run(r.clone())>"Roll back to this release"</button> }
                });
                let live = under_way(&r.state);
                view! {
                    <div class="section-head">
                        <h3>{format!("Release #{} ", r.id)}
                            <span id="release-state" data-state=r.state.clone()>{state_badge(&r.state)}</span>
                            {live.then(|| view! { <span class="muted" id="release-live">" following live…"</span> })}</h3>
                        <span class="spacer"></span>
                        {back}
                        <button class="ghost" id="release-close" on:click=move |_| on_close.run(())>"Close"</button>
                    </div>
                    <p class="subtitle">
                        {format!("{} · by {} · {}", files_text(&r.files), r.created_by, short_time(&r.created_at))}
                        {r.rollback_of.map(|o| format!(" · rollback to #{o}"))}
                        {r.finished_at.as_deref().map(|f| format!(" · ended {}", short_time(f)))}
                        {r.execution_id.map(|e| view! { " · " <A href=format!("/executions/{e}") attr:id="release-execution">"publish commands"</A> })}
                    </p>
                    <table id="release-nodes" class="table">
                        <thead><tr><th>"Node"</th><th>"State"</th><th>"Took"</th><th>"Log"</th></tr></thead>
                        <tbody>
                            {r.nodes.into_iter().map(|n| view! {
                                <tr id=format!("release-node-{}", n.node_id) data-test="release-node"
                                    data-address=n.address.clone() data-state=n.state.clone()>
                                    <td class="name"><code>{n.address.clone()}</code></td>
                                    <td>{state_badge(&n.state)}</td>
                                    <td>{node_took(n.started_at.as_deref(), n.finished_at.as_deref())}</td>
                                    <td>{if n.log.is_empty() {
                                        view! { <span class="muted">"—"</span> }.into_any()
                                    } else {
                                        view! { <pre class="code release-log">{n.log.clone()}</pre> }.into_any()
                                    }}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }
            })}
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(path: &str, version: i64) -> ConfigFileVersion {
        ConfigFileVersion {
            path: path.to_owned(),
            version,
            content: None,
            created_by: "admin".to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        }
    }

    fn release(id: i64, state: &str) -> Release {
        Release {
            id,
            unit_id: 1,
            files: vec![FileRef {
                path: "nginx.conf".to_owned(),
                version: 2,
            }],
            state: state.to_owned(),
            rollback_of: None,
            created_by: "admin".to_owned(),
            created_at: String::new(),
            finished_at: None,
            execution_id: None,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn files_group_by_path_newest_version_first() {
        let files = by_path(&[
            version("nginx.conf", 1),
            version("conf.d/gzip.conf", 1),
            version("nginx.conf", 3),
            version("nginx.conf", 2),
        ]);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            ["conf.d/gzip.conf", "nginx.conf"]
        );
        let nginx: Vec<i64> = files["nginx.conf"].iter().map(|v| v.version).collect();
        assert_eq!(nginx, [3, 2, 1]);
        assert_eq!(files_text(&release(1, "succeeded").files), "nginx.conf v2");
        assert_eq!(files_text(&[]), "no files");
    }

    #[test]
    fn only_earlier_releases_that_went_live_can_be_rolled_back_to() {
        assert!(can_roll_back_to(&release(1, "succeeded"), Some(2)));
        assert!(can_roll_back_to(&release(1, "partial"), Some(2)));
        assert!(!can_roll_back_to(&release(2, "succeeded"), Some(2)));
        assert!(!can_roll_back_to(&release(1, "failed"), Some(2)));
        assert!(!can_roll_back_to(&release(1, "succeeded"), None));
        assert!(under_way("running") && under_way("pending") && !under_way("partial"));
    }
}
