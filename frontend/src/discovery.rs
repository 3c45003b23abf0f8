//! Service discovery (OpenDCP's hubble): balancer groups with their units
//! and upstreams, and the bindings that tie pools to upstreams.

use dcp_api_types::{
    Binding, BindingInput, CommandGroup, LbGroup, LbGroupInput, LbUnit, LbUnitInput, PageQuery,
    UpstreamInput, UpstreamView,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{components::A, hooks::use_navigate};
use serde_json::Value;

use crate::{
    api::{self, ApiError},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, load_error, show_form_error},
    templates::Labelled,
};

/// A plugin settings document typed in a textarea: a JSON object (empty
/// text is `{}`), or why it is not one, said of `field`.
pub(crate) fn parse_settings(field: &str, text: &str) -> Result<Value, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(ApiError::invalid(
            field,
            r#"must be a JSON object, e.g. {"prefix": "/etc/nginx"}"#,
        )),
        Err(e) => Err(ApiError::invalid(field, format!("is not valid JSON: {e}"))),
    }
}

/// A settings document as its textarea shows it: indented JSON, or nothing
/// for `{}`.
pub(crate) fn settings_text(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => String::new(),
        Value::Null => String::new(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

/// An optional whole number typed in a form: empty is `None`.
pub(crate) fn optional_number<T: std::str::FromStr>(
    field: &str,
    text: &str,
    rule: &str,
) -> Result<Option<T>, ApiError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::invalid(field, rule.to_owned()))
}

/// A discovery state (`pending`, `running`, `succeeded`, `partial`,
/// `failed`, `skipped`) as a badge.
pub(crate) fn state_badge(state: &str) -> impl IntoView + use<> {
    view! { <span class=format!("badge state-{state}") data-state=state.to_owned()>{state.to_owned()}</span> }
}

