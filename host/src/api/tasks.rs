//! `/api/v1/task-templates` and `/api/v1/tasks`: what expand, shrink and
//! deploy do, and the tasks that do it, with a live event stream per task.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use dcp_api_types::{
    ErrorBody, Page, PageQuery, Task, TaskDetail, TaskEvent, TaskFilter, TaskInput, TaskTemplate,
    TaskTemplateInput,
};
use futures_util::{Stream, stream};
use serde::Deserialize;
use tokio::sync::watch;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, window},
};
use crate::auth::Principal;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template, update_template, delete_template))
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task))
        .routes(routes!(control_task))
        .routes(routes!(task_events))
}

/// List task templates, by name.
#[utoipa::path(
    get, path = "/task-templates", tag = "tasks",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of task templates", body = Page<TaskTemplate>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_templates(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<TaskTemplate>>> {
    let (items, total) = state.engine.templates(window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Create a task template; the manual's rules for its purpose are checked.
#[utoipa::path(
    post, path = "/task-templates", tag = "tasks",
    request_body = TaskTemplateInput,
    responses(
        (status = 201, description = "Created", body = TaskTemplate),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A step or rule is broken; the field says which", body = ErrorBody),
    )
)]
async fn create_template(
    State(state): State<AppState>,
    Json(input): Json<TaskTemplateInput>,
) -> Result<(StatusCode, Json<TaskTemplate>)> {
    Ok((
        StatusCode::CREATED,
        Json(state.engine.create_template(input).await?),
    ))
}

/// Get one task template.
#[utoipa::path(
    get, path = "/task-templates/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task template id")),
    responses(
        (status = 200, description = "The template", body = TaskTemplate),
        (status = 404, description = "No such template", body = ErrorBody),
    )
)]
async fn get_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<TaskTemplate>> {
    Ok(Json(state.engine.template(id).await?))
}

/// Replace a task template. Tasks already made keep the steps they had.
#[utoipa::path(
    put, path = "/task-templates/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task template id")),
    request_body = TaskTemplateInput,
    responses(
        (status = 200, description = "The updated template", body = TaskTemplate),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 422, description = "A rule is broken, also for a pool it is bound to", body = ErrorBody),
    )
)]
async fn update_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<TaskTemplateInput>,
) -> Result<Json<TaskTemplate>> {
    Ok(Json(state.engine.update_template(id, input).await?))
}

