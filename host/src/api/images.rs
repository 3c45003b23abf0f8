//! `/api/v1/registry`: the registry DCP's images live in — its state, the
//! login for `docker push`, repositories, tags and manifests, and deleting
//! a tag.

use axum::{
    Extension,
    extract::State,
    http::{StatusCode, header},
};
use dcp_api_types::{
    Cleanup, DoomedTag, ErrorBody, ImageHistory, ImageLayer, ImagePlatform, ImageRuns, ImageTag,
    ImageTagDeleted, ImageTagDetail, Page, PageQuery, RegistryLogin, RegistryStatus, Repository,
    RepositoryPath, RepositoryPrefixQuery, RetentionInput, RetentionRule, TagPath,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    extract::{Json, Path, Query, page, page_of, window},
    rfc3339,
};
use crate::{
    auth::Principal,
    images::{self, retention::Doomed},
    store::{CleanupRecord, RetentionRecord},
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(registry_status))
        .routes(routes!(registry_login))
        .routes(routes!(list_repositories))
        .routes(routes!(list_tags))
        .routes(routes!(get_tag, delete_tag))
        .routes(routes!(list_retention))
        .routes(routes!(set_retention, delete_retention))
        .routes(routes!(list_cleanups, clean_up))
        .routes(routes!(plan_cleanup))
}

/// A repository named in a path breaks the registry's grammar: a 400
/// naming the parameter, before any call.
fn check_repository(repository: &str) -> Result<()> {
    validate::repository("repository", repository).map_err(|i| Error::InvalidParameter {
        field: i.field.into_owned(),
        message: i.message,
    })
}

fn check_tag(path: &TagPath) -> Result<()> {
    check_repository(&path.repository)?;
    validate::image_tag("tag", &path.tag).map_err(|i| Error::InvalidParameter {
        field: i.field.into_owned(),
        message: i.message,
    })
}

/// The registry: where it is, whether DCP runs it, whether it answers, and
/// how much its storage holds.
#[utoipa::path(
    get, path = "/registry", tag = "images",
    responses(
        (status = 200, description = "The registry", body = RegistryStatus),
        (status = 503, description = "No registry is configured", body = ErrorBody),
    )
)]
async fn registry_status(State(state): State<AppState>) -> Result<Json<RegistryStatus>> {
    let s = state.images.status().await?;
    Ok(Json(RegistryStatus {
        url: s.url,
        host: s.host,
        managed: s.managed,
        username: s.username,
        serving: s.problem.is_none(),
        problem: s.problem,
        storage_bytes: s.storage_bytes,
    }))
}

/// The registry's login for `docker login` (to push base images into
/// `base/`, say). Answered with `Cache-Control: no-store`.
#[utoipa::path(
    get, path = "/registry/login", tag = "images",
    responses(
        (status = 200, description = "The login", body = RegistryLogin),
        (status = 503, description = "No registry is configured", body = ErrorBody),
    )
)]
async fn registry_login(
    State(state): State<AppState>,
) -> Result<([(header::HeaderName, &'static str); 1], Json<RegistryLogin>)> {
    let (server, username, password) = state.images.login()?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        Json(RegistryLogin {
            server,
            username,
            password,
        }),
    ))
}

