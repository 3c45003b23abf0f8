//! `/api/v1/image-projects` and `/api/v1/image-builds`: how images are
//! made, their builds, each build's log (live as server-sent events), and
//! cancelling one.

use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    time::Duration,
};

use axum::{
    Extension,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::sse::{Event, KeepAlive, Sse},
};
use dcp_api_types::{
    BuildEvent, BuildLog, BuildLogQuery, BuildState, DockerfileSource, ErrorBody, GitSource,
    ImageBuild, ImageBuildInput, ImageProject, ImageProjectInput, Media, Page, PageQuery,
    RenderInput, RenderedDockerfile,
};
use futures_util::{Stream, stream};
use tokio::sync::watch;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    discovery::idempotency_key,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{
    auth::Principal,
    images::{
        self, dockerfile,
        projects::{self, Project, Source},
    },
    store::BuildRecord,
};

/// How often a follower looks at a build another replica runs.
const REPLICA_POLL: Duration = Duration::from_secs(1);
/// The most log bytes one `log` event carries.
const LOG_EVENT_MAX: usize = 64 << 10;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_projects, create_project))
        .routes(routes!(render_dockerfile))
        .routes(routes!(get_project, update_project, delete_project))
        .routes(routes!(list_builds, start_build))
        .routes(routes!(get_build))
        .routes(routes!(build_log))
        .routes(routes!(build_events))
        .routes(routes!(cancel_build))
}

fn actor(me: &Principal) -> String {
    format!("user:{}", me.user.username)
}

fn state_of(stored: &str) -> BuildState {
    match stored {
        "queued" => BuildState::Queued,
        "building" => BuildState::Building,
        "pushing" => BuildState::Pushing,
        "succeeded" => BuildState::Succeeded,
        "cancelled" => BuildState::Cancelled,
        "interrupted" => BuildState::Interrupted,
        _ => BuildState::Failed,
    }
}

fn build_to_api(state: &AppState, b: BuildRecord) -> ImageBuild {
    let image = match state.images.login() {
        Ok((host, _, _)) => format!("{host}/{}:{}", b.repository, b.tag),
        Err(_) => format!("{}:{}", b.repository, b.tag),
    };
    let duration_ms = match (b.started_at, b.finished_at) {
        (Some(start), Some(end)) => u64::try_from((end - start).whole_milliseconds()).ok(),
        _ => None,
    };
    ImageBuild {
        id: b.id,
        project_id: b.project_id,
        repository: b.repository,
        tag: b.tag,
        image,
        state: state_of(&b.state),
        requested_by: b.requested_by,
        source_revision: b.source_revision,
        media_revision: b.media_revision,
        digest: b.digest,
        size: b.size,
        message: b.message,
        no_cache: b.no_cache,
        build_args: serde_json::from_str(&b.build_args).unwrap_or_default(),
        log_bytes: b.log_bytes,
        created_at: rfc3339(b.created_at),
        started_at: b.started_at.map(rfc3339),
        finished_at: b.finished_at.map(rfc3339),
        duration_ms,
    }
}

fn project_to_api(state: &AppState, p: Project, last: Option<BuildRecord>) -> ImageProject {
    let rendered = p.rendered();
    let password_set = p.record.source_secret_sealed.is_some();
    let dockerfile = match p.source {
        Source::Text { dockerfile } => DockerfileSource::Text { dockerfile },
        Source::Git {
            url,
            git_ref,
            path,
            username,
        } => DockerfileSource::Git {
            repository: GitSource {
                url,
                git_ref,
                username,
                password_set,
            },
            path,
        },
        Source::Form { instructions } => DockerfileSource::Form { instructions },
    };
    let media_password = p.record.media_secret_sealed.is_some();
    ImageProject {
        id: p.record.id,
        repository: p.record.repository,
        description: p.record.description,
        dockerfile,
        rendered,
        media: p.media.map(|m| Media {
            kind: m.kind,
            url: m.url,
            revision: m.revision,
            subdirectory: m.subdirectory,
            target: m.target,
            username: m.username,
            password_set: media_password,
        }),
        build_args: p.build_args,
        created_by: p.record.created_by,
        created_at: rfc3339(p.record.created_at),
        updated_at: rfc3339(p.record.updated_at),
        last_build: last.map(|b| build_to_api(state, b)),
    }
}