/// The group being created (`id: None`) or renamed.
#[derive(Debug, Clone, Copy)]
struct GroupEditor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl GroupEditor {
    fn new(group: Option<&LbGroup>) -> Self {
        Self {
            id: group.map(|g| g.id),
            name: RwSignal::new(group.map(|g| g.name.clone()).unwrap_or_default()),
            description: RwSignal::new(group.map(|g| g.description.clone()).unwrap_or_default()),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> LbGroupInput {
        LbGroupInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
        }
    }
}

/// The unit being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitEditor {
    id: Option<i64>,
    group_id: i64,
    name: RwSignal<String>,
    description: RwSignal<String>,
    plugin: RwSignal<String>,
    config: RwSignal<String>,
    publish_group: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl UnitEditor {
    /// A form for a new unit of `group_id`, or filled in from `unit`.
    pub(crate) fn new(group_id: i64, unit: Option<&LbUnit>) -> Self {
        Self {
            id: unit.map(|u| u.id),
            group_id: unit.map_or(group_id, |u| u.group_id),
            name: RwSignal::new(unit.map(|u| u.name.clone()).unwrap_or_default()),
            description: RwSignal::new(unit.map(|u| u.description.clone()).unwrap_or_default()),
            plugin: RwSignal::new(unit.map_or_else(|| "nginx".to_owned(), |u| u.plugin.clone())),
            config: RwSignal::new(unit.map(|u| settings_text(&u.config)).unwrap_or_default()),
            publish_group: RwSignal::new(
                unit.and_then(|u| u.publish_group_id)
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            ),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<LbUnitInput, ApiError> {
        Ok(LbUnitInput {
            group_id: self.group_id,
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            plugin: self.plugin.get_untracked().trim().to_owned(),
            config: parse_settings("config", &self.config.get_untracked())?,
            publish_group_id: self.publish_group.get_untracked().parse().ok(),
        })
    }
}

/// The unit form in a dialog, shown while `editor` is set; `on_saved` gets
/// the saved unit.
#[component]
pub(crate) fn UnitDialog(
    /// The unit being edited.
    editor: RwSignal<Option<UnitEditor>>,
    /// Called with the saved unit.
    on_saved: Callback<LbUnit>,
) -> impl IntoView {
    // The publish command group's choices, asked once.
    let groups = LocalResource::new(|| async {
        api::groups(1, PageQuery::MAX_PER_PAGE, "")
            .await
            .map(|p| p.items)
    });
    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return show_form_error(ed.error, e),
        };
        spawn_local(async move {
            match api::save_lb_unit(ed.id, &input).await {
                Ok(unit) => {
                    editor.set(None);
                    on_saved.run(unit);
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    move || {
        editor.get().map(|ed| {
            let title = Signal::derive(move || {
                if ed.id.is_some() { "Edit unit" } else { "New unit" }.to_owned()
            });
            let error = ed.error;
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="lb-unit-form" novalidate on:submit=save>
                        <ErrorBanner error all=true shown=vec!["name".into(), "description".into(), "plugin".into(), "config".into(), "publish_group_id".into()]/>
                        <Field field="name" id_prefix="lb-unit" label="Name" value=ed.name error
                            hint="unique in the group: a-z, 0-9, - and _"/>
                        <Field field="description" id_prefix="lb-unit" label="Description" value=ed.description error/>
                        <Field field="plugin" id_prefix="lb-unit" label="Plugin" value=ed.plugin error
                            hint="an active load-balancer plugin"/>
                        <Labelled field="config" id="lb-unit-config" label="Settings" error
                            hint=r#"the plugin's settings, a JSON object, e.g. {"prefix": "/etc/nginx"}; empty: none"#>
                            <textarea id="lb-unit-config" class="code" rows="5" bind:value=ed.config></textarea>
                        </Labelled>
                        <Labelled field="publish_group_id" id="lb-unit-publish-group" label="After each publish, run" error
                            hint="a command group run on the unit's nodes once a release is live">
                            <select id="lb-unit-publish-group" on:change=move |ev| ed.publish_group.set(event_target_value(&ev))>
                                <option value="" selected=move || ed.publish_group.get().is_empty()>"Nothing"</option>
                                {move || groups.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|g: CommandGroup| {
                                    let picked = g.id.to_string();
                                    view! { <option value=g.id.to_string() selected=move || ed.publish_group.get() == picked>{g.name.clone()}</option> }
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="lb-unit-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

/// The binding being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct BindingEditor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    upstream: RwSignal<String>,
    port: RwSignal<String>,
    weight: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

impl BindingEditor {
    fn new(binding: Option<&Binding>) -> Self {
        let text = |f: fn(&Binding) -> String| RwSignal::new(binding.map(f).unwrap_or_default());
        Self {
            id: binding.map(|b| b.id),
            name: text(|b| b.name.clone()),
            description: text(|b| b.description.clone()),
            upstream: text(|b| b.upstream_id.to_string()),
            port: text(|b| b.port.map(|p| p.to_string()).unwrap_or_default()),
            weight: text(|b| b.weight.to_string()),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<BindingInput, ApiError> {
        Ok(BindingInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            upstream_id: self
                .upstream
                .get_untracked()
                .parse()
                .map_err(|_| ApiError::invalid("upstream_id", "choose an upstream"))?,
            port: optional_number("port", &self.port.get_untracked(), "must be 1–65535")?,
            weight: optional_number(
                "weight",
                &self.weight.get_untracked(),
                "must be a whole number, 0–100",
            )?,
        })
    }
}

/// The upstream being created in a group.
#[derive(Debug, Clone, Copy)]
struct UpstreamEditor {
    group_id: i64,
    name: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
}

/// "2 of 3 nodes in sync": what a unit's nodes serve.
fn nodes_text(unit: &LbUnit) -> String {
    let synced = unit.nodes.iter().filter(|n| n.in_sync).count();
    match unit.nodes.len() {
        0 => "no nodes".to_owned(),
        n if synced == n => format!("{n} nodes, in sync"),
        n => format!("{synced} of {n} nodes in sync"),
    }
}

/// The upstream's name with its group's, for a select.
fn upstream_label(upstream: &UpstreamView, groups: &[LbGroup]) -> String {
    let group = groups
        .iter()
        .find(|g| g.id == upstream.group_id)
        .map_or_else(
            || format!("group #{}", upstream.group_id),
            |g| g.name.clone(),
        );
    format!("{} ({group})", upstream.name)
}

/// Everything the page shows.
#[derive(Debug, Clone)]
struct Loaded {
    groups: Vec<LbGroup>,
    units: Vec<LbUnit>,
    upstreams: Vec<UpstreamView>,
    bindings: Vec<Binding>,
}

/// Balancer groups with their units and upstreams, and the bindings.
#[component]
pub(crate) fn DiscoveryPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let loaded = LocalResource::new(move || {
        reload.track();
        async move {
            Ok::<_, ApiError>(Loaded {
                groups: api::lb_groups().await?,
                units: api::lb_units(None).await?,
                upstreams: api::upstreams(None).await?,
                bindings: api::bindings().await?,
            })
        }
    });
    let error = load_error(loaded);
    let data = move || loaded.get().and_then(Result::ok);
    let bump = move || reload.update(|n| *n += 1);
    let navigate = StoredValue::new_local(use_navigate());

    let group_editor = RwSignal::new(None::<GroupEditor>);
    let unit_editor = RwSignal::new(None::<UnitEditor>);
    let upstream_editor = RwSignal::new(None::<UpstreamEditor>);
    let binding_editor = RwSignal::new(None::<BindingEditor>);
    let deleting_group = RwSignal::new(None::<Doomed>);
    let deleting_unit = RwSignal::new(None::<Doomed>);
    let deleting_upstream = RwSignal::new(None::<Doomed>);
    let deleting_binding = RwSignal::new(None::<Doomed>);

    let save_group = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = group_editor.get_untracked() else {
            return;
        };
        spawn_local(async move {
            match api::save_lb_group(ed.id, &ed.input()).await {
                Ok(_) => {
                    group_editor.set(None);
                    bump();
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    let save_upstream = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = upstream_editor.get_untracked() else {
            return;
        };
        let input = UpstreamInput {
            group_id: ed.group_id,
            name: ed.name.get_untracked().trim().to_owned(),
        };
        spawn_local(async move {
            match api::create_upstream(&input).await {
                Ok(_) => {
                    upstream_editor.set(None);
                    bump();
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    let save_binding = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = binding_editor.get_untracked() else {
            return;
        };
        let input = match ed.input() {
            Ok(input) => input,
            Err(e) => return show_form_error(ed.error, e),
        };
        spawn_local(async move {
            match api::save_binding(ed.id, &input).await {
                Ok(_) => {
                    binding_editor.set(None);
                    bump();
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };
    // A new unit has no nodes yet: its page is where they are added.
    let unit_saved = Callback::new(move |unit: LbUnit| {
        navigate.with_value(|go| go(&format!("/lb-units/{}", unit.id), Default::default()));
    });

    view! {
        <div class="page-head">
            <h1>"Service discovery"</h1>
            <p class="subtitle">
                "A balancer group's units run its balancer hosts; its upstreams are the backends every node of the group serves. "
                "A binding lets a pool register its nodes in an upstream."
            </p>
        </div>
        <div class="toolbar">
            <button id="new-lb-group" class="primary" on:click=move |_| group_editor.set(Some(GroupEditor::new(None)))>"New group"</button>
            <A href="/discovery-log" attr:class="toolbar-link">"Operation log"</A>
            <A href="/app-keys">"App keys"</A>
        </div>
        <ErrorBanner error all=true/>
        {move || data().map(|d| {
            let empty = d.groups.is_empty();
            let Loaded { groups, units, upstreams, .. } = d;
            view! {
                {empty.then(|| view! { <p class="empty">"No balancer groups yet. Create the first one."</p> })}
                {groups.into_iter().map(|g| {
                    let gid = g.id;
                    let (for_edit, for_delete) = (g.clone(), g.clone());
                    let mine: Vec<LbUnit> = units.iter().filter(|u| u.group_id == gid).cloned().collect();
                    let streams: Vec<UpstreamView> = upstreams.iter().filter(|u| u.group_id == gid).cloned().collect();
                    let (no_units, no_streams) = (mine.is_empty(), streams.is_empty());
                    view! {
                        <section class="lb-group" data-test="lb-group" data-name=g.name data-id=gid.to_string()>
                            <div class="section-head">
                                <h2>{g.name.clone()}</h2>
                                <span class="muted">{g.description.clone()}</span>
                                <span class="spacer"></span>
                                <button class="ghost rename-group" on:click=move |_| group_editor.set(Some(GroupEditor::new(Some(&for_edit))))>"Rename"</button>
                                <button class="ghost danger delete-group" on:click=move |_| deleting_group.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }))>"Delete"</button>
                            </div>
                            <h3>"Units"
                                <button class="ghost new-unit" on:click=move |_| unit_editor.set(Some(UnitEditor::new(gid, None)))>"New unit"</button></h3>
                            {no_units.then(|| view! { <p class="muted">"No units: add one to run this group's balancer hosts."</p> })}
                            {(!no_units).then(|| view! {
                                <table class="table units">
                                    <thead><tr><th>"Unit"</th><th>"Plugin"</th><th>"Nodes"</th><th class="actions"></th></tr></thead>
                                    <tbody>
                                        {mine.into_iter().map(|u| {
                                            let doomed = Doomed { id: u.id, name: u.name.clone() };
                                            let link_name = u.name.clone();
                                            let synced = u.nodes.iter().all(|n| n.in_sync);
                                            view! {
                                                <tr data-test="lb-unit" data-name=u.name.clone() data-id=u.id.to_string()>
                                                    <td class="name"><A href=format!("/lb-units/{}", u.id) attr:data-test="lb-unit-link">{link_name}</A>
                                                        <div class="muted">{u.description.clone()}</div></td>
                                                    <td>{u.plugin.clone()}</td>
                                                    <td><span class=if synced { "badge in-sync" } else { "badge drift" }>{nodes_text(&u)}</span></td>
                                                    <td class="actions"><button class="ghost danger delete" on:click=move |_| deleting_unit.set(Some(doomed.clone()))>"Delete"</button></td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            })}
                            <h3>"Upstreams"
                                <button class="ghost new-upstream" on:click=move |_| upstream_editor.set(Some(UpstreamEditor {
                                    group_id: gid, name: RwSignal::new(String::new()), error: RwSignal::new(None),
                                }))>"New upstream"</button></h3>
                            {no_streams.then(|| view! { <p class="muted">"No upstreams in this group."</p> })}
                            {(!no_streams).then(|| view! {
                                <table class="table upstreams">
                                    <thead><tr><th>"Upstream"</th><th>"Backends"</th><th>"Revision"</th><th>"Nodes"</th><th class="actions"></th></tr></thead>
                                    <tbody>
                                        {streams.into_iter().map(|u| {
                                            let doomed = Doomed { id: u.id, name: u.name.clone() };
                                            let link_name = u.name.clone();
                                            let synced = u.nodes.iter().filter(|n| n.in_sync).count();
                                            let all = u.nodes.len();
                                            view! {
                                                <tr data-test="upstream" data-name=u.name.clone() data-id=u.id.to_string()>
                                                    <td class="name"><A href=format!("/upstreams/{}", u.id) attr:data-test="upstream-link">{link_name}</A></td>
                                                    <td>{u.backends.len().to_string()}</td>
                                                    <td>{u.revision.to_string()}</td>
                                                    <td><span class=if synced == all { "badge in-sync" } else { "badge drift" }>
                                                        {format!("{synced} of {all} in sync")}</span></td>
                                                    <td class="actions"><button class="ghost danger delete" on:click=move |_| deleting_upstream.set(Some(doomed.clone()))>"Delete"</button></td>
                                                </tr>
                                            }
                                        }).collect_view()}
                                    </tbody>
                                </table>
                            })}
                        </section>
                    }
                }).collect_view()}
            }
        })}

        <div class="section-head">
            <h2>"Bindings"</h2>
            <span class="spacer"></span>
            <button id="new-binding" on:click=move |_| binding_editor.set(Some(BindingEditor::new(None)))>"New binding"</button>
        </div>
        <table id="bindings-table" class="table">
            <thead><tr><th>"Binding"</th><th>"Upstream"</th><th>"Port"</th><th>"Weight"</th><th class="actions"></th></tr></thead>
            <tbody>
                {move || data().map(|d| d.bindings.into_iter().map(|b| {
                    let upstream = d.upstreams.iter().find(|u| u.id == b.upstream_id)
                        .map_or_else(|| format!("#{}", b.upstream_id), |u| upstream_label(u, &d.groups));
                    let for_edit = b.clone();
                    let doomed = Doomed { id: b.id, name: b.name.clone() };
                    view! {
                        <tr data-test="binding" data-name=b.name>
                            <td class="name">{b.name.clone()}<div class="muted">{b.description.clone()}</div></td>
                            <td><A href=format!("/upstreams/{}", b.upstream_id)>{upstream}</A></td>
                            <td>{b.port.map_or_else(|| "the service's first TCP port".to_owned(), |p| p.to_string())}</td>
                            <td>{b.weight.to_string()}</td>
                            <td class="actions">
                                <button class="ghost edit" on:click=move |_| binding_editor.set(Some(BindingEditor::new(Some(&for_edit))))>"Edit"</button>
                                <button class="ghost danger delete" on:click=move |_| deleting_binding.set(Some(doomed.clone()))>"Delete"</button>
                            </td>
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        <Show when=move || data().is_some_and(|d| d.bindings.is_empty())>
            <p class="empty">"No bindings yet: make one for a pool to register its nodes."</p>
        </Show>

        {move || group_editor.get().map(|ed| {
            let title = Signal::derive(move || if ed.id.is_some() { "Rename group" } else { "New group" }.to_owned());
            view! {
                <Modal title on_close=Callback::new(move |()| group_editor.set(None))>
                    <form id="lb-group-form" novalidate on:submit=save_group>
                        <ErrorBanner error=ed.error all=true shown=vec!["name".into(), "description".into()]/>
                        <Field field="name" id_prefix="lb-group" label="Name" value=ed.name error=ed.error
                            hint="a-z, 0-9, - and _"/>
                        <Field field="description" id_prefix="lb-group" label="Description" value=ed.description error=ed.error/>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| group_editor.set(None)>"Cancel"</button>
                            <button id="lb-group-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <UnitDialog editor=unit_editor on_saved=unit_saved/>

        {move || upstream_editor.get().map(|ed| view! {
            <Modal title=Signal::derive(|| "New upstream".to_owned()) on_close=Callback::new(move |()| upstream_editor.set(None))>
                <form id="upstream-form" novalidate on:submit=save_upstream>
                    <ErrorBanner error=ed.error all=true shown=vec!["name".into()]/>
                    <Field field="name" id_prefix="upstream" label="Name" value=ed.name error=ed.error
                        hint="the balancer's upstream name: A-Z, a-z, 0-9, - and _"/>
                    <div class="buttons">
                        <button type="button" class="ghost cancel" on:click=move |_| upstream_editor.set(None)>"Cancel"</button>
                        <button id="upstream-save" type="submit" class="primary">"Create"</button>
                    </div>
                </form>
            </Modal>
        })}

        {move || binding_editor.get().map(|ed| {
            let title = Signal::derive(move || if ed.id.is_some() { "Edit binding" } else { "New binding" }.to_owned());
            let error = ed.error;
            view! {
                <Modal title on_close=Callback::new(move |()| binding_editor.set(None))>
                    <form id="binding-form" novalidate on:submit=save_binding>
                        <ErrorBanner error all=true shown=vec!["name".into(), "description".into(), "upstream_id".into(), "port".into(), "weight".into()]/>
                        <Field field="name" id_prefix="binding" label="Name" value=ed.name error hint="a-z, 0-9, - and _"/>
                        <Field field="description" id_prefix="binding" label="Description" value=ed.description error/>
                        <Labelled field="upstream_id" id="binding-upstream" label="Upstream" error hint="where the pool's nodes are registered">
                            <select id="binding-upstream" on:change=move |ev| ed.upstream.set(event_target_value(&ev))>
                                <option value="" selected=move || ed.upstream.get().is_empty()>"Choose…"</option>
                                {move || data().map(|d| d.upstreams.iter().map(|u| {
                                    let picked = u.id.to_string();
                                    view! { <option value=u.id.to_string() selected=move || ed.upstream.get() == picked>{upstream_label(u, &d.groups)}</option> }
                                }).collect_view())}
                            </select>
                        </Labelled>
                        <div class="row">
                            <Labelled field="port" id="binding-port" label="Backend port" error hint="empty: the service's first published TCP port">
                                <input id="binding-port" type="number" min="1" max="65535" bind:value=ed.port/>
                            </Labelled>
                            <Labelled field="weight" id="binding-weight" label="Weight" error hint="0–100; empty: 10">
                                <input id="binding-weight" type="number" min="0" max="100" bind:value=ed.weight/>
                            </Labelled>
                        </div>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| binding_editor.set(None)>"Cancel"</button>
                            <button id="binding-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <ConfirmDelete noun="group" target=deleting_group delete=api::delete_lb_group
            note="Only an empty group can go: delete its units and upstreams first."
            on_deleted=Callback::new(move |()| bump())/>
        <ConfirmDelete noun="unit" target=deleting_unit delete=api::delete_lb_unit
            note="Only a unit without nodes can go. Its files and releases go with it."
            on_deleted=Callback::new(move |()| bump())/>
        <ConfirmDelete noun="upstream" target=deleting_upstream delete=api::delete_upstream
            note="The balancers stop serving it at their next push."
            on_deleted=Callback::new(move |()| bump())/>
        <ConfirmDelete noun="binding" target=deleting_binding delete=api::delete_binding
            note="Only a binding no pool names can go."
            on_deleted=Callback::new(move |()| bump())/>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_a_json_object_or_nothing() {
        assert_eq!(
            parse_settings("config", " ").unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            parse_settings("config", r#"{"prefix": "/srv"}"#).unwrap(),
            serde_json::json!({"prefix": "/srv"})
        );
        let not_object = parse_settings("config", "[1]").unwrap_err();
        assert_eq!(not_object.0.field.as_deref(), Some("config"));
        assert!(not_object.0.message.contains("JSON object"));
        let broken = parse_settings("settings", "{prefix: 1}").unwrap_err();
        assert_eq!(broken.0.field.as_deref(), Some("settings"));
        assert!(broken.0.message.starts_with("is not valid JSON"));
        assert_eq!(settings_text(&serde_json::json!({})), "");
        assert_eq!(
            parse_settings("x", &settings_text(&serde_json::json!({"a": [1]}))).unwrap(),
            serde_json::json!({"a": [1]})
        );
    }

    #[test]
    fn an_empty_number_is_none_and_a_bad_one_names_its_field() {
        assert_eq!(optional_number::<u16>("port", "", "r").unwrap(), None);
        assert_eq!(
            optional_number::<u16>("port", " 80 ", "r").unwrap(),
            Some(80)
        );
        let e = optional_number::<u16>("port", "70000", "must be 1–65535").unwrap_err();
        assert_eq!(e.for_field("port").as_deref(), Some("must be 1–65535"));
    }
}