/// The registry's repositories, by name, with their tag counts.
#[utoipa::path(
    get, path = "/registry/repositories", tag = "images",
    params(PageQuery, RepositoryPrefixQuery),
    responses(
        (status = 200, description = "One page of repositories", body = Page<Repository>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range, or a control character in the prefix", body = ErrorBody),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn list_repositories(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<RepositoryPrefixQuery>,
) -> Result<Json<Page<Repository>>> {
    if let Some(prefix) = &filter.prefix {
        validate::filter("prefix", prefix)?;
    }
    let (items, total) = state
        .images
        .repositories(window(paging)?, filter.prefix.as_deref())
        .await?;
    Ok(Json(page(
        items
            .into_iter()
            .map(|r| Repository {
                name: r.name,
                tags: r.tags,
            })
            .collect(),
        total,
        paging,
    )))
}

/// The tags of a repository, by name, each with its digest, size and
/// build date.
#[utoipa::path(
    get, path = "/registry/repositories/{repository}/tags", tag = "images",
    params(RepositoryPath, PageQuery),
    responses(
        (status = 200, description = "One page of tags", body = Page<ImageTag>),
        (status = 404, description = "No such repository", body = ErrorBody),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn list_tags(
    State(state): State<AppState>,
    Path(path): Path<RepositoryPath>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<ImageTag>>> {
    check_repository(&path.repository)?;
    let (items, total) = state.images.tags(&path.repository, window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(tag_to_api).collect(),
        total,
        paging,
    )))
}

/// One tag: its manifest (layers, or a list's platforms), what the image
/// runs, its build history, and the other tags on the same manifest.
#[utoipa::path(
    get, path = "/registry/repositories/{repository}/tags/{tag}", tag = "images",
    params(TagPath),
    responses(
        (status = 200, description = "The tag", body = ImageTagDetail),
        (status = 404, description = "No such repository or tag", body = ErrorBody),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn get_tag(
    State(state): State<AppState>,
    Path(path): Path<TagPath>,
) -> Result<Json<ImageTagDetail>> {
    check_tag(&path)?;
    let d = state.images.tag(&path.repository, &path.tag).await?;
    let runs = d.config.as_ref().map(|c| {
        let run = c.config.clone().unwrap_or_default();
        ImageRuns {
            architecture: c.architecture.clone(),
            os: c.os.clone(),
            entrypoint: run.entrypoint.unwrap_or_default(),
            cmd: run.cmd.unwrap_or_default(),
            env: run.env.unwrap_or_default(),
            exposed_ports: run
                .exposed_ports
                .map(|ports| ports.into_iter().map(|(port, _)| port).collect())
                .unwrap_or_default(),
            working_dir: run.working_dir.filter(|w| !w.is_empty()),
            user: run.user.filter(|u| !u.is_empty()),
            labels: run.labels.unwrap_or_default(),
        }
    });
    let history = d
        .config
        .map(|c| {
            c.history
                .into_iter()
                .map(|h| ImageHistory {
                    created: h.created,
                    created_by: h.created_by,
                    empty_layer: h.empty_layer,
                    comment: h.comment,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(ImageTagDetail {
        repository: d.repository,
        tag: tag_to_api(d.summary),
        pull: d.pull,
        also_tagged: d.also_tagged,
        layers: d
            .layers
            .into_iter()
            .map(|l| ImageLayer {
                digest: l.digest,
                size: l.size,
                media_type: l.media_type,
                created_by: l.created_by,
            })
            .collect(),
        manifests: d
            .manifests
            .into_iter()
            .map(|(digest, platform, size)| ImagePlatform {
                digest,
                platform,
                size,
            })
            .collect(),
        runs,
        history,
    }))
}

/// Delete one tag. Other tags on the same manifest are kept (the registry
/// itself deletes by manifest, which would take them all). The layers'
/// space is freed by the registry's clean-up.
#[utoipa::path(
    delete, path = "/registry/repositories/{repository}/tags/{tag}", tag = "images",
    params(TagPath),
    responses(
        (status = 200, description = "Deleted", body = ImageTagDeleted),
        (status = 404, description = "No such repository or tag", body = ErrorBody),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn delete_tag(
    State(state): State<AppState>,
    Path(path): Path<TagPath>,
) -> Result<Json<ImageTagDeleted>> {
    check_tag(&path)?;
    let d = state.images.delete_tag(&path.repository, &path.tag).await?;
    tracing::info!(repository = %d.repository, tag = %d.tag, digest = %d.digest, "image tag deleted");
    Ok(Json(ImageTagDeleted {
        repository: d.repository,
        tag: d.tag,
        digest: d.digest,
        kept: d.kept,
    }))
}

fn tag_to_api(t: images::TagSummary) -> ImageTag {
    ImageTag {
        tag: t.tag,
        digest: t.digest,
        media_type: t.media_type,
        size: t.size,
        created: t.created,
        platforms: t.platforms,
    }
}

fn rule_to_api(r: RetentionRecord) -> RetentionRule {
    RetentionRule {
        repository: r.repository,
        keep_last: r.keep_last,
        keep_days: r.keep_days,
        updated_at: rfc3339(r.updated_at),
        updated_by: r.updated_by,
    }
}

fn doomed_to_api(d: Doomed) -> DoomedTag {
    DoomedTag {
        repository: d.repository,
        tag: d.tag,
        digest: d.digest,
        created: d.created,
    }
}

fn cleanup_to_api(c: CleanupRecord) -> Cleanup {
    Cleanup {
        id: c.id,
        actor: c.actor,
        state: c.state,
        deleted: serde_json::from_str(&c.deleted).unwrap_or_default(),
        blobs_deleted: c.blobs_deleted,
        freed_bytes: c.freed_bytes,
        message: c.message,
        started_at: rfc3339(c.started_at),
        finished_at: c.finished_at.map(rfc3339),
    }
}

/// The retention rules, by repository.
#[utoipa::path(
    get, path = "/registry/retention", tag = "images",
    params(PageQuery),
    responses((status = 200, description = "One page of rules", body = Page<RetentionRule>))
)]
async fn list_retention(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<RetentionRule>>> {
    let (items, total) = state.store.list_retention(window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(rule_to_api).collect(),
        total,
        paging,
    )))
}

/// Set a repository's retention rule (made or replaced). It takes effect
/// at the next clean-up; `GET /registry/clean-ups/plan` shows what that
/// would delete.
#[utoipa::path(
    put, path = "/registry/retention/{repository}", tag = "images",
    params(RepositoryPath),
    request_body = RetentionInput,
    responses(
        (status = 200, description = "The rule", body = RetentionRule),
        (status = 422, description = "Neither keep_last nor keep_days, or one out of range", body = ErrorBody),
    )
)]
async fn set_retention(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(path): Path<RepositoryPath>,
    Json(input): Json<RetentionInput>,
) -> Result<Json<RetentionRule>> {
    check_repository(&path.repository)?;
    let rule = state
        .images
        .set_retention(
            &path.repository,
            input.keep_last,
            input.keep_days,
            &format!("user:{}", me.user.username),
        )
        .await?;
    Ok(Json(rule_to_api(rule)))
}

/// Remove a repository's retention rule: clean-ups leave its tags alone.
#[utoipa::path(
    delete, path = "/registry/retention/{repository}", tag = "images",
    params(RepositoryPath),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "The repository has no rule", body = ErrorBody),
    )
)]
async fn delete_retention(
    State(state): State<AppState>,
    Path(path): Path<RepositoryPath>,
) -> Result<StatusCode> {
    check_repository(&path.repository)?;
    if state.store.delete_retention(&path.repository).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!(
            "repository {} has no retention rule",
            path.repository
        )))
    }
}

