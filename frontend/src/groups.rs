//! The command groups page: ordered commands, run as one.

use dcp_api_types::{Command, CommandGroup, CommandGroupInput, CommandRef, PageQuery, ParamDef};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};

use crate::{
    api::{self, ApiError},
    commands::{Run, RunDialog},
    components::{ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time},
};

/// The group being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct Editor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    steps: RwSignal<Vec<CommandRef>>,
    error: RwSignal<Option<ApiError>>,
}

impl Editor {
    fn new(group: Option<&CommandGroup>) -> Self {
        Self {
            id: group.map(|g| g.id),
            name: RwSignal::new(group.map(|g| g.name.clone()).unwrap_or_default()),
            description: RwSignal::new(group.map(|g| g.description.clone()).unwrap_or_default()),
            steps: RwSignal::new(group.map(|g| g.commands.clone()).unwrap_or_default()),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> CommandGroupInput {
        CommandGroupInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            command_ids: self.steps.get_untracked().iter().map(|c| c.id).collect(),
        }
    }

    /// Swaps step `i` with its neighbour `i + 1`.
    fn swap(&self, i: usize) {
        self.steps.update(|steps| {
            if i + 1 < steps.len() {
                steps.swap(i, i + 1);
            }
        });
    }
}

/// The parameters a group of `steps` asks for: each name once, defined by
/// the first command that has it (as the server does; it refuses a name
/// two commands define differently when the group is saved).
fn union_params(steps: &[CommandRef], commands: &[Command]) -> Vec<ParamDef> {
    let mut union: Vec<ParamDef> = Vec::new();
    for step in steps {
        let Some(command) = commands.iter().find(|c| c.id == step.id) else {
            continue;
        };
        for def in &command.params {
            if !union.iter().any(|d| d.name == def.name) {
                union.push(def.clone());
            }
        }
    }
    union
}

/// "version: enum (1.0, 2.0), required, default 1.0 — the release".
fn param_summary(def: &ParamDef) -> String {
    let mut text = format!("{}: {}", def.name, def.kind.as_str());
    if !def.choices.is_empty() {
        text.push_str(&format!(" ({})", def.choices.join(", ")));
    }
    if def.required {
        text.push_str(", required");
    }
    if let Some(default) = &def.default {
        let shown = default
            .as_str()
            .map_or_else(|| default.to_string(), str::to_owned);
        text.push_str(&format!(", default {shown}"));
    }
    if !def.description.is_empty() {
        text.push_str(&format!(" — {}", def.description));
    }
    text
}

/// Lists command groups and edits them through the REST API.
#[component]
pub(crate) fn GroupsPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let search = RwSignal::new(String::new());
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let (page, search) = (page.get(), search.get());
        reload.track();
        async move { api::groups(page, PageQuery::DEFAULT_PER_PAGE, &search).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    // Every command, for the step picker (the largest page the API serves).
    let commands = LocalResource::new(|| async {
        api::commands(1, PageQuery::MAX_PER_PAGE, "")
            .await
            .map(|p| p.items)
            .unwrap_or_default()
    });

    let editor = RwSignal::new(None::<Editor>);
    let deleting = RwSignal::new(None::<Doomed>);
    let running = RwSignal::new(None::<Run>);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        spawn_local(async move {
            match api::save_group(ed.id, &ed.input()).await {
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
            <h1>"Command groups"</h1>
            <p class="subtitle">"Commands run in order on each host; a host stops at its first failing step."</p>
        </div>
        <div class="toolbar">
            <input id="group-search" type="search" placeholder="Filter by name"
                prop:value=move || search.get()
                on:input=move |ev| { search.set(event_target_value(&ev)); page.set(1); }/>
            <button id="new-group" class="primary" on:click=move |_| editor.set(Some(Editor::new(None)))>
                "New group"
            </button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="groups-table" class="table">
            <thead>
                <tr><th>"Name"</th><th>"Commands"</th><th>"Parameters"</th><th>"Changed (UTC)"</th><th class="actions"></th></tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|g| (g.id, g.updated_at.clone())
                    children=move |g: CommandGroup| {
                        let (for_edit, for_delete, for_run) = (g.clone(), g.clone(), g.clone());
                        view! {
                            <tr data-name=g.name>
                                <td class="name">{g.name.clone()}</td>
                                <td>{g.commands.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(" → ")}</td>
                                <td>{g.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ")}</td>
                                <td>{short_time(&g.updated_at)}</td>
                                <td class="actions">
                                    <button class="ghost run" on:click=move |_| running.set(Some(Run::group(&for_run)))>"Run"</button>
                                    <button class="ghost edit" on:click=move |_| editor.set(Some(Editor::new(Some(&for_edit))))>"Edit"</button>
                                    <button class="ghost danger delete" on:click=move |_| {
                                        deleting.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }));
                                    }>"Delete"</button>
                                </td>
                            </tr>
                        }
                    }
                />
            </tbody>
        </table>
        <Show when=move || current.get().is_some_and(|p| p.items.is_empty())>
            <p class="empty">"No command groups yet."</p>
        </Show>
        <Pager page=current current=page noun=("group", "groups")/>

        {move || editor.get().map(|ed| {
            let title = Signal::derive(move || {
                if ed.id.is_some() { "Edit command group".to_owned() } else { "New command group".to_owned() }
            });
            let steps_error = move || {
                ed.error.get()
                    .filter(|e| e.0.field.as_deref().is_some_and(|f| f.starts_with("command_ids")))
                    .map(|e| e.message())
            };
            let add = move |ev| {
                let picked: i64 = event_target_value(&ev).parse().unwrap_or_default();
                if let Some(c) = commands.get().unwrap_or_default().into_iter().find(|c| c.id == picked) {
                    ed.steps.update(|steps| steps.push(CommandRef { id: c.id, name: c.name, mode: c.mode }));
                }
            };
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="group-form" class="wide" on:submit=save>
                        <ErrorBanner error=ed.error/>
                        <Field field="name" id_prefix="group" label="Name" value=ed.name error=ed.error
                            hint="1–64 characters: a-z, 0-9, - and _"/>
                        <Field field="description" id_prefix="group" label="Description" value=ed.description error=ed.error/>
                        <fieldset class="steps">
                            <legend>"Commands, in order"</legend>
                            <Show when=move || steps_error().is_some()>
                                <p class="field-error" data-field="command_ids">{steps_error}</p>
                            </Show>
                            <ol id="group-steps">
                                {move || ed.steps.get().into_iter().enumerate().map(|(i, step)| {
                                    let last = i + 1 == ed.steps.get_untracked().len();
                                    view! {
                                        <li class="step">
                                            <span class="name">{step.name}</span>
                                            " " <span class="badge">{step.mode.as_str()}</span>
                                            <button type="button" class="ghost up" disabled=i == 0
                                                on:click=move |_| ed.swap(i.saturating_sub(1))>"↑"</button>
                                            <button type="button" class="ghost down" disabled=last
                                                on:click=move |_| ed.swap(i)>"↓"</button>
                                            <button type="button" class="ghost danger" on:click=move |_| {
                                                ed.steps.update(|steps| { steps.remove(i); });
                                            }>"Remove"</button>
                                        </li>
                                    }
                                }).collect_view()}
                            </ol>
                            <select id="group-add" on:change=add prop:value="">
                                <option value="">"Add a command…"</option>
                                {move || commands.get().unwrap_or_default().into_iter().map(|c| view! {
                                    <option value=c.id.to_string()>{c.name}</option>
                                }).collect_view()}
                            </select>
                        </fieldset>
                        <div class="field">
                            <label>"Parameters (from its commands)"</label>
                            <ul id="group-params" class="param-list">
                                {move || {
                                    let params = union_params(&ed.steps.get(), &commands.get().unwrap_or_default());
                                    if params.is_empty() {
                                        view! { <li class="muted">"None"</li> }.into_any()
                                    } else {
                                        params.into_iter().map(|p| view! { <li>{param_summary(&p)}</li> }).collect_view().into_any()
                                    }
                                }}
                            </ul>
                        </div>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="group-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <ConfirmDelete noun="command group" target=deleting delete=api::delete_group note="Its commands stay."
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>

        <RunDialog run=running/>
    }
}
