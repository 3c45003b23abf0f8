//! `/api/v1/executions`: run a command or group on many hosts, follow it
//! live, cancel it, and page through the history; `/api/v1/ssh/host-keys`:
//! the host keys DCP trusts; `/api/v1/ssh/settings`: whether a default key
//! is configured.

use std::{collections::VecDeque, convert::Infallible};

use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use dcp_api_types::{
    ErrorBody, Execution, ExecutionCreated, ExecutionEvent, ExecutionEventsQuery, ExecutionFilter,
    ExecutionHost, ExecutionHostFilter, ExecutionInput, ExecutionSummary, HostKey, HostOutput,
    OutputQuery, OutputStream, Page, PageQuery, SshSettings,
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
        .routes(routes!(list_execution_hosts))
        .routes(routes!(execution_host_output))
        .routes(routes!(cancel_execution))
        .routes(routes!(execution_events))
        .routes(routes!(list_host_keys))
        .routes(routes!(forget_host_key))
        .routes(routes!(ssh_settings))
}

async fn load(state: &AppState, id: i64) -> Result<Execution> {
    Ok(remote::execution_to_api(state.store.execution(id).await?))
}

/// The most output bytes one `output` event carries.
const OUTPUT_EVENT_MAX: u32 = 64 << 10;

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

/// Get an execution: its state, host counts, steps and parameters. Its
/// hosts are paged at `/executions/{id}/hosts`, their output read at
/// `/executions/{id}/hosts/{index}/output`, so the answer stays small
/// however many hosts ran and whatever they printed.
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

/// The `{id}` and `{index}` of a host path.
#[derive(Debug, serde::Deserialize)]
struct HostPath {
    id: i64,
    index: u32,
}

/// List an execution's hosts in target order, optionally only those in a
/// state, with their byte counts but not their output.
#[utoipa::path(
    get, path = "/executions/{id}/hosts", tag = "executions",
    params(("id" = i64, Path, description = "Execution id"), PageQuery, ExecutionHostFilter),
    responses(
        (status = 200, description = "One page of hosts", body = Page<ExecutionHost>),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_execution_hosts(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<ExecutionHostFilter>,
) -> Result<Json<Page<ExecutionHost>>> {
    let window = window(paging)?;
    // An unknown execution is a 404, not an empty page.
    state.store.execution(id).await?;
    let (items, total) = state
        .store
        .execution_host_page(id, filter.state, window)
        .await?;
    Ok(Json(page(
        items.into_iter().map(remote::host_to_api).collect(),
        total,
        paging,
    )))
}

/// Read a host's output from a byte offset: at most `limit` bytes, where
/// the next read starts, and whether the output is complete. Read again
/// from `next_offset` to follow a running host.
#[utoipa::path(
    get, path = "/executions/{id}/hosts/{index}/output", tag = "executions",
    params(
        ("id" = i64, Path, description = "Execution id"),
        ("index" = u32, Path, minimum = 0, maximum = 4_294_967_295.0, description = "The host's 0-based position"),
        OutputQuery,
    ),
    responses(
        (status = 200, description = "A piece of the output", body = HostOutput),
        (status = 404, description = "No such execution or host", body = ErrorBody),
        (status = 422, description = "`offset` past the end or inside a character, or `limit` out of range", body = ErrorBody),
    )
)]
async fn execution_host_output(
    State(state): State<AppState>,
    Path(HostPath { id, index }): Path<HostPath>,
    Query(query): Query<OutputQuery>,
) -> Result<Json<HostOutput>> {
    if !(1..=OutputQuery::MAX_LIMIT).contains(&query.limit) {
        return Err(super::Error::validation(
            "limit",
            format!("must be between 1 and {}", OutputQuery::MAX_LIMIT),
        ));
    }
    let stored = state.store.host_output(id, index, query.stream).await?;
    Ok(Json(
        remote::output_piece(index, query.stream, &stored, query.offset, query.limit)
            .map_err(remote::Error::from)?,
    ))
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

/// Follow an execution as server-sent events: `snapshot` (the execution
/// without its hosts) first, then `host` for each host change and
/// `execution` for state and counts; with `output`, that host's output as
/// `output` events, what it has first and then only what is new. The
/// stream ends after the final `execution` event, or when DCP shuts down.
#[utoipa::path(
    get, path = "/executions/{id}/events", tag = "executions",
    params(("id" = i64, Path, description = "Execution id"), ExecutionEventsQuery),
    responses(
        (status = 200, description = "An event stream (text/event-stream)", content_type = "text/event-stream", body = ExecutionEvent),
        (status = 404, description = "No such execution", body = ErrorBody),
    )
)]
async fn execution_events(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(query): Query<ExecutionEventsQuery>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    // Subscribe before the snapshot, so no change falls between the two.
    let events = state.remote.subscribe(id);
    let snapshot = load(&state, id).await?;
    let output = match query.output {
        Some(index) => {
            state.store.execution_host(id, index).await?;
            Some(Cursor {
                index,
                sent: [0, 0],
            })
        }
        None => None,
    };
    let follow = if snapshot.summary.state.is_final() {
        None
    } else {
        events
    };
    let mut first = Follow {
        state,
        id,
        events: follow,
        output,
        pending: VecDeque::from([ExecutionEvent::Snapshot(snapshot)]),
    };
    first.catch_up().await;
    Ok(Sse::new(stream::unfold(first, Follow::next)).keep_alive(KeepAlive::default()))
}