/// Delete a task template; refused while a pool or a task uses it.
#[utoipa::path(
    delete, path = "/task-templates/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task template id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "A pool or task uses it", body = ErrorBody),
    )
)]
async fn delete_template(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.engine.delete_template(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List tasks, newest first.
#[utoipa::path(
    get, path = "/tasks", tag = "tasks",
    params(PageQuery, TaskFilter),
    responses(
        (status = 200, description = "One page of tasks", body = Page<Task>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_tasks(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<TaskFilter>,
) -> Result<Json<Page<Task>>> {
    let (items, total) = state.engine.tasks(&filter, window(paging)?).await?;
    Ok(Json(page(items, total, paging)))
}

/// Start a task: expand (count), shrink (addresses), deploy (tag,
/// batch_size) or ad-hoc (template_id, addresses). A pool runs one task at
/// a time: another is refused (409) unless `queue` is set.
#[utoipa::path(
    post, path = "/tasks", tag = "tasks",
    request_body = TaskInput,
    responses(
        (status = 202, description = "Accepted; it runs in the background", body = Task),
        (status = 409, description = "The pool is busy with another task", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_task(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<TaskInput>,
) -> Result<(StatusCode, Json<Task>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(state.engine.create_task(input, &me.user.username).await?),
    ))
}

/// Get a task with every node × step.
#[utoipa::path(
    get, path = "/tasks/{id}", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = TaskDetail),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
async fn get_task(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<TaskDetail>> {
    Ok(Json(state.engine.detail(id).await?))
}

/// What to do with a task.
#[derive(Debug, Deserialize, IntoParams)]
struct Control {
    /// The task.
    id: i64,
    /// `pause`, `resume`, `retry` (the failed nodes) or `cancel`.
    #[param(pattern = "^(pause|resume|retry|cancel)$")]
    action: String,
}

/// Pause (at the next step boundary), resume, retry the failed nodes, or
/// cancel a task. The process driving the task carries it out within a
/// moment; follow the task's events to see it. A cancel stays asked for
/// (and no other command is taken) until the machines of every unfinished
/// `create_vm` are released or handed to the pool, as each step's
/// `compensation` shows; asking to cancel again meanwhile changes nothing.
#[utoipa::path(
    post, path = "/tasks/{id}/{action}", tag = "tasks",
    params(Control),
    responses(
        (status = 202, description = "Asked", body = Task),
        (status = 404, description = "No such task or action", body = ErrorBody),
        (status = 409, description = "Not possible in the task's state", body = ErrorBody),
    )
)]
async fn control_task(
    State(state): State<AppState>,
    Path(Control { id, action }): Path<Control>,
) -> Result<(StatusCode, Json<Task>)> {
    if !matches!(action.as_str(), "pause" | "resume" | "retry" | "cancel") {
        return Err(super::Error::NotFound(format!(
            "no task action {action:?}: pause, resume, retry or cancel"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(state.engine.command(id, &action).await?),
    ))
}

/// How often a stream looks at its task's version for changes another
/// replica made; this process's own changes wake it at once.
const REPLICA_POLL: Duration = Duration::from_secs(1);

/// Follow a task as server-sent events: `snapshot` (the whole task, every
/// node × step) first, then only what changes: `step` for a step on a node,
/// `node` for a node's own fields, `task` for the task's state, command,
/// counts and times. Replacing those parts of the snapshot gives what
/// `GET /tasks/{id}` answers. The stream ends after a `task` event with a
/// final state and no command waiting, or when DCP shuts down. Works on
/// any replica: changes are found through the task's version in the store.
#[utoipa::path(
    get, path = "/tasks/{id}/events", tag = "tasks",
    params(("id" = i64, Path, description = "Task id")),
    responses(
        (status = 200, description = "An event stream (text/event-stream); the event name (snapshot, task, node, step) says which shape the data has", content_type = "text/event-stream", body = TaskEvent),
        (status = 404, description = "No such task", body = ErrorBody),
    )
)]
async fn task_events(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    // Subscribe and read the version before the snapshot, so no change
    // falls between them. A missing task is a 404 now, not an empty stream.
    let changes = state.engine.changes();
    let version = state.engine.version(id).await?;
    let detail = state.engine.detail(id).await?;
    let follow = Follow {
        state,
        id,
        changes,
        version,
        ended: settled(&detail),
        pending: VecDeque::from([TaskEvent::Snapshot(detail.clone())]),
        held: detail,
    };
    Ok(Sse::new(stream::unfold(follow, Follow::next)).keep_alive(KeepAlive::default()))
}

/// Whether a stream can end: the task is final and no command waits (one
/// that ended by a cancel still clears it, a retry reopens it).
fn settled(detail: &TaskDetail) -> bool {
    detail.task.state.is_final() && detail.task.command.is_none()
}

/// A task's event stream: what is queued to send, and the task as the
/// client holds it once everything queued is applied.
struct Follow {
    state: AppState,
    id: i64,
    changes: watch::Receiver<u64>,
    version: i64,
    held: TaskDetail,
    ended: bool,
    pending: VecDeque<TaskEvent>,
}

impl Follow {
    async fn next(mut self) -> Option<(std::result::Result<Event, Infallible>, Self)> {
        loop {
            if self.state.shutdown.is_cancelled() {
                // DCP is stopping: end the stream so the server drains.
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let data = serde_json::to_string(&event).unwrap_or_default();
                return Some((Ok(Event::default().event(event.name()).data(data)), self));
            }
            if self.ended {
                // The task ended (a retry opens a new stream).
                return None;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // The engine is gone: DCP is stopping.
                        return None;
                    }
                }
                () = tokio::time::sleep(REPLICA_POLL) => {}
                () = self.state.shutdown.cancelled() => return None,
            }
            // One small read tells whether anything changed; the task is
            // read whole only when it did.
            let version = self.state.engine.version(self.id).await.ok()?;
            if version == self.version {
                continue;
            }
            let detail = self.state.engine.detail(self.id).await.ok()?;
            self.version = version;
            self.ended = settled(&detail);
            self.pending.extend(TaskEvent::changes(&self.held, &detail));
            self.held = detail;
        }
    }
}
