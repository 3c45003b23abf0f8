//! The clusters page: a paged, searchable table with create, edit and
//! delete; and one cluster's page with its services.

use dcp_api_types::{Cluster, ClusterInput, PageQuery};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{components::A, hooks::use_params_map};

use crate::{
    api::{self, ApiError},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, load_error, short_time},
};

/// The cluster being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct Editor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    business_line: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl Editor {
    fn new(cluster: Option<&Cluster>) -> Self {
        Self {
            id: cluster.map(|c| c.id),
            name: RwSignal::new(cluster.map(|c| c.name.clone()).unwrap_or_default()),
            description: RwSignal::new(cluster.map(|c| c.description.clone()).unwrap_or_default()),
            business_line: RwSignal::new(
                cluster.map(|c| c.business_line.clone()).unwrap_or_default(),
            ),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> ClusterInput {
        ClusterInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            business_line: self.business_line.get_untracked(),
        }
    }
}

/// Lists clusters and edits them through the REST API.
#[component]
pub(crate) fn ClustersPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let search = RwSignal::new(String::new());
    let reload = RwSignal::new(0_u32);
    let load_error = RwSignal::new(None::<ApiError>);
    let listing = LocalResource::new(move || {
        let (page, search) = (page.get(), search.get());
        reload.track();
        async move { api::clusters(page, PageQuery::DEFAULT_PER_PAGE, &search).await }
    });
    let current = Signal::derive(move || match listing.get() {
        Some(Ok(page)) => Some(page),
        _ => None,
    });
    Effect::new(move || {
        if let Some(Err(e)) = listing.get() {
            load_error.set(Some(e));
        } else {
            load_error.set(None);
        }
    });

    let editor = RwSignal::new(None::<Editor>);
    let deleting = RwSignal::new(None::<Doomed>);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        spawn_local(async move {
            let input = ed.input();
            let result = match ed.id {
                Some(id) => api::update_cluster(id, &input).await,
                None => api::create_cluster(&input).await,
            };
            match result {
                Ok(_) => {
                    editor.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => ed.error.set(Some(e)),
            }
        });
    };

    view! {
        <div class="page-head">
            <h1>"Clusters"</h1>
            <p class="subtitle">"A cluster groups the services of one product or team."</p>
        </div>
        <div class="toolbar">
            <input
                id="cluster-search"
                type="search"
                placeholder="Filter by name"
                prop:value=move || search.get()
                on:input=move |ev| {
                    search.set(event_target_value(&ev));
                    page.set(1);
                }
            />
            <button id="new-cluster" class="primary" on:click=move |_| editor.set(Some(Editor::new(None)))>
                "New cluster"
            </button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="clusters-table" class="table">
            <thead>
                <tr>
                    <th>"Name"</th>
                    <th>"Business line"</th>
                    <th>"Description"</th>
                    <th>"Created (UTC)"</th>
                    <th class="actions"></th>
                </tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|c| (c.id, c.updated_at.clone())
                    children=move |c: Cluster| {
                        let for_edit = c.clone();
                        let for_delete = c.clone();
                        let link_name = c.name.clone();
                        view! {
                            <tr data-name=c.name>
                                <td class="name"><A href=format!("/clusters/{}", c.id) attr:data-test="cluster-link">{link_name}</A></td>
                                <td>{c.business_line.clone()}</td>
                                <td class="description">{c.description.clone()}</td>
                                <td>{short_time(&c.created_at)}</td>
                                <td class="actions">
                                    <button
                                        class="ghost edit"
                                        on:click=move |_| editor.set(Some(Editor::new(Some(&for_edit))))
                                    >
                                        "Edit"
                                    </button>
                                    <button
                                        class="ghost danger delete"
                                        on:click=move |_| {
                                            deleting.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }));
                                        }
                                    >
                                        "Delete"
                                    </button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">
                {move || if search.get().is_empty() {
                    "No clusters yet. Create the first one."
                } else {
                    "No cluster matches the filter."
                }}
            </p>
        </Show>
        <Pager page=current current=page noun=("cluster", "clusters")/>

        {move || editor.get().map(|ed| {
            let title = Signal::derive(move || {
                if ed.id.is_some() { "Edit cluster".to_owned() } else { "New cluster".to_owned() }
            });
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="cluster-form" on:submit=save>
                        <ErrorBanner error=ed.error/>
                        <Field field="name" id_prefix="cluster" label="Name" value=ed.name error=ed.error
                            hint="1–64 characters: a-z, 0-9, - and _"/>
                        <Field field="business_line" id_prefix="cluster" label="Business line"
                            value=ed.business_line error=ed.error/>
                        <Field field="description" id_prefix="cluster" label="Description"
                            value=ed.description error=ed.error multiline=true/>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="cluster-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <ConfirmDelete noun="cluster" target=deleting delete=api::delete_cluster
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>
    }
}

/// One cluster and its services.
#[component]
pub(crate) fn ClusterPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let loaded = LocalResource::new(move || {
        let id = id();
        async move {
            let id = id.ok_or_else(|| ApiError::local("no such cluster"))?;
            let cluster = api::cluster(id).await?;
            let services = api::services(Some(id)).await?;
            Ok::<_, ApiError>((cluster, services.items))
        }
    });
    let error = load_error(loaded);
    view! {
        <ErrorBanner error all=true/>
        {move || loaded.get().and_then(Result::ok).map(|(cluster, services)| view! {
            <div class="page-head">
                <h1 id="cluster-name">{cluster.name.clone()}</h1>
                <p class="subtitle"><A href="/clusters">"Clusters"</A>
                    {format!(" · {} · {}", cluster.business_line, cluster.description)}</p>
            </div>
            <table id="cluster-services" class="table">
                <thead><tr><th>"Service"</th><th>"Image"</th><th>"Pools"</th><th>"Roll back to"</th></tr></thead>
                <tbody>
                    {services.into_iter().map(|s| {
                        let link_name = s.name.clone();
                        view! {
                        <tr data-test="cluster-service" data-name=s.name>
                            <td class="name"><A href=format!("/services/{}", s.id)>{link_name}</A></td>
                            <td><code>{s.image.clone()}</code></td>
                            <td>{s.pools}</td>
                            <td>{s.rollback_tag.clone().unwrap_or_default()}</td>
                        </tr>
                    }}).collect_view()}
                </tbody>
            </table>
            <Show when=move || loaded.get().and_then(Result::ok).is_some_and(|d| d.1.is_empty())>
                <p class="empty">"No services in this cluster yet."</p>
            </Show>
        })}
    }
}