/// The host whose output a stream follows, and how much of each stream it sent.
struct Cursor {
    index: u32,
    sent: [u64; 2],
}

/// An event stream: what is queued to send, then what the execution's
/// runner announces.
struct Follow {
    state: AppState,
    id: i64,
    events: Option<Receiver<ExecutionEvent>>,
    output: Option<Cursor>,
    pending: VecDeque<ExecutionEvent>,
}

impl Follow {
    async fn next(mut self) -> Option<(std::result::Result<Event, Infallible>, Self)> {
        if self.state.shutdown.is_cancelled() {
            return None;
        }
        if let Some(event) = self.pending.pop_front() {
            return Some((sse(&event), self));
        }
        let events = self.events.as_mut()?;
        let event = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => event,
                // A slow reader missed events: a fresh snapshot replaces
                // them (the client reloads its hosts); output resumes where it was.
                Err(RecvError::Lagged(_)) => {
                    ExecutionEvent::Snapshot(load(&self.state, self.id).await.ok()?)
                }
                Err(RecvError::Closed) => return None,
            },
            () = self.state.shutdown.cancelled() => return None,
        };
        let more_output = match &event {
            ExecutionEvent::Host(host) => {
                self.output.as_ref().is_some_and(|c| c.index == host.index)
            }
            ExecutionEvent::Snapshot(_) => true,
            ExecutionEvent::Execution(summary) => {
                if summary.state.is_final() {
                    self.events = None;
                }
                false
            }
            ExecutionEvent::Output(_) => false,
        };
        let sent = sse(&event);
        if more_output {
            self.catch_up().await;
        }
        Some((sent, self))
    }

    /// Queues what the followed host printed since the last `output` event,
    /// in pieces of at most [`OUTPUT_EVENT_MAX`] bytes.
    async fn catch_up(&mut self) {
        let Some(cursor) = self.output.as_mut() else {
            return;
        };
        for (n, stream) in [OutputStream::Stdout, OutputStream::Stderr]
            .into_iter()
            .enumerate()
        {
            let Ok(stored) = self
                .state
                .store
                .host_output(self.id, cursor.index, stream)
                .await
            else {
                continue;
            };
            while cursor.sent[n] < stored.text.len() as u64 {
                let Ok(piece) = remote::output_piece(
                    cursor.index,
                    stream,
                    &stored,
                    cursor.sent[n],
                    OUTPUT_EVENT_MAX,
                ) else {
                    break;
                };
                cursor.sent[n] = piece.next_offset;
                self.pending.push_back(ExecutionEvent::Output(piece));
            }
        }
    }
}

fn sse(event: &ExecutionEvent) -> std::result::Result<Event, Infallible> {
    let data = match event {
        ExecutionEvent::Snapshot(e) => serde_json::to_string(e),
        ExecutionEvent::Host(h) => serde_json::to_string(h),
        ExecutionEvent::Execution(s) => serde_json::to_string(s),
        ExecutionEvent::Output(o) => serde_json::to_string(o),
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

/// How DCP logs in to servers: whether a default key is configured, so a
/// form can say before trying whether a server given without a key or
/// password can be reached.
#[utoipa::path(
    get, path = "/ssh/settings", tag = "executions",
    responses(
        (status = 200, description = "The SSH settings", body = SshSettings),
    )
)]
async fn ssh_settings(State(state): State<AppState>) -> Json<SshSettings> {
    // Startup fails when the file cannot be read, so a configured path is
    // a loaded key.
    Json(SshSettings {
        default_key: state.config.ssh_key_file.is_some(),
    })
}