/// What a clean-up would delete now: every tag the retention rules do not
/// keep, by repository (oldest last).
#[utoipa::path(
    get, path = "/registry/clean-ups/plan", tag = "images",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of the tags it would delete", body = Page<DoomedTag>),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn plan_cleanup(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<DoomedTag>>> {
    let planned = state.images.plan().await?;
    Ok(Json(page_of(
        planned.into_iter().map(doomed_to_api).collect(),
        paging,
    )?))
}

/// The clean-ups, newest first.
#[utoipa::path(
    get, path = "/registry/clean-ups", tag = "images",
    params(PageQuery),
    responses((status = 200, description = "One page of clean-ups", body = Page<Cleanup>))
)]
async fn list_cleanups(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Cleanup>>> {
    let (items, total) = state.store.list_cleanups(window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(cleanup_to_api).collect(),
        total,
        paging,
    )))
}

/// Clean up now: delete the tags the retention rules do not keep, then
/// (DCP's own registry) collect the garbage, serving pulls but refusing
/// pushes meanwhile. Answers when done, with what it deleted and freed; a
/// clean-up that failed part-way is recorded as `failed` with its reason.
#[utoipa::path(
    post, path = "/registry/clean-ups", tag = "images",
    responses(
        (status = 201, description = "Done (see `state`)", body = Cleanup),
        (status = 409, description = "A clean-up is running", body = ErrorBody),
        (status = 502, description = "The registry failed or refused, in its words", body = ErrorBody),
        (status = 503, description = "No registry is configured, or it is not serving", body = ErrorBody),
    )
)]
async fn clean_up(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
) -> Result<(StatusCode, Json<Cleanup>)> {
    let done = state
        .images
        .clean_up(&format!("user:{}", me.user.username))
        .await?;
    Ok((StatusCode::CREATED, Json(cleanup_to_api(done))))
}
