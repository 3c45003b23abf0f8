//! Tasks: the list with counts per state, a task's node × step grid that
//! follows the server live, and the task templates behind them.

use dcp_api_types::{
    ErrorCode, LeftoverMachines, NodeCounts, PageQuery, StepSpec, StepState, Task, TaskDetail,
    TaskEvent, TaskState, TaskTemplate, TaskTemplateInput, TemplatePurpose, builtin,
};
use leptos::{ev::SubmitEvent, prelude::*, task::spawn_local};
use leptos_router::{components::A, hooks::use_params_map};
use wasm_bindgen::{JsCast as _, closure::Closure};

use crate::{
    api::{self, ApiError},
    components::{
        ConfirmDelete, Doomed, ErrorBanner, Field, Modal, Pager, short_time, show_form_error,
    },
    executions::duration,
    templates::Labelled,
};

/// "3 ok · 1 failed · 2 waiting"; part-way nodes of a paused task read "paused".
fn counts_text(c: &NodeCounts, state: TaskState) -> String {
    // A paused task's nodes that are part-way wait for the resume.
    let under_way = if state == TaskState::Paused {
        "paused"
    } else {
        "running"
    };
    let mut parts = vec![format!("{} ok", c.succeeded)];
    for (n, what) in [
        (c.running, under_way),
        (c.failed, "failed"),
        (c.pending, "waiting"),
        (c.skipped, "skipped"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    parts.join(" · ")
}

fn state_badge(state: TaskState) -> impl IntoView {
    view! { <span class=format!("badge state-{}", state.as_str()) data-test="task-state" data-state=state.as_str()>{state.as_str()}</span> }
}

/// Every task, newest first.
#[component]
pub(crate) fn TasksPage() -> impl IntoView {
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        let page = page.get();
        async move { api::tasks(page, api::TaskScope::All).await }
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        error.set(match listing.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    view! {
        <div class="page-head">
            <h1>"Tasks"</h1>
            <p class="subtitle">"Expand, shrink, deploy and ad-hoc work on pools. Start one from a pool's page."</p>
        </div>
        <ErrorBanner error all=true/>
        <TaskTable tasks=Signal::derive(move || current.get().map(|p| p.items).unwrap_or_default())/>
        <Pager page=current current=page noun=("task", "tasks")/>
    }
}

/// A table of tasks.
#[component]
pub(crate) fn TaskTable(tasks: Signal<Vec<Task>>) -> impl IntoView {
    view! {
        <table id="tasks-table" class="table">
            <thead><tr><th>"Task"</th><th>"Pool"</th><th>"State"</th><th>"Nodes"</th><th>"Batch"</th><th>"By"</th><th>"Created (UTC)"</th></tr></thead>
            <tbody>
                <For each=move || tasks.get() key=|t| (t.id, t.state, t.counts) children=move |t: Task| view! {
                    <tr data-test="task-row" data-id=t.id.to_string()>
                        <td class="name"><A href=format!("/tasks/{}", t.id)>{format!("#{} {}", t.id, t.kind.as_str())}</A>
                            {t.overrides.tag.clone().map(|tag| view! { <span class="muted">{format!(" → {tag}")}</span> })}</td>
                        <td><A href=format!("/pools/{}", t.pool_id)>{t.pool_name.clone()}</A></td>
                        <td>{state_badge(t.state)}</td>
                        <td data-test="task-counts">{counts_text(&t.counts, t.state)}</td>
                        <td>{t.batch_size.to_string()}</td>
                        <td>{t.created_by.clone()}</td>
                        <td>{short_time(&t.created_at)}</td>
                    </tr>
                }/>
            </tbody>
        </table>
        <Show when=move || tasks.get().is_empty()>
            <p class="empty">"No tasks yet."</p>
        </Show>
    }
}

/// Follows `/api/v1/tasks/{id}/events` into `detail`: the snapshot, then
/// each change applied to it; polls when the stream breaks before the task
/// ends.
fn follow(id: i64, detail: RwSignal<Option<TaskDetail>>, error: RwSignal<Option<ApiError>>) {
    let Ok(source) = web_sys::EventSource::new(&format!("/api/v1/tasks/{id}/events")) else {
        poll(id, detail, error);
        return;
    };
    let on = |name: &'static str, parse: fn(&str) -> Option<TaskEvent>| {
        let closer = source.clone();
        api::on_event(&source, name, move |data| {
            let Some(event) = parse(data) else {
                return;
            };
            detail.update(|held| event.apply(held));
            if detail
                .get_untracked()
                .is_some_and(|d| d.task.state.is_final())
            {
                closer.close();
            }
        });
    };
    on("snapshot", |d| {
        serde_json::from_str(d).ok().map(TaskEvent::Snapshot)
    });
    on("task", |d| {
        serde_json::from_str(d).ok().map(TaskEvent::Task)
    });
    on("node", |d| {
        serde_json::from_str(d).ok().map(TaskEvent::Node)
    });
    on("step", |d| {
        serde_json::from_str(d).ok().map(TaskEvent::Step)
    });
    let broken = source.clone();
    let on_error = Closure::<dyn Fn()>::new(move || {
        broken.close();
        if !detail
            .get_untracked()
            .is_some_and(|d| d.task.state.is_final())
        {
            poll(id, detail, error);
        }
    });
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    on_cleanup(move || source.close());
}

/// Reads the task every 2 s until it ends; a task that is not there (or
/// not for this user) stops it with the server's "not found".
fn poll(id: i64, detail: RwSignal<Option<TaskDetail>>, error: RwSignal<Option<ApiError>>) {
    spawn_local(async move {
        match api::task(id).await {
            Ok(fresh) => {
                let done = fresh.task.state.is_final();
                detail.set(Some(fresh));
                if done {
                    return;
                }
            }
            Err(e) if matches!(e.0.code, ErrorCode::NotFound | ErrorCode::Forbidden) => {
                error.set(Some(e));
                return;
            }
            // Not reachable now: asked again.
            Err(_) => {}
        }
        set_timeout(
            move || poll(id, detail, error),
            std::time::Duration::from_secs(2),
        );
    });
}

/// One task: its state, controls, and the node × step grid, live.
#[component]
pub(crate) fn TaskPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|id| id.parse::<i64>().ok()));
    let detail = RwSignal::new(None::<TaskDetail>);
    let error = RwSignal::new(None::<ApiError>);
    // The cell whose log is shown: (node, step).
    let open = RwSignal::new(None::<(usize, usize)>);
    Effect::new(move || match id() {
        Some(id) => follow(id, detail, error),
        None => error.set(Some(ApiError::local("no such task"))),
    });
    let act = move |action: &'static str| {
        move |_| {
            let Some(id) = id() else { return };
            spawn_local(async move {
                match api::task_action(id, action).await {
                    Ok(_) => {
                        error.set(None);
                        // The stream ended with the task (retry reopens it);
                        // otherwise it is still open and shows the change.
                        if detail
                            .get_untracked()
                            .is_some_and(|d| d.task.state.is_final())
                        {
                            follow(id, detail, error);
                        }
                    }
                    Err(e) => error.set(Some(e)),
                }
            });
        }
    };
    view! {
        <ErrorBanner error all=true/>
        {move || detail.get().map(|d| {
            let t = d.task;
            let state = t.state;
            let asked = t.command.clone();
            view! {
                <div class="page-head">
                    <h1>{format!("#{} {} of ", t.id, t.kind.as_str())}<A href=format!("/pools/{}", t.pool_id)>{t.pool_name.clone()}</A></h1>
                    <p class="subtitle">
                        <span id="task-state">{state_badge(state)}</span>
                        " " <span id="task-counts">{counts_text(&t.counts, t.state)}</span>
                        {format!(" · batch {} · by {} · {}", t.batch_size, t.created_by, short_time(&t.created_at))}
                        {t.overrides.tag.clone().map(|tag| format!(" · tag {tag}"))}
                    </p>
                    {(!t.reason.is_empty()).then(|| view! { <p class="subtitle" id="task-reason">{t.reason.clone()}</p> })}
                    {asked.map(|c| view! { <p class="hint" id="task-asked">{format!("{c} asked; the engine carries it out at the next step boundary")}</p> })}
                </div>
                <div class="toolbar">
                    {matches!(state, TaskState::Pending | TaskState::Running).then(|| view! {
                        <button id="pause-task" on:click=act("pause")>"Pause"</button>
                    })}
                    {(state == TaskState::Paused).then(|| view! {
                        <button id="resume-task" class="primary" on:click=act("resume")>"Resume"</button>
                    })}
                    {matches!(state, TaskState::PartiallyFailed | TaskState::Failed).then(|| view! {
                        <button id="retry-task" class="primary" on:click=act("retry")>"Retry failed nodes"</button>
                    })}
                    {(!state.is_final()).then(|| view! {
                        <button id="cancel-task" class="danger" on:click=act("cancel")>"Cancel"</button>
                    })}
                </div>
            }
        })}
        <table id="task-grid" class="table grid">
            <thead>
                <tr>
                    <th>"Node"</th>
                    {move || detail.get().map(|d| d.steps.iter().map(|s| view! { <th>{s.name.clone()}</th> }).collect_view())}
                </tr>
            </thead>
            <tbody>
                {move || detail.get().map(|d| d.nodes.into_iter().enumerate().map(|(n, node)| {
                    let address = if node.address.is_empty() { format!("node {}", node.index + 1) } else { node.address.clone() };
                    view! {
                        <tr data-test="task-node" data-address=node.address.clone() data-state=node.state.as_str()>
                            <td class="name">{address}
                                {node.machine_id.map(|m| view! { " " <A href=format!("/machines/{m}")>"machine"</A> })}</td>
                            {node.steps.into_iter().enumerate().map(|(s, step)| {
                                let took = duration(step.started_at.as_deref(), step.finished_at.as_deref());
                                let attempts = if step.attempts > 1 { format!(" ×{}", step.attempts) } else { String::new() };
                                view! {
                                    <td class=format!("cell step-{}", step.state.as_str()) data-test="task-cell"
                                        data-node=n.to_string() data-step=s.to_string() data-state=step.state.as_str()
                                        on:click=move |_| open.set(Some((n, s)))>
                                        <span class=format!("badge state-{}", match step.state {
                                            StepState::Pending => "pending",
                                            StepState::Running => "running",
                                            StepState::Succeeded => "succeeded",
                                            StepState::Failed => "failed",
                                            StepState::Skipped => "cancelled",
                                        })>{step.state.as_str()}</span>
                                        <span class="muted">{format!(" {took}{attempts}")}</span>
                                        {step.compensation.as_ref().map(|c| view! {
                                            <span class=format!("badge compensation state-{}", c.state.as_str()) data-test="task-compensation"
                                                title="What became of the machines this step made">{compensation_text(c.state)}</span>
                                        })}
                                    </td>
                                }
                            }).collect_view()}
                        </tr>
                    }
                }).collect_view())}
            </tbody>
        </table>
        {move || open.get().and_then(|(n, s)| {
            let d = detail.get()?;
            let node = d.nodes.get(n)?.clone();
            let step = node.steps.get(s)?.clone();
            let name = d.steps.get(s).map(|st| st.name.clone()).unwrap_or_default();
            Some(view! {
                <div class="step-log" id="step-log">
                    <h3>{format!("{name} on {}", if node.address.is_empty() { format!("node {}", node.index + 1) } else { node.address })}
                        <button class="ghost" on:click=move |_| open.set(None)>"Close"</button></h3>
                    {(!step.error.is_empty()).then(|| view! { <p class="error-text" id="step-error">{step.error.clone()}</p> })}
                    <pre class="code" id="step-output">{if step.output.is_empty() { "(no output)".to_owned() } else { step.output.clone() }}</pre>
                    {step.compensation.clone().map(|c| view! {
                        <h4>{format!("Its machines: {}", compensation_text(c.state))}</h4>
                        <pre class="code" id="step-compensation">{if c.output.is_empty() { "(nothing yet)".to_owned() } else { c.output }}</pre>
                    })}
                </div>
            })
        })}
    }
}

