//! A pool's page: its nodes, expand / shrink / deploy dialogs, adding
//! machines by picking them or a server by address, and the pool's tasks.

use std::collections::BTreeSet;

use dcp_api_types::{
    AddNodes, AdoptMachine, ErrorDetail, Node, NodeAddress, NodeState, PageQuery, PoolInput,
    TaskInput, TaskKind, TaskState,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{
    components::A,
    hooks::{use_navigate, use_params_map},
};

use crate::{
    api::{self, ApiError},
    components::{ErrorBanner, Modal, Pager, load_error, short_time},
    machines::MachinePicker,
    services::BindingSelect,
    tasks::TaskTable,
    templates::Labelled,
};

/// Which dialog is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialog {
    Expand,
    Shrink,
    Deploy,
    AddMachines,
    AddServer,
}

/// Moves the server's error about the one address (`addresses[0].port`) to
/// the dialog's input (`port`); "no default key" (`addresses[0]`) belongs
/// under the key.
fn place_server_error(error: ApiError) -> ApiError {
    let Some(field) = error.0.field.clone() else {
        return error;
    };
    let to = match field.strip_prefix("addresses[0]") {
        Some("") => "private_key",
        Some(rest) => rest.trim_start_matches('.'),
        None => return error,
    };
    let message = error.for_field(&field).unwrap_or_default();
    ApiError(ErrorDetail {
        field: Some(to.to_owned()),
        message,
        ..error.0
    })
}

