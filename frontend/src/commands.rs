//! The commands page (a paged, searchable table; an editor with a mode
//! switch and parameter definitions) and the run dialog every page that
//! starts an execution shares.

use std::collections::{BTreeMap, BTreeSet};

use dcp_api_types::{
    Command, CommandInput, CommandMode, ExecutionInput, HostInput, InlineCommand, ModuleEntry,
    PageQuery, ParamDef, ParamType,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::hooks::use_navigate;
use serde_json::Value;

use crate::{
    api::{self, ApiError},
    components::{
        ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time, show_form_error,
    },
    machines::MachinePicker,
    templates::Labelled,
};

/// One row of the parameter editor.
#[derive(Debug, Clone, Copy)]
struct ParamRow {
    key: u32,
    name: RwSignal<String>,
    kind: RwSignal<ParamType>,
    required: RwSignal<bool>,
    default: RwSignal<String>,
    description: RwSignal<String>,
    choices: RwSignal<String>,
}

impl ParamRow {
    fn new(key: u32, def: Option<&ParamDef>) -> Self {
        Self {
            key,
            name: RwSignal::new(def.map(|d| d.name.clone()).unwrap_or_default()),
            kind: RwSignal::new(def.map(|d| d.kind).unwrap_or_default()),
            required: RwSignal::new(def.is_some_and(|d| d.required)),
            default: RwSignal::new(
                def.and_then(|d| d.default.as_ref())
                    .map(value_text)
                    .unwrap_or_default(),
            ),
            description: RwSignal::new(def.map(|d| d.description.clone()).unwrap_or_default()),
            choices: RwSignal::new(def.map(|d| d.choices.join(", ")).unwrap_or_default()),
        }
    }

    fn def(&self) -> ParamDef {
        let kind = self.kind.get_untracked();
        let default = self.default.get_untracked();
        ParamDef {
            name: self.name.get_untracked().trim().to_owned(),
            kind,
            required: self.required.get_untracked(),
            default: (!default.trim().is_empty()).then(|| typed(kind, default)),
            description: self.description.get_untracked(),
            choices: if kind == ParamType::Enum {
                self.choices
                    .get_untracked()
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// Text typed into a form as a value of `kind`. Text that does not fit
/// stays text, so the server's error names the field.
fn typed(kind: ParamType, text: String) -> Value {
    match kind {
        ParamType::Integer => text
            .trim()
            .parse::<i64>()
            .map_or(Value::String(text), Value::from),
        ParamType::Boolean => match text.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(text),
        },
        ParamType::String | ParamType::Enum => Value::String(text),
    }
}

/// A JSON value as a form shows it.
fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The command being created (`id: None`) or edited.
#[derive(Debug, Clone, Copy)]
struct Editor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    mode: RwSignal<CommandMode>,
    script: RwSignal<String>,
    params: RwSignal<Vec<ParamRow>>,
    next_key: StoredValue<u32>,
    error: RwSignal<Option<ApiError>>,
}

impl Editor {
    fn new(command: Option<&Command>) -> Self {
        let rows: Vec<ParamRow> = command
            .map(|c| {
                c.params
                    .iter()
                    .zip(0..)
                    .map(|(d, key)| ParamRow::new(key, Some(d)))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: command.map(|c| c.id),
            name: RwSignal::new(command.map(|c| c.name.clone()).unwrap_or_default()),
            description: RwSignal::new(command.map(|c| c.description.clone()).unwrap_or_default()),
            mode: RwSignal::new(command.map(|c| c.mode).unwrap_or_default()),
            script: RwSignal::new(command.map(|c| c.script.clone()).unwrap_or_default()),
            next_key: StoredValue::new(u32::try_from(rows.len()).unwrap_or(0)),
            params: RwSignal::new(rows),
            error: RwSignal::new(None),
        }
    }

    fn add_param(&self) {
        let key = self.next_key.get_value();
        self.next_key.set_value(key + 1);
        self.params
            .update(|rows| rows.push(ParamRow::new(key, None)));
    }

    fn input(&self) -> CommandInput {
        CommandInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            mode: self.mode.get_untracked(),
            script: self.script.get_untracked(),
            params: self
                .params
                .get_untracked()
                .iter()
                .map(ParamRow::def)
                .collect(),
        }
    }
}

/// Lists commands and edits them through the REST API.
#[component]
pub(crate) fn CommandsPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let search = RwSignal::new(String::new());
    let reload = RwSignal::new(0_u32);
    let listing = LocalResource::new(move || {
        let (page, search) = (page.get(), search.get());
        reload.track();
        async move { api::commands(page, PageQuery::DEFAULT_PER_PAGE, &search).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || load_error.set(listing.get().and_then(Result::err)));
    let modules = LocalResource::new(|| async { api::modules().await.unwrap_or_default() });

    let editor = RwSignal::new(None::<Editor>);
    let deleting = RwSignal::new(None::<Doomed>);
    let running = RwSignal::new(None::<Run>);

    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(ed) = editor.get_untracked() else {
            return;
        };
        spawn_local(async move {
            match api::save_command(ed.id, &ed.input()).await {
                Ok(_) => {
                    editor.set(None);
                    reload.update(|n| *n += 1);
                }
                Err(e) => show_form_error(ed.error, e),
            }
        });
    };

    view! {
        <div class="page-head">
            <h1>"Commands"</h1>
            <p class="subtitle">"What DCP runs on machines: a command line, a script, or an uploaded module, with typed {{parameters}}."</p>
        </div>
        <div class="toolbar">
            <input id="command-search" type="search" placeholder="Filter by name"
                prop:value=move || search.get()
                on:input=move |ev| { search.set(event_target_value(&ev)); page.set(1); }/>
            <button id="new-command" class="primary" on:click=move |_| editor.set(Some(Editor::new(None)))>
                "New command"
            </button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="commands-table" class="table">
            <thead>
                <tr><th>"Name"</th><th>"Mode"</th><th>"Parameters"</th><th>"Description"</th><th>"Changed (UTC)"</th><th class="actions"></th></tr>
            </thead>
            <tbody>
                <For
                    each=move || current.get().map(|p| p.items).unwrap_or_default()
                    key=|c| (c.id, c.updated_at.clone())
                    children=move |c: Command| {
                        let (for_edit, for_delete, for_run) = (c.clone(), c.clone(), c.clone());
                        view! {
                            <tr data-name=c.name>
                                <td class="name">{c.name.clone()}</td>
                                <td><span class="badge">{c.mode.as_str()}</span></td>
                                <td>{c.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ")}</td>
                                <td class="description">{c.description.clone()}</td>
                                <td>{short_time(&c.updated_at)}</td>
                                <td class="actions">
                                    <button class="ghost run" on:click=move |_| running.set(Some(Run::command(&for_run)))>"Run"</button>
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
            <p class="empty">"No commands yet. Create the first one."</p>
        </Show>
        <Pager page=current current=page noun=("command", "commands")/>

        {move || editor.get().map(|ed| {
            let title = Signal::derive(move || {
                if ed.id.is_some() { "Edit command".to_owned() } else { "New command".to_owned() }
            });
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="command-form" class="wide" on:submit=save>
                        <ErrorBanner error=ed.error/>
                        <Field field="name" id_prefix="command" label="Name" value=ed.name error=ed.error
                            hint="1–64 characters: a-z, 0-9, - and _"/>
                        <Field field="description" id_prefix="command" label="Description"
                            value=ed.description error=ed.error/>
                        <ModeSwitch mode=ed.mode/>
                        <ScriptField editor=ed modules=Signal::derive(move || modules.get().unwrap_or_default())/>
                        <ParamsEditor editor=ed/>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="command-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}

        <ConfirmDelete noun="command" target=deleting delete=api::delete_command
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>

        <RunDialog run=running/>
    }
}

/// Shell, longscript or expert.
#[component]
fn ModeSwitch(mode: RwSignal<CommandMode>) -> impl IntoView {
    view! {
        <div class="field">
            <label>"Mode"</label>
            <div class="segmented" role="radiogroup">
                {CommandMode::ALL.into_iter().map(|m| view! {
                    <button type="button" id=format!("mode-{}", m.as_str())
                        class:selected=move || mode.get() == m
                        on:click=move |_| mode.set(m)>
                        {m.as_str()}
                    </button>
                }).collect_view()}
            </div>
        </div>
    }
}

/// The script, its hint following the mode; in expert mode a module picker.
#[component]
fn ScriptField(editor: Editor, modules: Signal<Vec<ModuleEntry>>) -> impl IntoView {
    let message = move || editor.error.get().and_then(|e| e.for_field("script"));
    let hint = move || match editor.mode.get() {
        CommandMode::Shell => {
            "One command line, run by sh -c. {{name}} inserts a parameter, shell-quoted."
        }
        CommandMode::Longscript => {
            "A script run by bash from a private temporary file, removed after. {{name}} inserts a parameter, shell-quoted."
        }
        CommandMode::Expert => {
            "JSON: {\"module\": \"plugin/module\", \"args\": {...}}. \"{{name}}\" inserts a parameter."
        }
    };
    let picked = RwSignal::new(None::<ModuleEntry>);
    let pick = move |ev| {
        let name = event_target_value(&ev);
        let module = modules
            .get_untracked()
            .into_iter()
            .find(|m| format!("{}/{}", m.plugin, m.module) == name);
        if let Some(m) = &module {
            editor.script.set(module_call(m));
        }
        picked.set(module);
    };
    view! {
        <div class="field" class:invalid=move || message().is_some()>
            <label for="command-script">"Script"</label>
            <Show when=move || editor.mode.get() == CommandMode::Expert>
                <select id="command-module" on:change=pick>
                    <option value="">"Insert a module…"</option>
                    {move || modules.get().into_iter().map(|m| {
                        let name = format!("{}/{}", m.plugin, m.module);
                        view! { <option value=name title=m.description>{name.clone()}</option> }
                    }).collect_view()}
                </select>
                {move || picked.get().map(|m| view! { <p class="hint">{m.description}</p> })}
            </Show>
            <textarea id="command-script" name="script" class="code" spellcheck="false"
                rows=move || if editor.mode.get() == CommandMode::Shell { "2" } else { "10" }
                bind:value=editor.script></textarea>
            <Show when=move || message().is_some()>
                <p class="field-error" data-field="script">{message}</p>
            </Show>
            <p class="hint">{hint}</p>
        </div>
    }
}

/// `{"module": …, "args": …}` calling `module`, its arguments those its
/// schema lists (with their defaults) for the user to fill in.
fn module_call(module: &ModuleEntry) -> String {
    let schema: Value = serde_json::from_str(&module.params_schema).unwrap_or(Value::Null);
    let args: serde_json::Map<String, Value> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| {
            properties
                .iter()
                .map(|(name, property)| {
                    let default = property.get("default").cloned();
                    (
                        name.clone(),
                        default.unwrap_or(Value::String(String::new())),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let name = Value::String(format!("{}/{}", module.plugin, module.module));
    // Written by hand so "module" comes first, as people read it.
    let args = serde_json::to_string_pretty(&args).unwrap_or_else(|_| "{}".to_owned());
    format!(
        "{{\n  \"module\": {name},\n  \"args\": {}\n}}",
        args.replace('\n', "\n  ")
    )
}

/// The attributes of a parameter row whose errors show in their cell.
const PARAM_CELLS: [&str; 4] = ["name", "default", "choices", "description"];

/// Whether the server's `field` is shown in a row's cell rather than above
/// the table: `params[2].name`, not `params` or `params[2].type`.
fn in_param_cell(field: &str) -> bool {
    field
        .strip_prefix("params[")
        .and_then(|rest| rest.split_once("]."))
        .is_some_and(|(i, attr)| i.parse::<usize>().is_ok() && PARAM_CELLS.contains(&attr))
}

/// The server's message for `attr` of the row `key`; the server names rows
/// by position (`params[2].name`), and rows move as others are removed.
fn cell_error(editor: Editor, key: u32, attr: &'static str) -> Signal<Option<(String, String)>> {
    Signal::derive(move || {
        let i = editor
            .params
            .with(|rows| rows.iter().position(|r| r.key == key))?;
        let field = format!("params[{i}].{attr}");
        let message = editor.error.get()?.for_field(&field)?;
        Some((field, message))
    })
}

/// A cell of the parameter editor with its own error under the input.
#[component]
fn ParamCell(error: Signal<Option<(String, String)>>, children: Children) -> impl IntoView {
    view! {
        <td class:invalid=move || error.get().is_some()>
            {children()}
            {move || error.get().map(|(field, message)| view! {
                <p class="field-error" data-field=field>{message}</p>
            })}
        </td>
    }
}

/// The parameter definitions: one editable row each.
#[component]
fn ParamsEditor(editor: Editor) -> impl IntoView {
    // Errors about the list as a whole (e.g. too many, a duplicate name).
    let params_error = move || {
        editor
            .error
            .get()
            .filter(|e| {
                e.0.field
                    .as_deref()
                    .is_some_and(|f| f.starts_with("params") && !in_param_cell(f))
            })
            .map(|e| e.message())
    };
    view! {
        <fieldset class="params">
            <legend>"Parameters"</legend>
            <Show when=move || params_error().is_some()>
                <p class="field-error" data-field="params">{params_error}</p>
            </Show>
            <table class="table compact">
                <thead><tr><th>"Name"</th><th>"Type"</th><th>"Required"</th><th>"Default"</th><th>"Choices (enum)"</th><th>"Description"</th><th></th></tr></thead>
                <tbody>
                    <For each=move || editor.params.get() key=|row| row.key children=move |row: ParamRow| view! {
                        <tr class="param-row">
                            <ParamCell error=cell_error(editor, row.key, "name")>
                                <input class="param-name" type="text" placeholder="name" bind:value=row.name/>
                            </ParamCell>
                            <td>
                                <select class="param-type" on:change=move |ev| {
                                    let picked = event_target_value(&ev);
                                    if let Some(kind) = ParamType::ALL.into_iter().find(|k| k.as_str() == picked) {
                                        row.kind.set(kind);
                                    }
                                }>
                                    {ParamType::ALL.into_iter().map(|k| view! {
                                        <option value=k.as_str() selected=move || row.kind.get() == k>{k.as_str()}</option>
                                    }).collect_view()}
                                </select>
                            </td>
                            <td><input class="param-required" type="checkbox" bind:checked=row.required/></td>
                            <ParamCell error=cell_error(editor, row.key, "default")>
                                <input class="param-default" type="text" bind:value=row.default/>
                            </ParamCell>
                            <ParamCell error=cell_error(editor, row.key, "choices")>
                                <input class="param-choices" type="text" placeholder="a, b, c"
                                    disabled=move || row.kind.get() != ParamType::Enum bind:value=row.choices/>
                            </ParamCell>
                            <ParamCell error=cell_error(editor, row.key, "description")>
                                <input class="param-description" type="text" bind:value=row.description/>
                            </ParamCell>
                            <td><button type="button" class="ghost danger" on:click=move |_| {
                                editor.params.update(|rows| rows.retain(|r| r.key != row.key));
                            }>"Remove"</button></td>
                        </tr>
                    }/>
                </tbody>
            </table>
            <button id="add-param" type="button" class="ghost" on:click=move |_| editor.add_param()>"Add parameter"</button>
        </fieldset>
    }
}

/// What the run dialog starts.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    title: String,
    command_id: Option<i64>,
    group_id: Option<i64>,
    params: Vec<ParamDef>,
}

impl Run {
    /// A stored command.
    pub(crate) fn command(c: &Command) -> Self {
        Self {
            title: format!("Run {}", c.name),
            command_id: Some(c.id),
            group_id: None,
            params: c.params.clone(),
        }
    }

    /// A stored group.
    pub(crate) fn group(g: &dcp_api_types::CommandGroup) -> Self {
        Self {
            title: format!("Run group {}", g.name),
            command_id: None,
            group_id: Some(g.id),
            params: g.params.clone(),
        }
    }

    /// An inline command typed in the dialog.
    pub(crate) fn ad_hoc() -> Self {
        Self {
            title: "New ad-hoc run".to_owned(),
            command_id: None,
            group_id: None,
            params: Vec::new(),
        }
    }
}

/// What a run targets: the API takes one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// Machines DCP manages, picked (`machine_ids`).
    Machines,
    /// Every node of a pool (`pool_id`).
    Pool,
    /// Servers typed by address, with a key or password (`hosts`).
    Addresses,
}

impl Target {
    const ALL: [Self; 3] = [Self::Machines, Self::Pool, Self::Addresses];

    /// The segment's label and id suffix.
    fn name(self) -> &'static str {
        match self {
            Self::Machines => "machines",
            Self::Pool => "pool",
            Self::Addresses => "addresses",
        }
    }
}

/// The non-empty lines of the hosts textarea: one host each.
fn host_lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Parses `user@address:port` lines (user `root`, port 22 when absent); the
/// key and password go to every host.
fn parse_hosts(text: &str, private_key: &str, password: &str) -> Result<Vec<HostInput>, ApiError> {
    host_lines(text)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let (user, rest) = match line.split_once('@') {
                Some((u, r)) => (Some(u.to_owned()), r),
                None => (None, line),
            };
            // A second colon means an IPv6 address without a port.
            let (address, port) = match rest.rsplit_once(':') {
                Some((a, p)) if !a.contains(':') => {
                    let port = p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                        ApiError::invalid(
                            "hosts",
                            format!(
                                "line {} ({line}): port must be a number from 1 to 65535",
                                i + 1
                            ),
                        )
                    })?;
                    (a.to_owned(), Some(port))
                }
                _ => (rest.to_owned(), None),
            };
            Ok(HostInput {
                address,
                port,
                user,
                private_key: (!private_key.trim().is_empty()).then(|| private_key.to_owned()),
                password: (!password.is_empty()).then(|| password.to_owned()),
            })
        })
        .collect()
}

/// Moves the server's error about one host (`hosts[3].port`) to the input
/// it came from: the key and password inputs serve every host, the rest is
/// a line of the hosts textarea.
fn place_host_error(error: ApiError, hosts: &str) -> ApiError {
    let Some(field) = error.0.field.clone() else {
        return error;
    };
    let Some((i, attr)) = field
        .strip_prefix("hosts[")
        .and_then(|rest| rest.split_once("]."))
        .and_then(|(i, attr)| Some((i.parse::<usize>().ok()?, attr)))
    else {
        return error;
    };
    let message = error.for_field(&field).unwrap_or_default();
    match attr {
        "private_key" | "password" => ApiError::invalid(attr, message),
        _ => {
            let line = host_lines(hosts).get(i).copied().unwrap_or_default();
            ApiError::invalid(
                "hosts",
                format!("line {} ({line}): {attr} {message}", i + 1),
            )
        }
    }
}

/// Starts an execution of `run` (when set): targets, credentials, forks,
/// timeout and a form for the parameters; opens the execution page.
#[component]
pub(crate) fn RunDialog(run: RwSignal<Option<Run>>) -> impl IntoView {
    let navigate = use_navigate();
    move || {
        let navigate = navigate.clone();
        run.get().map(|r| {
            let target = RwSignal::new(Target::Addresses);
            let machines = RwSignal::new(BTreeSet::<i64>::new());
            let pool = RwSignal::new(String::new());
            let pools = LocalResource::new(|| api::pools(None));
            let hosts = RwSignal::new(String::new());
            let private_key = RwSignal::new(String::new());
            let password = RwSignal::new(String::new());
            let forks = RwSignal::new("50".to_owned());
            let timeout = RwSignal::new("300".to_owned());
            let mode = RwSignal::new(CommandMode::Shell);
            let script = RwSignal::new(String::new());
            let error = RwSignal::new(None::<ApiError>);
            let values: Vec<(ParamDef, RwSignal<String>)> = r
                .params
                .iter()
                .map(|p| {
                    let initial = p.default.as_ref().map(value_text).unwrap_or_else(|| {
                        if p.kind == ParamType::Boolean { "false".to_owned() } else { String::new() }
                    });
                    (p.clone(), RwSignal::new(initial))
                })
                .collect();
            let ad_hoc = r.command_id.is_none() && r.group_id.is_none();
            let submit_values = values.clone();
            let submit = move |ev: SubmitEvent| {
                ev.prevent_default();
                let params: BTreeMap<String, Value> = submit_values
                    .iter()
                    .filter_map(|(def, v)| {
                        let v = v.get_untracked();
                        (!v.is_empty()).then(|| (def.name.clone(), typed(def.kind, v)))
                    })
                    .collect();
                let hosts_text = hosts.get_untracked();
                let mut input = ExecutionInput::default();
                match target.get_untracked() {
                    Target::Machines => {
                        input.machine_ids = Some(machines.get_untracked().into_iter().collect());
                    }
                    Target::Pool => match pool.get_untracked().parse() {
                        Ok(id) => input.pool_id = Some(id),
                        Err(_) => return error.set(Some(ApiError::invalid("pool_id", "choose a pool".to_owned()))),
                    },
                    Target::Addresses => match parse_hosts(
                        &hosts_text,
                        &private_key.get_untracked(),
                        &password.get_untracked(),
                    ) {
                        Ok(targets) => input.hosts = Some(targets),
                        Err(e) => return error.set(Some(e)),
                    },
                }
                let input = ExecutionInput {
                    command_id: r.command_id,
                    group_id: r.group_id,
                    command: ad_hoc.then(|| InlineCommand {
                        mode: mode.get_untracked(),
                        script: script.get_untracked(),
                    }),
                    params,
                    forks: forks.get_untracked().trim().parse().ok(),
                    timeout_secs: timeout.get_untracked().trim().parse().ok(),
                    ..input
                };
                let navigate = navigate.clone();
                spawn_local(async move {
                    match api::start_execution(&input).await {
                        Ok(created) => {
                            run.set(None);
                            navigate(&format!("/executions/{}", created.id), Default::default());
                        }
                        Err(e) => error.set(Some(place_host_error(e, &hosts_text))),
                    }
                });
            };
            let mut shown: Vec<String> = ["machine_ids", "pool_id", "hosts", "private_key", "password", "forks", "timeout_secs"]
                .map(str::to_owned)
                .into();
            if ad_hoc {
                shown.push("command.script".to_owned());
            }
            shown.extend(r.params.iter().map(|p| format!("params.{}", p.name)));
            let password_error = move || error.get().and_then(|e| e.for_field("password"));
            view! {
                <Modal title=Signal::derive(move || r.title.clone()) on_close=Callback::new(move |()| run.set(None))>
                    <form id="run-form" class="wide" on:submit=submit>
                        <ErrorBanner error=error all=true shown/>
                        <Show when=move || ad_hoc>
                            <div class="field">
                                <label>"Mode"</label>
                                <div class="segmented">
                                    {[CommandMode::Shell, CommandMode::Longscript].into_iter().map(|m| view! {
                                        <button type="button" id=format!("run-mode-{}", m.as_str())
                                            class:selected=move || mode.get() == m
                                            on:click=move |_| mode.set(m)>{m.as_str()}</button>
                                    }).collect_view()}
                                </div>
                            </div>
                            <Field field="command.script" id_prefix="run" label="Script" value=script error=error multiline=true/>
                        </Show>
                        <div class="field">
                            <label>"Run on"</label>
                            <div class="segmented">
                                {Target::ALL.into_iter().map(|t| view! {
                                    <button type="button" id=format!("run-target-{}", t.name())
                                        class:selected=move || target.get() == t
                                        on:click=move |_| target.set(t)>{t.name()}</button>
                                }).collect_view()}
                            </div>
                        </div>
                        <Show when=move || target.get() == Target::Machines>
                            <Labelled field="machine_ids" id="run-machines-search" label="Machines" error
                                hint="Ready machines; each logs in with its own user and key.">
                                <MachinePicker chosen=machines free=false id="run-machines"/>
                            </Labelled>
                        </Show>
                        <Show when=move || target.get() == Target::Pool>
                            <Labelled field="pool_id" id="run-pool" label="Pool" error
                                hint="Every node of the pool, each with its machine's key (or DCP's default key for a server added by address).">
                                <select id="run-pool" prop:value=move || pool.get() on:change=move |ev| pool.set(event_target_value(&ev))>
                                    <option value="">"Choose a pool"</option>
                                    {move || pools.get().and_then(Result::ok).map(|page| page.items.into_iter().map(|p| view! {
                                        <option value=p.id.to_string()>{format!("{} · {} nodes", p.name, p.nodes)}</option>
                                    }).collect_view())}
                                </select>
                            </Labelled>
                        </Show>
                        <Show when=move || target.get() == Target::Addresses>
                            <Field field="hosts" id_prefix="run" label="Hosts" value=hosts error=error multiline=true
                                hint="One per line: user@address:port (user root and port 22 when left out)"/>
                            <Field field="private_key" id_prefix="run" label="Private key" value=private_key error=error multiline=true
                                hint="Optional: OpenSSH or PEM text for every host. Empty: DCP's configured key."/>
                            <div class="field" class:invalid=move || password_error().is_some()>
                                <label for="run-password">"Password"</label>
                                <input id="run-password" type="password" autocomplete="off" bind:value=password/>
                                {move || password_error().map(|m| view! { <p class="field-error" data-field="password">{m}</p> })}
                                <p class="hint">"Optional, for servers without a key yet. Never stored."</p>
                            </div>
                        </Show>
                        <div class="row">
                            <Field field="forks" id_prefix="run" label="Forks" value=forks error=error/>
                            <Field field="timeout_secs" id_prefix="run" label="Timeout per host (s)" value=timeout error=error/>
                        </div>
                        {values.into_iter().map(|(def, value)| view! { <ParamInput def value error/> }).collect_view()}
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| run.set(None)>"Cancel"</button>
                            <button id="run-start" type="submit" class="primary">"Run"</button>
                        </div>
                    </form>
                </Modal>
            }
        })
    }
}

/// One parameter's input, by its type.
#[component]
fn ParamInput(
    def: ParamDef,
    value: RwSignal<String>,
    error: RwSignal<Option<ApiError>>,
) -> impl IntoView {
    let field = format!("params.{}", def.name);
    let id = format!("param-{}", def.name);
    let message = {
        let field = field.clone();
        Signal::derive(move || error.get().and_then(|e| e.for_field(&field)))
    };
    let input = match def.kind {
        ParamType::Boolean => view! {
            <input id=id.clone() type="checkbox"
                prop:checked=move || value.get() == "true"
                on:change=move |ev| value.set(event_target_checked(&ev).to_string())/>
        }
        .into_any(),
        ParamType::Enum => {
            let choices = def.choices.clone();
            view! {
                <select id=id.clone() on:change=move |ev| value.set(event_target_value(&ev))>
                    <option value="">"—"</option>
                    {choices.into_iter().map(|c| {
                        let selected = c.clone();
                        view! { <option value=c selected=move || value.get() == selected>{c.clone()}</option> }
                    }).collect_view()}
                </select>
            }
            .into_any()
        }
        ParamType::Integer => {
            view! { <input id=id.clone() type="number" bind:value=value/> }.into_any()
        }
        ParamType::String => {
            view! { <input id=id.clone() type="text" autocomplete="off" bind:value=value/> }
                .into_any()
        }
    };
    let label = format!("{}{}", def.name, if def.required { " *" } else { "" });
    view! {
        <div class="field" class:invalid=move || message.get().is_some()>
            <label for=id>{label}</label>
            {input}
            {move || message.get().map(|m| view! { <p class="field-error" data-field=field.clone()>{m}</p> })}
            <p class="hint">{def.description}</p>
        </div>
    }
}