async fn load_project(state: &AppState, id: i64) -> Result<Project> {
    Ok(Project::read(state.store.project(id).await?)?)
}

async fn project_with_last(state: &AppState, project: Project) -> Result<ImageProject> {
    let last = state.store.latest_builds(&[project.record.id]).await?.pop();
    Ok(project_to_api(state, project, last))
}

/// The image projects, by repository, each with its newest build.
#[utoipa::path(
    get, path = "/image-projects", tag = "images",
    params(PageQuery),
    responses((status = 200, description = "One page of projects", body = Page<ImageProject>))
)]
async fn list_projects(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<ImageProject>>> {
    let (records, total) = state.store.list_projects(window(paging)?).await?;
    let ids: Vec<i64> = records.iter().map(|r| r.id).collect();
    let mut last: BTreeMap<i64, BuildRecord> = state
        .store
        .latest_builds(&ids)
        .await?
        .into_iter()
        .map(|b| (b.project_id, b))
        .collect();
    let items = records
        .into_iter()
        .map(|r| {
            let id = r.id;
            Ok(project_to_api(&state, Project::read(r)?, last.remove(&id)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(page(items, total, paging)))
}

/// Creates an image project: the repository its images go to and how they
/// are made. Passwords given are sealed and never answered.
#[utoipa::path(
    post, path = "/image-projects", tag = "images",
    request_body = ImageProjectInput,
    responses(
        (status = 201, description = "Created", body = ImageProject),
        (status = 409, description = "A project already has this repository", body = ErrorBody),
        (status = 422, description = "A field breaks a rule (named)", body = ErrorBody),
    )
)]
async fn create_project(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<ImageProjectInput>,
) -> Result<(StatusCode, Json<ImageProject>)> {
    let change = projects::change(&input, None, &state.vault)?;
    let record = state.store.create_project(&change, &actor(&me)).await?;
    let project = Project::read(record)?;
    Ok((
        StatusCode::CREATED,
        Json(project_to_api(&state, project, None)),
    ))
}

/// Renders an instruction form to its Dockerfile without saving anything
/// (what the form shows as it is edited).
#[utoipa::path(
    post, path = "/image-projects/dockerfile", tag = "images",
    request_body = RenderInput,
    responses(
        (status = 200, description = "The Dockerfile", body = RenderedDockerfile),
        (status = 422, description = "An instruction breaks a rule (named, e.g. instructions[2].command)", body = ErrorBody),
    )
)]
async fn render_dockerfile(Json(input): Json<RenderInput>) -> Result<Json<RenderedDockerfile>> {
    let text = dockerfile::render(&input.instructions).map_err(images::Error::from)?;
    Ok(Json(RenderedDockerfile { dockerfile: text }))
}

/// One image project.
#[utoipa::path(
    get, path = "/image-projects/{id}", tag = "images",
    params(("id" = i64, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project", body = ImageProject),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
async fn get_project(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<ImageProject>> {
    let project = load_project(&state, id).await?;
    Ok(Json(project_with_last(&state, project).await?))
}

/// Replaces an image project's settings; builds already queued keep the
/// settings they were asked with. An omitted password keeps the stored
/// one, `""` removes it.
#[utoipa::path(
    put, path = "/image-projects/{id}", tag = "images",
    params(("id" = i64, Path, description = "Project id")),
    request_body = ImageProjectInput,
    responses(
        (status = 200, description = "Changed", body = ImageProject),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 409, description = "Another project has this repository", body = ErrorBody),
        (status = 422, description = "A field breaks a rule (named)", body = ErrorBody),
    )
)]
async fn update_project(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<ImageProjectInput>,
) -> Result<Json<ImageProject>> {
    let stored = state.store.project(id).await?;
    let change = projects::change(&input, Some(&stored), &state.vault)?;
    let project = Project::read(state.store.update_project(id, &change).await?)?;
    Ok(Json(project_with_last(&state, project).await?))
}