/// What the add-server dialog will log in with, said before trying.
fn credential_hint(default_key: Option<bool>, key: &str, password: &str) -> &'static str {
    if !key.trim().is_empty() || !password.is_empty() {
        "DCP adopts the server with this key or password (a password installs a key DCP makes, \
         and is not stored), then adds it as a machine."
    } else {
        match default_key {
            Some(true) => "No key given: DCP's default key will be used.",
            Some(false) => "No default key is configured: give a key or password.",
            None => "",
        }
    }
}
/// One pool.
#[component]
pub(crate) fn PoolPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let reload = RwSignal::new(0_u32);
    let node_page = RwSignal::new(1_u32);
    let loaded = LocalResource::new(move || {
        reload.track();
        let (id, node_page) = (id(), node_page.get());
        async move {
            let id = id.ok_or_else(|| ApiError::local("no such pool"))?;
            let pool = api::pool(id).await?;
            let nodes = api::pool_nodes(id, node_page, PageQuery::DEFAULT_PER_PAGE).await?;
            let tasks = api::tasks(1, api::TaskScope::Pool(id)).await?;
            let templates = api::task_templates().await?;
            Ok::<_, ApiError>((pool, nodes, tasks.items, templates))
        }
    });
    let error = load_error(loaded);
    let data = move || loaded.get().and_then(Result::ok);
    // While a task of the pool is under way its nodes change (states,
    // tags, new and gone nodes): read them again every 5 s until it ends.
    crate::machines::every(5, move || {
        let busy = loaded.with_untracked(|l| {
            l.as_ref().and_then(|r| r.as_ref().ok()).is_some_and(|d| {
                d.2.iter()
                    .any(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
            })
        });
        if busy {
            reload.update(|n| *n += 1);
        }
    });
    let bindings = LocalResource::new(api::bindings);
    let binding_list =
        Signal::derive(move || bindings.get().and_then(Result::ok).unwrap_or_default());
    // The binding being chosen for the pool ("" for none), while its dialog is open.
    let rebinding = RwSignal::new(None::<RwSignal<String>>);
    let rebind_error = RwSignal::new(None::<ApiError>);
    let save_binding = move |ev: SubmitEvent| {
        ev.prevent_default();
        let (Some(value), Some(Ok((pool, _, _, templates)))) =
            (rebinding.get_untracked(), loaded.get_untracked())
        else {
            return;
        };
        // A seeded template in effect is the pool's default, not its
        // choice: sent as none, so that the binding picks the seeded
        // templates that register and drain nodes (or the plain ones).
        let chosen = |id: i64| (!templates.iter().any(|t| t.id == id && t.seeded)).then_some(id);
        let input = PoolInput {
            service_id: pool.service_id,
            name: pool.name.clone(),
            description: pool.description.clone(),
            template_id: pool.template_id,
            expand_template_id: chosen(pool.expand_template_id),
            shrink_template_id: chosen(pool.shrink_template_id),
            deploy_template_id: chosen(pool.deploy_template_id),
            binding_id: value.get_untracked().parse().ok(),
        };
        spawn_local(async move {
            match api::save_pool(Some(pool.id), &input).await {
                Ok(_) => {
                    rebinding.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => rebind_error.set(Some(e)),
            }
        });
    };
    let chosen = RwSignal::new(BTreeSet::<String>::new());
    // The node whose container is shown.
    let looking = RwSignal::new(None::<Node>);
    let dialog = RwSignal::new(None::<Dialog>);
    let count = RwSignal::new("1".to_owned());
    let batch = RwSignal::new(String::new());
    let tag = RwSignal::new(String::new());
    let queue = RwSignal::new(false);
    let address = RwSignal::new(String::new());
    let port = RwSignal::new("22".to_owned());
    let user = RwSignal::new("root".to_owned());
    let private_key = RwSignal::new(String::new());
    let password = RwSignal::new(String::new());
    let picked = RwSignal::new(BTreeSet::<i64>::new());
    // Whether a server given without a key can be logged in to; asked once.
    let default_key = LocalResource::new(|| async { api::ssh_settings().await.ok() });
    let form_error = RwSignal::new(None::<ApiError>);
    // The tags built of the service's image in DCP's registry, read when
    // the deploy dialog opens.
    let built = LocalResource::new(move || {
        let deploying = dialog.get() == Some(Dialog::Deploy);
        let pool = id();
        async move {
            let Some(pool) = pool.filter(|_| deploying) else {
                return Vec::new();
            };
            let Ok(pool) = api::pool(pool).await else {
                return Vec::new();
            };
            match api::service(pool.service_id).await {
                Ok(service) => api::built_tags(&service.image).await,
                Err(_) => Vec::new(),
            }
        }
    });
    // Kept in the reactive arena so the submit handler stays `Copy`.
    let navigate = StoredValue::new_local(use_navigate());
    let open = move |d: Dialog| {
        form_error.set(None);
        picked.set(BTreeSet::new());
        dialog.set(Some(d));
    };
    let added = move |result: Result<Vec<Node>, ApiError>| match result {
        Ok(_) => {
            dialog.set(None);
            reload.update(|n| *n += 1);
        }
        Err(e) => form_error.set(Some(place_server_error(e))),
    };

    let start = move |ev: SubmitEvent| {
        ev.prevent_default();
        let (Some(kind), Some(pool_id)) = (dialog.get_untracked(), id()) else {
            return;
        };
        let whole = |field: &str, text: String| -> Result<Option<u32>, ApiError> {
            let text = text.trim().to_owned();
            if text.is_empty() {
                return Ok(None);
            }
            text.parse()
                .map(Some)
                .map_err(|_| ApiError::invalid(field, "must be a whole number"))
        };
        if kind == Dialog::AddMachines {
            let input = AddNodes {
                machine_ids: picked.get_untracked().into_iter().collect(),
                addresses: Vec::new(),
            };
            if input.machine_ids.is_empty() {
                return form_error.set(Some(ApiError::invalid(
                    "machine_ids",
                    "pick at least one machine",
                )));
            }
            spawn_local(async move { added(api::add_nodes(pool_id, &input).await) });
            return;
        }
        if kind == Dialog::AddServer {
            let Ok(port) = port.get_untracked().trim().parse::<u16>() else {
                return form_error.set(Some(ApiError::invalid("port", "must be 1–65535")));
            };
            let (key, secret) = (private_key.get_untracked(), password.get_untracked());
            let address = NodeAddress {
                address: address.get_untracked().trim().to_owned(),
                port: Some(port),
                user: Some(user.get_untracked().trim().to_owned()),
            };
            spawn_local(async move {
                if key.trim().is_empty() && secret.is_empty() {
                    let input = AddNodes {
                        machine_ids: Vec::new(),
                        addresses: vec![address],
                    };
                    return added(api::add_nodes(pool_id, &input).await);
                }
                // Nodes keep no credential: a server with its own becomes
                // a machine first, then joins as one.
                let adopt = AdoptMachine {
                    name: None,
                    address: address.address,
                    port: address.port,
                    user: address.user,
                    password: (!secret.is_empty()).then_some(secret),
                    private_key: (!key.trim().is_empty()).then_some(key),
                };
                match api::adopt_machine(&adopt).await {
                    Ok(machine) => {
                        let input = AddNodes {
                            machine_ids: vec![machine.id],
                            addresses: Vec::new(),
                        };
                        added(api::add_nodes(pool_id, &input).await);
                    }
                    Err(e) => form_error.set(Some(e)),
                }
            });
            return;
        }
        let input = (|| {
            Ok::<_, ApiError>(TaskInput {
                kind: match kind {
                    Dialog::Expand => TaskKind::Expand,
                    Dialog::Shrink => TaskKind::Shrink,
                    Dialog::Deploy | Dialog::AddMachines | Dialog::AddServer => TaskKind::Deploy,
                },
                pool_id,
                count: if kind == Dialog::Expand {
                    whole("count", count.get_untracked())?
                } else {
                    None
                },
                addresses: if kind == Dialog::Shrink {
                    chosen.get_untracked().into_iter().collect()
                } else {
                    Vec::new()
                },
                tag: (kind == Dialog::Deploy).then(|| tag.get_untracked().trim().to_owned()),
                batch_size: whole("batch_size", batch.get_untracked())?,
                template_id: None,
                queue: queue.get_untracked(),
            })
        })();
        let input = match input {
            Ok(input) => input,
            Err(e) => return form_error.set(Some(e)),
        };
        spawn_local(async move {
            match api::start_task(&input).await {
                Ok(task) => {
                    dialog.set(None);
                    navigate
                        .with_value(|go| go(&format!("/tasks/{}", task.id), Default::default()));
                }
                Err(e) => form_error.set(Some(e)),
            }
        });
    };
    // Removing a node asks first, saying what will happen to its container
    // and machine; a DCP-made machine is released by default, an adopted
    // server kept (as the API does when not told).
    let removing = RwSignal::new(None::<Node>);
    let release = RwSignal::new(false);
    let force = RwSignal::new(false);
    let remove_error = RwSignal::new(None::<ApiError>);
    let ask_remove = move |node: Node| {
        remove_error.set(None);
        force.set(false);
        release.set(false);
        if let Some(machine) = node.machine_id {
            spawn_local(async move {
                match api::machine(machine).await {
                    Ok(detail) => release.set(detail.machine.template_id.is_some()),
                    Err(e) => remove_error.set(Some(e)),
                }
            });
        }
        removing.set(Some(node));
    };
    let confirm_remove = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(node) = removing.get_untracked() else {
            return;
        };
        let (release, force) = (release.get_untracked(), force.get_untracked());
        spawn_local(async move {
            match api::remove_node(node.pool_id, node.id, release, force).await {
                Ok(Some(task)) => {
                    removing.set(None);
                    navigate
                        .with_value(|go| go(&format!("/tasks/{}", task.id), Default::default()));
                }
                Ok(None) => {
                    removing.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => remove_error.set(Some(e)),
            }
        });
    };

    view! {
        <ErrorBanner error all=true/>
        {move || data().map(|(pool, _, _, templates)| {
            let name_of = |id: i64| templates.iter().find(|t| t.id == id).map(|t| t.name.clone()).unwrap_or_else(|| format!("#{id}"));
            view! {
                <div class="page-head">
                    <h1 id="pool-name">{pool.name.clone()}</h1>
                    <p class="subtitle">
                        <A href=format!("/services/{}", pool.service_id) attr:id="pool-service">"Its service"</A>
                        {format!(" · {} nodes · expand runs {} · shrink runs {} · deploy runs {}",
                            pool.nodes, name_of(pool.expand_template_id), name_of(pool.shrink_template_id), name_of(pool.deploy_template_id))}
                        {pool.template_id.map(|t| view! { " · " <A href=format!("/machines?template_id={t}")>"its machines"</A> })}
                    </p>
                    <p class="subtitle" id="pool-binding-line" data-binding=pool.binding_id.map(|b| b.to_string()).unwrap_or_default()>
                        {match pool.binding_id {
                            None => "Not behind a balancer: no discovery binding. ".into_any(),
                            Some(b) => {
                                let binding = binding_list.get().into_iter().find(|x| x.id == b);
                                let name = binding.as_ref().map_or_else(|| format!("#{b}"), |x| x.name.clone());
                                view! {
                                    "Registered in discovery binding "
                                    <strong id="pool-binding-name">{name}</strong>
                                    {binding.map(|x| view! { " (" <A href=format!("/upstreams/{}", x.upstream_id)>"its upstream"</A> ") " })}
                                }.into_any()
                            }
                        }}
                        <button id="pool-binding-change" class="ghost" on:click=move |_| {
                            rebind_error.set(None);
                            rebinding.set(Some(RwSignal::new(pool.binding_id.map(|b| b.to_string()).unwrap_or_default())));
                        }>"Change"</button>
                    </p>
                </div>
            }
        })}
        <div class="toolbar">
            <button id="expand-pool" class="primary" on:click=move |_| open(Dialog::Expand)>"Expand"</button>
            <button id="shrink-pool" disabled=move || chosen.get().is_empty() on:click=move |_| open(Dialog::Shrink)>
                {move || format!("Shrink ({})", chosen.get().len())}
            </button>
            <button id="deploy-pool" on:click=move |_| open(Dialog::Deploy)>"Deploy"</button>
            <button id="add-machines" on:click=move |_| open(Dialog::AddMachines)>"Add machines"</button>
            <button id="add-server" class="ghost" on:click=move |_| open(Dialog::AddServer)>"Add server"</button>
        </div>
        <table id="nodes-table" class="table">
            <thead><tr><th></th><th>"Address"</th><th>"State"</th><th>"Tag"</th><th>"Machine"</th><th>"Joined (UTC)"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || data().map(|(_, nodes, _, _)| nodes.items.into_iter().map(|n| {
                    let address = n.address.clone();
                    let picked = address.clone();
                    let doomed = n.clone();
                    let looked = n.clone();
                    view! {
                        <tr data-test="node-row" data-address=n.address.clone() data-state=format!("{:?}", n.state).to_lowercase()>
                            <td><input type="checkbox" class="node-pick" prop:checked=move || chosen.get().contains(&picked)
                                on:change=move |_| {
                                    let a = address.clone();
                                    chosen.update(|set| if !set.remove(&a) { set.insert(a); });
                                }/></td>
                            <td class="name"><code>{format!("{}@{}:{}", n.user, n.address, n.port)}</code></td>
                            <td><span class="badge">{format!("{:?}", n.state).to_lowercase()}</span></td>
                            <td class="tag"><code>{n.tag.clone().unwrap_or_default()}</code></td>
                            <td>{n.machine_id.map(|m| view! { <A href=format!("/machines/{m}")>{format!("#{m}")}</A> })}</td>
                            <td>{short_time(&n.created_at)}</td>
                            <td class="actions"><button class="ghost show-container" on:click=move |_| looking.set(Some(looked.clone()))>"Container"</button>
                                <button class="ghost danger remove-node"
                                disabled=n.state == NodeState::Removing
                                on:click=move |_| ask_remove(doomed.clone())>"Remove"</button></td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || data().is_some_and(|d| d.1.total == 0)>
            <p class="empty">"No nodes yet. Expand the pool, add machines, or add a server by address."</p>
        </Show>
        <div id="nodes-pager">
            <Pager page=Signal::derive(move || data().map(|d| d.1)) current=node_page noun=("node", "nodes")/>
        </div>
        <h2>"Tasks"</h2>
        <TaskTable tasks=Signal::derive(move || data().map(|d| d.2).unwrap_or_default())/>
        {move || rebinding.get().map(|value| view! {
            <Modal title=Signal::derive(|| "Discovery binding".to_owned()) on_close=Callback::new(move |()| rebinding.set(None))>
                <form id="pool-binding-form" novalidate on:submit=save_binding>
                    <ErrorBanner error=rebind_error all=true shown=vec!["binding_id".into()]/>
                    <BindingSelect value bindings=binding_list error=rebind_error/>
                    <p class="hint">"Nodes registered already stay in the upstream; the pool's next tasks follow the binding."</p>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| rebinding.set(None)>"Cancel"</button>
                        <button id="pool-binding-save" type="submit" class="primary">"Save"</button>
                    </div>
                </form>
            </Modal>
        })}
        {move || looking.get().map(|node| view! {
            <ContainerDialog node on_close=Callback::new(move |()| looking.set(None))/>
        })}

        {move || removing.get().map(|node| {
            let target = format!("{}@{}:{}", node.user, node.address, node.port);
            let machine = node.machine_id;
            view! {
                <Modal title=Signal::derive(move || "Remove a node".to_owned()) on_close=Callback::new(move |()| removing.set(None))>
                    <form id="remove-node-form" novalidate on:submit=confirm_remove>
                        <ErrorBanner error=remove_error all=true/>
                        <p id="remove-node-what">
                            {move || if force.get() {
                                format!("{target} leaves the pool at once. Nothing runs on it: a container it still runs stays there.")
                            } else {
                                format!("A shrink task stops and removes the service's container on {target}, then takes the node out of the pool.")
                            }}
                        </p>
                        {match machine {
                            Some(m) => view! {
                                <label class="check"><input id="remove-node-release" type="checkbox" bind:checked=release prop:disabled=move || force.get()/>
                                    {format!(" Release machine #{m}")}</label>
                                <p id="remove-node-machine" class="hint">{move || if force.get() {
                                    format!("Machine #{m} stays as it is.")
                                } else if release.get() {
                                    format!("Machine #{m} is released: a cloud instance is deleted, an adopted server forgotten.")
                                } else {
                                    format!("Machine #{m} stays ready, outside the pool.")
                                }}</p>
                            }.into_any(),
                            None => view! {
                                <p id="remove-node-machine" class="hint">"The server itself stays (DCP does not manage it as a machine)."</p>
                            }.into_any(),
                        }}
                        <label class="check"><input id="remove-node-force" type="checkbox" bind:checked=force/>
                            " The server is gone: remove the node without running anything"</label>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| removing.set(None)>"Cancel"</button>
                            <button id="remove-node-confirm" type="submit" class="primary danger">"Remove"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        {move || dialog.get().map(|d| {
            let title = Signal::derive(move || match d {
                Dialog::Expand => "Expand the pool".to_owned(),
                Dialog::Shrink => format!("Shrink: remove {} nodes", chosen.get().len()),
                Dialog::Deploy => "Deploy a new tag".to_owned(),
                Dialog::AddMachines => "Add machines".to_owned(),
                Dialog::AddServer => "Add a server".to_owned(),
            });
            view! {
                <Modal title on_close=Callback::new(move |()| dialog.set(None))>
                    <form id="task-form" novalidate on:submit=start>
                        <ErrorBanner error=form_error all=true shown=vec!["count".into(), "tag".into(), "batch_size".into(), "address".into(),
                            "port".into(), "user".into(), "private_key".into(), "password".into()]/>
                        {(d == Dialog::Expand).then(|| view! {
                            <Labelled field="count" id="task-count" label="New nodes" error=form_error hint="1–1000">
                                <input id="task-count" type="number" min="1" max="1000" bind:value=count/>
                            </Labelled>
                        })}
                        {(d == Dialog::Shrink).then(|| view! {
                            <p id="shrink-list">{move || chosen.get().into_iter().collect::<Vec<_>>().join(", ")}</p>
                        })}
                        {(d == Dialog::Deploy).then(|| view! {
                            <Labelled field="tag" id="task-tag" label="Image tag" error=form_error hint="Type one, or pick a tag built into DCP's registry.">
                                <input id="task-tag" type="text" autocomplete="off" list="built-tags" bind:value=tag/>
                                <datalist id="built-tags">
                                    {move || built.get().unwrap_or_default().into_iter().map(|t| {
                                        let (value, when) = (t.tag, t.created.unwrap_or_default());
                                        view! { <option value=value>{when}</option> }
                                    }).collect_view()}
                                </datalist>
                            </Labelled>
                        })}
                        {(d == Dialog::AddMachines).then(|| view! {
                            <p class="hint">"Ready machines DCP made or adopted, in no pool yet. Each joins with its own address, user and key."</p>
                            <MachinePicker chosen=picked free=true id="pool-pick"/>
                        })}
                        {(d == Dialog::AddServer).then(|| view! {
                            <Labelled field="address" id="server-address" label="Address" error=form_error>
                                <input id="server-address" type="text" autocomplete="off" bind:value=address/>
                            </Labelled>
                            <Labelled field="port" id="server-port" label="SSH port" error=form_error>
                                <input id="server-port" type="number" bind:value=port/>
                            </Labelled>
                            <Labelled field="user" id="server-user" label="User" error=form_error>
                                <input id="server-user" type="text" bind:value=user/>
                            </Labelled>
                            <Labelled field="private_key" id="server-key" label="Private key" error=form_error hint="Optional: OpenSSH or PEM text, kept encrypted.">
                                <textarea id="server-key" rows="3" bind:value=private_key></textarea>
                            </Labelled>
                            <Labelled field="password" id="server-password" label="Password" error=form_error hint="Optional: used once to install a key DCP makes.">
                                <input id="server-password" type="password" autocomplete="off" bind:value=password/>
                            </Labelled>
                            <p id="server-credential" class="hint">{move || credential_hint(
                                default_key.get().flatten().map(|s| s.default_key),
                                &private_key.get(),
                                &password.get(),
                            )}</p>
                        })}
                        {(!matches!(d, Dialog::AddServer | Dialog::AddMachines)).then(|| view! {
                            <Labelled field="batch_size" id="task-batch" label="Nodes at once" error=form_error
                                hint="deploy: 1 when empty; expand and shrink: all">
                                <input id="task-batch" type="number" min="1" max="1000" bind:value=batch/>
                            </Labelled>
                            <label class="check"><input id="task-queue" type="checkbox" bind:checked=queue/>
                                " Queue behind the pool's current task"</label>
                        })}
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| dialog.set(None)>"Cancel"</button>
                            <button id="task-start" type="submit" class="primary">
                                {if matches!(d, Dialog::AddServer | Dialog::AddMachines) { "Add" } else { "Start" }}
                            </button>
                        </div>
                    </form>
                </Modal>
            }
        })}
    }
}

/// Log lines the container dialog keeps while following.
const LOG_LINES_KEPT: usize = 5000;

/// A node's container: its state, image and tag, start, restarts and
/// health, and its log — the last 200 lines, followed (asked again every
/// 2 s for the lines after the last one) while "Follow" is ticked.
#[component]
fn ContainerDialog(node: Node, on_close: Callback<()>) -> impl IntoView {
    let (pool, id) = (node.pool_id, node.id);
    let status = LocalResource::new(move || api::node_container(pool, id));
    let lines = RwSignal::new(Vec::<dcp_api_types::LogLine>::new());
    let log_error = RwSignal::new(None::<ApiError>);
    let follow = RwSignal::new(false);
    let busy = StoredValue::new(false);
    let fetch = move || {
        if busy.get_value() {
            return;
        }
        busy.set_value(true);
        let since = lines.with_untracked(|l| l.last().map(|l| l.at.clone()));
        spawn_local(async move {
            match api::node_logs(pool, id, 200, since.as_deref()).await {
                Ok(more) => {
                    log_error.set(None);
                    lines.update(|l| {
                        l.extend(more.lines);
                        let over = l.len().saturating_sub(LOG_LINES_KEPT);
                        l.drain(..over);
                    });
                }
                Err(e) => log_error.set(Some(e)),
            }
            busy.set_value(false);
        });
    };
    fetch();
    crate::machines::every(2, move || {
        if follow.get_untracked() {
            fetch();
        }
    });
    let title = format!("Container on {}", node.address);
    view! {
        <Modal title=Signal::derive(move || title.clone()) on_close>
            <div id="container-dialog" class="wide">
                {move || match status.get() {
                    None => view! { <p class="muted">"Asking the node…"</p> }.into_any(),
                    Some(Err(e)) => view! { <ErrorBanner error=RwSignal::new(Some(e)) all=true/> }.into_any(),
                    Some(Ok(c)) => view! {
                        <dl id="container-status" class="facts" data-state=c.state>
                            <dt>"Name"</dt><dd><code>{c.name.clone()}</code></dd>
                            <dt>"State"</dt><dd><span class="badge">{c.state.clone()}</span></dd>
                            <dt>"Image"</dt><dd><code>{c.image.clone().unwrap_or_default()}</code></dd>
                            <dt>"Tag"</dt><dd id="container-tag">{c.tag.clone().unwrap_or_default()}</dd>
                            <dt>"Started (UTC)"</dt><dd>{c.started_at.as_deref().map(short_time).unwrap_or_default()}</dd>
                            <dt>"Restarts"</dt><dd>{c.restart_count.map(|n| n.to_string()).unwrap_or_default()}</dd>
                            <dt>"Exit code"</dt><dd>{c.exit_code.map(|n| n.to_string()).unwrap_or_default()}</dd>
                            <dt>"Health"</dt><dd id="container-health">
                                {c.health.clone().unwrap_or_else(|| "no check".to_owned())}
                                {(!c.health_detail.is_empty()).then(|| format!(": {}", c.health_detail))}
                            </dd>
                        </dl>
                    }.into_any(),
                }}
                <div class="toolbar">
                    <label class="check"><input id="container-follow" type="checkbox" bind:checked=follow/>" Follow"</label>
                    <button class="ghost" on:click=move |_| status.refetch()>"Ask again"</button>
                    <button id="container-close" class="ghost cancel" on:click=move |_| on_close.run(())>"Close"</button>
                </div>
                <ErrorBanner error=log_error all=true/>
                <pre id="container-log" class="code">{move || lines.with(|l| {
                    l.iter().map(|line| format!("{}\n", line.text)).collect::<String>()
                })}</pre>
            </div>
        </Modal>
    }
}
