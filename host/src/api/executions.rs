//! `/api/v1/executions`: run a command or group on many hosts, follow it
//! live, cancel it, and page through the history; `/api/v1/ssh/host-keys`:
//! the host keys DCP trusts.

use std::convert::Infallible;

use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use dcp_api_types::{
    ErrorBody, Execution, ExecutionCreated, ExecutionEvent, ExecutionFilter, ExecutionInput,
    ExecutionSummary, HostKey, Page, PageQuery,
};
use futures_util::{Stream, stream};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{auth::Principal, remote};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_executions, start_execution))
        .routes(routes!(get_execution))
        .routes(routes!(cancel_execution))
        .routes(routes!(execution_events))
        .routes(routes!(list_host_keys))
        .routes(routes!(forget_host_key))
}

async fn load(state: &AppState, id: i64) -> Result<Execution> {
    let execution = state.store.execution(id).await?;
    let hosts = state.store.execution_hosts(id).await?;
    Ok(remote::execution_to_api(execution, hosts))
}

/// List executions, newest first.
#[utoipa::path(
    get, path = "/executions", tag = "executions",
    params(PageQuery, ExecutionFilter),
    responses(
        (status = 200, description = "One page of executions", body = Page<ExecutionSummary>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_executions(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<ExecutionFilter>,
) -> Result<Json<Page<ExecutionSummary>>> {
    let (items, total) = state
        .store
        .list_executions(filter.state, window(paging)?)
        .await?;
    Ok(Json(page(
        items.into_iter().map(remote::summary_to_api).collect(),
        total,
        paging,
    )))
}

/// Run a command, a group or an inline command on hosts. Answers at once;
/// follow the execution with `GET /executions/{id}` or its event stream.
#[utoipa::path(
    post, path = "/executions", tag = "executions",
    request_body = ExecutionInput,
    responses(
        (status = 201, description = "Started", body = ExecutionCreated),
        (status = 422, description = "A field breaks a rule (the field says which)", body = ErrorBody),
        (status = 503, description = "The plugin that runs the command is not active", body = ErrorBody),
    )
)]
async fn start_execution(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<ExecutionInput>,
) -> Result<(StatusCode, Json<ExecutionCreated>)> {
    let id = state.remote.start(input, &me.user.username).await?;
    Ok((StatusCode::CREATED, Json(ExecutionCreated { id })))
}

/// Get an execution with every host's state and output.
#[utoipa::path(
    get, path = "/executions/{id}", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody),
    )
)]
async fn get_execution(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Execution>> {
    Ok(Json(load(&state, id).await?))
}

/// Cancel a running execution: hosts not done end `cancelled`, their
/// remote processes are killed.
#[utoipa::path(
    post, path = "/executions/{id}/cancel", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses(
        (status = 202, description = "Cancelling; the execution as it stands", body = Execution),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "It already ended", body = ErrorBody),
    )
)]
async fn cancel_execution(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<(StatusCode, Json<Execution>)> {
    state.remote.cancel(id).await?;
    Ok((StatusCode::ACCEPTED, Json(load(&state, id).await?)))
}

/// Follow an execution as server-sent events: `snapshot` (the whole
/// execution) first, then `host` for each host change and `execution` for
/// state and counts; the stream ends after the final `execution` event.
#[utoipa::path(
    get, path = "/executions/{id}/events", tag = "executions",
    params(("id" = i64, Path, description = "Execution id")),
    responses(
        (status = 200, description = "An event stream (text/event-stream)", content_type = "text/event-stream", body = ExecutionEvent),
        (status = 404, description = "No such execution", body = ErrorBody),
    )
)]
async fn execution_events(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    // Subscribe before the snapshot, so no change falls between the two.
    let events = state.remote.subscribe(id);
    let snapshot = load(&state, id).await?;
    let follow = if snapshot.summary.state.is_final() {
        None
    } else {
        events
    };
    let first = stream::once(async move { sse(&ExecutionEvent::Snapshot(snapshot)) });
    let rest = stream::unfold(
        Follow {
            state,
            id,
            events: follow,
        },
        Follow::next,
    );
    Ok(Sse::new(futures_util::StreamExt::chain(first, rest)).keep_alive(KeepAlive::default()))
}

/// The live part of an event stream.
struct Follow {
    state: AppState,
    id: i64,
    events: Option<Receiver<ExecutionEvent>>,
}

impl Follow {
    async fn next(mut self) -> Option<(std::result::Result<Event, Infallible>, Self)> {
        let events = self.events.as_mut()?;
        let event = match events.recv().await {
            Ok(event) => event,
            // A slow reader missed events: a fresh snapshot replaces them.
            Err(RecvError::Lagged(_)) => {
                ExecutionEvent::Snapshot(load(&self.state, self.id).await.ok()?)
            }
            Err(RecvError::Closed) => return None,
        };
        if let ExecutionEvent::Execution(summary) = &event
            && summary.state.is_final()
        {
            self.events = None;
        }
        Some((sse(&event), self))
    }
}

fn sse(event: &ExecutionEvent) -> std::result::Result<Event, Infallible> {
    let data = match event {
        ExecutionEvent::Snapshot(e) => serde_json::to_string(e),
        ExecutionEvent::Host(h) => serde_json::to_string(h),
        ExecutionEvent::Execution(s) => serde_json::to_string(s),
    };
    Ok(Event::default()
        .event(event.name())
        .data(data.unwrap_or_default()))
}

/// The SSH host keys DCP trusts, by host.
#[utoipa::path(
    get, path = "/ssh/host-keys", tag = "executions",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of host keys", body = Page<HostKey>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_host_keys(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<HostKey>>> {
    let (items, total) = state.store.list_host_keys(window(paging)?).await?;
    Ok(Json(page(
        items
            .into_iter()
            .map(|k| HostKey {
                host: k.host,
                algorithm: k.algorithm,
                fingerprint: k.fingerprint,
                first_seen_at: rfc3339(k.first_seen_at),
                last_seen_at: rfc3339(k.last_seen_at),
            })
            .collect(),
        total,
        paging,
    )))
}

/// The `{host}` of a host-key path.
#[derive(Debug, serde::Deserialize)]
struct HostParam {
    host: String,
}

/// Forget a host's key (after the host was rebuilt): the next connection
/// trusts the key it presents.
#[utoipa::path(
    delete, path = "/ssh/host-keys/{host}", tag = "executions",
    params(("host" = String, Path, description = "`address:port`")),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 404, description = "No key for this host", body = ErrorBody),
    )
)]
async fn forget_host_key(
    State(state): State<AppState>,
    Path(HostParam { host }): Path<HostParam>,
) -> Result<StatusCode> {
    state.store.forget_host_key(&host).await?;
    Ok(StatusCode::NO_CONTENT)
}