/// How the undoing of a step's leftovers reads.
fn compensation_text(state: StepState) -> &'static str {
    match state {
        StepState::Pending | StepState::Running => "releasing machines…",
        StepState::Succeeded => "machines cleaned up",
        StepState::Failed => "machines not released",
        StepState::Skipped => "machines left",
    }
}

/// Which built-in a step is, or a command group ("group").
fn step_kind(step: &StepSpec) -> String {
    if step.group_id.is_some() {
        "group".to_owned()
    } else if step.starts_service() {
        builtin::START_SERVICE.to_owned()
    } else {
        step.name.clone()
    }
}

/// One step row of the template editor.
#[derive(Debug, Clone, Copy)]
struct StepRow {
    kind: RwSignal<String>,
    name: RwSignal<String>,
    group: RwSignal<String>,
    retries: RwSignal<String>,
    delay: RwSignal<String>,
    timeout: RwSignal<String>,
    ignore: RwSignal<bool>,
    /// create_vm: what becomes of its machines if it does not finish.
    leftover: RwSignal<String>,
}

impl StepRow {
    fn new(step: Option<&StepSpec>) -> Self {
        Self {
            kind: RwSignal::new(step.map_or_else(|| builtin::START_SERVICE.to_owned(), step_kind)),
            name: RwSignal::new(step.map(|s| s.name.clone()).unwrap_or_default()),
            group: RwSignal::new(
                step.and_then(|s| s.group_id)
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
            ),
            retries: RwSignal::new(step.map_or(0, |s| s.retries).to_string()),
            delay: RwSignal::new(step.map_or(0, |s| s.retry_delay_secs).to_string()),
            timeout: RwSignal::new(
                step.and_then(|s| s.timeout_secs)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            ignore: RwSignal::new(step.is_some_and(|s| s.ignore_error)),
            leftover: RwSignal::new(
                step.map_or(LeftoverMachines::Release, |s| s.leftover_machines)
                    .as_str()
                    .to_owned(),
            ),
        }
    }

    fn spec(&self, i: usize) -> Result<StepSpec, ApiError> {
        let number = |field: &str, text: String| {
            text.trim().parse::<u32>().map_err(|_| {
                ApiError::invalid(&format!("steps[{i}].{field}"), "must be a whole number")
            })
        };
        let kind = self.kind.get_untracked();
        let typed = self.name.get_untracked().trim().to_owned();
        let (name, group_id) = match kind.as_str() {
            "group" => {
                let group = self.group.get_untracked().parse::<i64>().map_err(|_| {
                    ApiError::invalid(&format!("steps[{i}].group_id"), "choose a command group")
                })?;
                (
                    if typed.is_empty() {
                        format!("group {group}")
                    } else {
                        typed
                    },
                    Some(group),
                )
            }
            k if k == builtin::START_SERVICE && typed.starts_with(builtin::START_SERVICE) => {
                (typed, None)
            }
            k => (k.to_owned(), None),
        };
        let timeout = self.timeout.get_untracked();
        Ok(StepSpec {
            name,
            group_id,
            params: Default::default(),
            retries: number("retries", self.retries.get_untracked())?,
            retry_delay_secs: number("retry_delay_secs", self.delay.get_untracked())?,
            ignore_error: self.ignore.get_untracked(),
            timeout_secs: if timeout.trim().is_empty() {
                None
            } else {
                Some(number("timeout_secs", timeout)?)
            },
            leftover_machines: if kind == builtin::CREATE_VM
                && self.leftover.get_untracked() == LeftoverMachines::HandToPool.as_str()
            {
                LeftoverMachines::HandToPool
            } else {
                LeftoverMachines::Release
            },
        })
    }
}

/// The template being created or edited.
#[derive(Debug, Clone)]
struct TemplateEditor {
    id: Option<i64>,
    name: RwSignal<String>,
    description: RwSignal<String>,
    purpose: RwSignal<String>,
    steps: RwSignal<Vec<StepRow>>,
    error: RwSignal<Option<ApiError>>,
}

impl TemplateEditor {
    fn new(t: Option<&TaskTemplate>) -> Self {
        Self {
            id: t.map(|t| t.id),
            name: RwSignal::new(t.map(|t| t.name.clone()).unwrap_or_default()),
            description: RwSignal::new(t.map(|t| t.description.clone()).unwrap_or_default()),
            purpose: RwSignal::new(t.map_or("adhoc", |t| t.purpose.as_str()).to_owned()),
            steps: RwSignal::new(t.map_or_else(
                || vec![StepRow::new(None)],
                |t| t.steps.iter().map(|s| StepRow::new(Some(s))).collect(),
            )),
            error: RwSignal::new(None),
        }
    }