/// Deletes an image project and its build history (its images stay in
/// the registry); refused while one of its builds runs.
#[utoipa::path(
    delete, path = "/image-projects/{id}", tag = "images",
    params(("id" = i64, Path, description = "Project id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 409, description = "A build of it has not ended (named)", body = ErrorBody),
    )
)]
async fn delete_project(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_project(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A project's builds, newest first.
#[utoipa::path(
    get, path = "/image-projects/{id}/builds", tag = "images",
    params(("id" = i64, Path, description = "Project id"), PageQuery),
    responses(
        (status = 200, description = "One page of builds", body = Page<ImageBuild>),
        (status = 404, description = "No such project", body = ErrorBody),
    )
)]
async fn list_builds(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<ImageBuild>>> {
    state.store.project(id).await?;
    let (items, total) = state.store.list_builds(id, window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(|b| build_to_api(&state, b)).collect(),
        total,
        paging,
    )))
}

/// Builds the project's image with a tag and pushes it to the registry:
/// queued now, run when a builder is free; follow it at
/// `/image-builds/{id}/events`. With an `Idempotency-Key`, a retry answers
/// the build the first request made (200) instead of another.
#[utoipa::path(
    post, path = "/image-projects/{id}/builds", tag = "images",
    params(
        ("id" = i64, Path, description = "Project id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry start one build (1–128 printable characters)"),
    ),
    request_body = ImageBuildInput,
    responses(
        (status = 202, description = "Queued", body = ImageBuild),
        (status = 200, description = "The build this Idempotency-Key already started", body = ImageBuild),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such project", body = ErrorBody),
        (status = 422, description = "A field breaks a rule (named)", body = ErrorBody),
        (status = 503, description = "No registry is configured, or too many builds wait (Retry-After)", body = ErrorBody),
    )
)]
async fn start_build(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    headers: HeaderMap,
    Json(input): Json<ImageBuildInput>,
) -> Result<(StatusCode, Json<ImageBuild>)> {
    let who = actor(&me);
    let key = idempotency_key(&headers, &who)?;
    let project = load_project(&state, id).await?;
    let (build, created) = state
        .builds
        .queue(
            project,
            &input.tag,
            &input.build_args,
            input.no_cache,
            &who,
            key.as_deref(),
        )
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(build_to_api(&state, build))))
}

/// One build.
#[utoipa::path(
    get, path = "/image-builds/{id}", tag = "images",
    params(("id" = i64, Path, description = "Build id")),
    responses(
        (status = 200, description = "The build", body = ImageBuild),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
async fn get_build(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<ImageBuild>> {
    let build = state.store.build(id).await?;
    Ok(Json(build_to_api(&state, build)))
}

/// A piece of a build's log: up to `limit` bytes from byte `offset`,
/// cut on whole characters.
#[utoipa::path(
    get, path = "/image-builds/{id}/log", tag = "images",
    params(("id" = i64, Path, description = "Build id"), BuildLogQuery),
    responses(
        (status = 200, description = "The piece", body = BuildLog),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 422, description = "A bad limit", body = ErrorBody),
    )
)]
async fn build_log(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(query): Query<BuildLogQuery>,
) -> Result<Json<BuildLog>> {
    if !(1..=1_048_576).contains(&query.limit) {
        return Err(Error::validation("limit", "must be 1–1048576"));
    }
    let log = state.store.build_log(id).await?;
    Ok(Json(piece(&log, query.offset, query.limit as usize)))
}

/// Up to `limit` bytes of `log` from `offset`, moved back to character
/// boundaries.
fn piece(log: &str, offset: u64, limit: usize) -> BuildLog {
    let total = log.len();
    let mut start = usize::try_from(offset).unwrap_or(usize::MAX).min(total);
    while !log.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = start.saturating_add(limit).min(total);
    while !log.is_char_boundary(end) {
        end -= 1;
    }
    BuildLog {
        offset: start as u64,
        text: log[start..end].to_owned(),
        total: total as u64,
    }
}