    fn input(&self) -> Result<TaskTemplateInput, ApiError> {
        Ok(TaskTemplateInput {
            name: self.name.get_untracked().trim().to_owned(),
            description: self.description.get_untracked(),
            purpose: serde_json::from_value(serde_json::Value::String(
                self.purpose.get_untracked(),
            ))
            .unwrap_or(TemplatePurpose::Adhoc),
            steps: self
                .steps
                .get_untracked()
                .iter()
                .enumerate()
                .map(|(i, row)| row.spec(i))
                .collect::<Result<_, _>>()?,
        })
    }
}

const KINDS: &[(&str, &str)] = &[
    (
        builtin::CREATE_VM,
        "create_vm — make a machine, add it as a node",
    ),
    (
        builtin::START_SERVICE,
        "start_service — run the service's image",
    ),
    (builtin::STOP_SERVICE, "stop_service — remove the container"),
    (
        builtin::RETURN_VM,
        "return_vm — leave the pool, release the machine",
    ),
    (builtin::REGISTER, "register — add to the load balancer"),
    (
        builtin::UNREGISTER,
        "unregister — take out of the load balancer",
    ),
    ("group", "a command group"),
];

/// Task templates: what expand, shrink, deploy and ad-hoc tasks do.
#[component]
pub(crate) fn TaskTemplatesPage() -> impl IntoView {
    let reload = RwSignal::new(0_u32);
    let page = RwSignal::new(1_u32);
    let listing = LocalResource::new(move || {
        reload.track();
        api::task_templates_page(page.get(), PageQuery::DEFAULT_PER_PAGE)
    });
    let current = Signal::derive(move || listing.get().and_then(Result::ok));
    let groups = LocalResource::new(|| async {
        api::groups(1, PageQuery::MAX_PER_PAGE, "")
            .await
            .map(|p| p.items)
    });
    let load_error = RwSignal::new(None::<ApiError>);
    Effect::new(move || {
        load_error.set(match listing.get() {
            Some(Err(e)) => Some(e),
            _ => None,
        });
    });
    let editor = RwSignal::new(None::<TemplateEditor>);
    let deleting = RwSignal::new(None::<Doomed>);
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
            match api::save_task_template(ed.id, &input).await {
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
            <h1>"Task templates"</h1>
            <p class="subtitle">"The steps every node of a task goes through. Pools bind one each for expand, shrink and deploy."</p>
        </div>
        <div class="toolbar">
            <button id="new-task-template" class="primary" on:click=move |_| editor.set(Some(TemplateEditor::new(None)))>"New template"</button>
        </div>
        <ErrorBanner error=load_error all=true/>
        <table id="task-templates-table" class="table">
            <thead><tr><th>"Name"</th><th>"For"</th><th>"Steps"</th><th class="actions"></th></tr></thead>
            <tbody>
                <For each=move || current.get().map(|p| p.items).unwrap_or_default() key=|t| (t.id, t.updated_at.clone())
                    children=move |t: TaskTemplate| {
                        let (for_edit, for_delete) = (t.clone(), t.clone());
                        view! {
                            <tr data-name=t.name data-test="task-template-row">
                                <td class="name">{t.name.clone()}{t.seeded.then(|| view! { <span class="badge">"seeded"</span> })}
                                    <div class="muted">{t.description.clone()}</div></td>
                                <td>{t.purpose.as_str()}</td>
                                <td>{t.steps.iter().map(|s| s.name.clone()).collect::<Vec<_>>().join(" → ")}</td>
                                <td class="actions">
                                    <button class="ghost edit" on:click=move |_| editor.set(Some(TemplateEditor::new(Some(&for_edit))))>"Edit"</button>
                                    <button class="ghost danger delete" on:click=move |_| deleting.set(Some(Doomed { id: for_delete.id, name: for_delete.name.clone() }))>"Delete"</button>
                                </td>
                            </tr>
                        }
                    }/>
            </tbody>
        </table>
        <Pager page=current current=page noun=("task template", "task templates")/>
        {move || editor.get().map(|ed| {
            let title = Signal::derive({
                let id = ed.id;
                move || if id.is_some() { "Edit task template".to_owned() } else { "New task template".to_owned() }
            });
            let steps = ed.steps;
            let error = ed.error;
            view! {
                <Modal title on_close=Callback::new(move |()| editor.set(None))>
                    <form id="task-template-form" class="wide" novalidate on:submit=save>
                        <ErrorBanner error all=true shown=vec!["name".into(), "purpose".into()]/>
                        <Field field="name" id_prefix="task-template" label="Name" value=ed.name error/>
                        <Field field="description" id_prefix="task-template" label="Description" value=ed.description error/>
                        <Labelled field="purpose" id="task-template-purpose" label="For" error>
                            <select id="task-template-purpose" on:change=move |ev| ed.purpose.set(event_target_value(&ev))>
                                {["expand", "shrink", "deploy", "adhoc"].into_iter().map(|p| view! {
                                    <option value=p selected=move || ed.purpose.get() == p>{p}</option>
                                }).collect_view()}
                            </select>
                        </Labelled>
                        <table class="table steps" id="task-template-steps">
                            <thead><tr><th>"#"</th><th>"Step"</th><th>"Name / group"</th><th>"Retries"</th><th>"Delay (s)"</th><th>"Timeout (s)"</th><th>"Ignore errors"</th><th></th></tr></thead>
                            <tbody>
                                {move || steps.get().into_iter().enumerate().map(|(i, row)| {
                                    let message = move || error.get().filter(|e| e.0.field.as_deref().is_some_and(|f| f.starts_with(&format!("steps[{i}]")))).map(|e| e.message());
                                    view! {
                                        <tr class="step-row" data-index=i.to_string()>
                                            <td>{(i + 1).to_string()}</td>
                                            <td>
                                                <select class="step-kind" on:change=move |ev| row.kind.set(event_target_value(&ev))>
                                                    {KINDS.iter().map(|(k, label)| view! {
                                                        <option value=*k selected=move || row.kind.get() == *k>{*label}</option>
                                                    }).collect_view()}
                                                </select>
                                                {move || message().map(|m| view! { <p class="field-error" data-field=format!("steps[{i}]")>{m}</p> })}
                                            </td>
                                            <td>
                                                <Show when=move || row.kind.get() == "group"
                                                    fallback=move || view! {
                                                        <Show when=move || row.kind.get() == builtin::CREATE_VM
                                                            fallback=move || view! { <input class="step-name" type="text" placeholder="start_service_…" bind:value=row.name/> }>
                                                            <label class="muted">"If cancelled or failed, its machines are "
                                                                <select class="step-leftover" title="What becomes of the machines of a create_vm that does not finish"
                                                                    on:change=move |ev| row.leftover.set(event_target_value(&ev))>
                                                                    {[(LeftoverMachines::Release, "released"), (LeftoverMachines::HandToPool, "handed to the pool")].into_iter().map(|(choice, label)| view! {
                                                                        <option value=choice.as_str() selected=move || row.leftover.get() == choice.as_str()>{label}</option>
                                                                    }).collect_view()}
                                                                </select>
                                                            </label>
                                                        </Show>
                                                    }>
                                                    <select class="step-group" on:change=move |ev| row.group.set(event_target_value(&ev))>
                                                        <option value="" selected=move || row.group.get().is_empty()>"Choose…"</option>
                                                        {move || groups.get().and_then(Result::ok).unwrap_or_default().into_iter().map(|g| {
                                                            let picked = g.id.to_string();
                                                            view! { <option value=g.id.to_string() selected=move || row.group.get() == picked>{g.name.clone()}</option> }
                                                        }).collect_view()}
                                                    </select>
                                                </Show>
                                            </td>
                                            <td><input class="step-retries" type="number" min="0" max="10" bind:value=row.retries/></td>
                                            <td><input class="step-delay" type="number" min="0" max="3600" bind:value=row.delay/></td>
                                            <td><input class="step-timeout" type="number" min="1" placeholder="600" bind:value=row.timeout/></td>
                                            <td><input class="step-ignore" type="checkbox" bind:checked=row.ignore/></td>
                                            <td class="actions">
                                                <button type="button" class="ghost" on:click=move |_| steps.update(|s| if i > 0 { s.swap(i, i - 1) })>"↑"</button>
                                                <button type="button" class="ghost danger" on:click=move |_| steps.update(|s| { s.remove(i); })>"Remove"</button>
                                            </td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        <Show when=move || error.get().is_some_and(|e| e.0.field.as_deref() == Some("steps"))>
                            <p class="field-error" data-field="steps">{move || error.get().map(|e| e.message())}</p>
                        </Show>
                        <button type="button" id="add-step" class="ghost" on:click=move |_| steps.update(|s| s.push(StepRow::new(None)))>"Add step"</button>
                        <div class="buttons">
                            <button type="button" class="ghost cancel" on:click=move |_| editor.set(None)>"Cancel"</button>
                            <button id="task-template-save" type="submit" class="primary">"Save"</button>
                        </div>
                    </form>
                </Modal>
            }
        })}
        <ConfirmDelete noun="task template" target=deleting delete=api::delete_task_template
            on_deleted=Callback::new(move |()| reload.update(|n| *n += 1))/>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_tasks_nodes_read_paused_not_running() {
        let counts = NodeCounts {
            succeeded: 2,
            running: 1,
            pending: 3,
            ..NodeCounts::default()
        };
        assert_eq!(
            counts_text(&counts, TaskState::Running),
            "2 ok · 1 running · 3 waiting"
        );
        assert_eq!(
            counts_text(&counts, TaskState::Paused),
            "2 ok · 1 paused · 3 waiting"
        );
    }
}