/// Follow a build as server-sent events: `build` first and on each change
/// of state, and its log as `log` pieces — from the start, then each new
/// piece. The stream ends after the build's final `build` event.
#[utoipa::path(
    get, path = "/image-builds/{id}/events", tag = "images",
    params(("id" = i64, Path, description = "Build id")),
    responses(
        (status = 200, description = "An event stream (text/event-stream); the event name (build, log) says which shape the data has", content_type = "text/event-stream", body = BuildEvent),
        (status = 404, description = "No such build", body = ErrorBody),
    )
)]
async fn build_events(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    // Watch before the first read, so no change falls between the two.
    let changes = state.builds.watch(id);
    state.store.build(id).await?;
    let follow = Follow {
        state,
        id,
        changes,
        sent_log: 0,
        held: None,
        ended: false,
        pending: VecDeque::new(),
    };
    Ok(Sse::new(stream::unfold(follow, Follow::next)).keep_alive(KeepAlive::default()))
}

/// A build's event stream: what is left to send, and what was sent.
struct Follow {
    state: AppState,
    id: i64,
    changes: Option<watch::Receiver<u64>>,
    sent_log: u64,
    held: Option<ImageBuild>,
    ended: bool,
    pending: VecDeque<BuildEvent>,
}

impl Follow {
    async fn next(mut self) -> Option<(std::result::Result<Event, Infallible>, Self)> {
        loop {
            if self.state.shutdown.is_cancelled() {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                let data = serde_json::to_string(&event).unwrap_or_default();
                return Some((Ok(Event::default().event(event.name()).data(data)), self));
            }
            if self.ended {
                return None;
            }
            if self.held.is_some() {
                let changes = self.changes.as_mut();
                let changed = async move {
                    match changes {
                        Some(rx) => rx.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    alive = changed => {
                        if !alive {
                            // The build's runner let go: read its end below,
                            // then poll like a follower on another replica.
                            self.changes = None;
                        }
                    }
                    () = tokio::time::sleep(REPLICA_POLL) => {}
                    () = self.state.shutdown.cancelled() => return None,
                }
            }
            self.catch_up().await?;
        }
    }

    /// Queues the log written since the last look, then the build if it
    /// changed; the log comes first so a final state follows all of it.
    async fn catch_up(&mut self) -> Option<()> {
        let build = self.state.store.build(self.id).await.ok()?;
        if build.log_bytes > self.sent_log {
            let log = self.state.store.build_log(self.id).await.ok()?;
            while self.sent_log < log.len() as u64 {
                let piece = piece(&log, self.sent_log, LOG_EVENT_MAX);
                if piece.text.is_empty() {
                    break;
                }
                self.sent_log = piece.offset + piece.text.len() as u64;
                self.pending.push_back(BuildEvent::Log(piece));
            }
        }
        let now = build_to_api(&self.state, build);
        let changed = self.held.as_ref().is_none_or(|held| {
            held.state != now.state
                || held.source_revision != now.source_revision
                || held.media_revision != now.media_revision
        });
        if changed {
            self.ended = now.state.is_final();
            let event = BuildEvent::Build(Box::new(now.clone()));
            if self.held.is_none() {
                // The first event is the build, before any log.
                self.pending.push_front(event);
            } else {
                self.pending.push_back(event);
            }
        }
        self.held = Some(now);
        Some(())
    }
}

/// Cancels a build that has not ended: a queued one never runs; a running
/// one is stopped (the daemon stops it and removes its container) and
/// pushes nothing.
#[utoipa::path(
    post, path = "/image-builds/{id}/cancel", tag = "images",
    params(("id" = i64, Path, description = "Build id")),
    responses(
        (status = 202, description = "Cancelling; the build as it stands", body = ImageBuild),
        (status = 404, description = "No such build", body = ErrorBody),
        (status = 409, description = "It already ended", body = ErrorBody),
    )
)]
async fn cancel_build(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<(StatusCode, Json<ImageBuild>)> {
    let build = state.builds.cancel(id, &actor(&me)).await?;
    Ok((StatusCode::ACCEPTED, Json(build_to_api(&state, build))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_piece_never_splits_a_character() {
        let log = "aé€b";
        let p = piece(log, 2, 3);
        assert_eq!((p.offset, p.text.as_str(), p.total), (1, "é", 7));
        let p = piece(log, 100, 10);
        assert_eq!((p.offset, p.text.as_str()), (7, ""));
    }
}
