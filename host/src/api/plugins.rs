//! `/api/v1/plugins`: upload, approve, activate, roll back, delete and try
//! plugin versions.

use axum::{
    Extension,
    extract::{DefaultBodyLimit, Multipart, State, multipart::MultipartRejection},
    http::StatusCode,
};
use dcp_api_types::{
    CapabilityDiff, ErrorBody, Page, PageQuery, PluginCapabilities, PluginDescription,
    PluginLimits, PluginTestRequest, PluginTestResult, PluginUpload, PluginVersion, PluginWorlds,
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{
    auth::Principal,
    plugins::{
        Capabilities, World,
        registry::{self, MAX_COMPONENT_BYTES},
    },
    store::PluginVersionRecord,
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    // Components are bigger than the API's usual bodies; only the upload
    // takes them, so only it gets the larger limit.
    let (schemas, paths, upload) = routes!(upload_plugin);
    let upload = upload.layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES + (1 << 20)));
    OpenApiRouter::new()
        .routes(routes!(list_plugins))
        .routes((schemas, paths, upload))
        .routes(routes!(plugin_worlds))
        .routes(routes!(get_plugin, delete_plugin))
        .routes(routes!(approve_plugin))
        .routes(routes!(activate_plugin))
        .routes(routes!(rollback_plugin))
        .routes(routes!(test_plugin))
        .routes(routes!(describe_plugin))
        .routes(routes!(set_plugin_limits))
}

fn capabilities(c: &Capabilities) -> PluginCapabilities {
    PluginCapabilities {
        http: c.http.iter().cloned().collect(),
        secrets: c.secrets.iter().cloned().collect(),
        ssh: c.ssh,
    }
}

async fn to_api(state: &AppState, r: PluginVersionRecord) -> Result<PluginVersion> {
    let rollback_to = if r.status.as_str() == "active" {
        state
            .store
            .previous_plugin_version(&r.name)
            .await?
            .map(|previous| previous.version)
    } else {
        None
    };
    let stats = state
        .plugins
        .compiled(r.id)
        .map(|p| p.stats())
        .unwrap_or_default();
    Ok(PluginVersion {
        rollback_to,
        requested: capabilities(&registry::requested(&r)),
        granted: r
            .granted
            .is_some()
            .then(|| capabilities(&registry::granted(&r))),
        limits: registry::limits(&r).to_api(),
        limit_overrides: registry::limit_overrides(&r),
        id: r.id,
        name: r.name,
        version: r.version,
        world: r.world,
        description: r.description,
        digest: r.digest,
        size_bytes: r.size_bytes,
        status: r.status.as_str().to_owned(),
        builtin: r.builtin,
        last_error: r.last_error,
        created_at: rfc3339(r.created_at),
        activated_at: r.activated_at.map(rfc3339),
        calls: stats.calls,
        errors: stats.errors,
        latency_p50_ms: stats.p50_ms,
        latency_p99_ms: stats.p99_ms,
    })
}

/// Filters for `GET /api/v1/plugins`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(default)]
struct PluginFilter {
    /// Only versions of this plugin.
    name: Option<String>,
}

/// List plugin versions, by name, newest version first.
#[utoipa::path(
    get, path = "/plugins", tag = "plugins",
    params(PageQuery, PluginFilter),
    responses(
        (status = 200, description = "One page of plugin versions", body = Page<PluginVersion>),
        (status = 422, description = "Paging out of range, or a control character in the name filter", body = ErrorBody),
    )
)]
async fn list_plugins(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<PluginFilter>,
) -> Result<Json<Page<PluginVersion>>> {
    if let Some(name) = &filter.name {
        validate::filter("name", name)?;
    }
    let name = filter.name.filter(|n| !n.is_empty());
    let (items, total) = state
        .store
        .list_plugin_versions(name.as_deref(), window(paging)?)
        .await?;
    let mut versions = Vec::with_capacity(items.len());
    for r in items {
        versions.push(to_api(&state, r).await?);
    }
    let items = versions;
    Ok(Json(page(items, total, paging)))
}

/// The worlds a plugin can target, and their contract version.
#[utoipa::path(
    get, path = "/plugins/worlds", tag = "plugins",
    responses((status = 200, description = "Supported worlds", body = PluginWorlds))
)]
async fn plugin_worlds() -> Json<PluginWorlds> {
    Json(PluginWorlds {
        package: World::PACKAGE.to_owned(),
        worlds: World::ALL.map(|w| w.name().to_owned()).to_vec(),
    })
}

/// Upload a plugin version: multipart with a `component` part (the `.wasm`)
/// and a `manifest` part (`plugin.toml`). It is checked, stored by digest and
/// recorded as `pending` until its capabilities are approved. Uploading the
/// same component again answers 200 with the existing version.
#[utoipa::path(
    post, path = "/plugins", tag = "plugins",
    request_body(content_type = "multipart/form-data", description = "parts `component` (.wasm) and `manifest` (plugin.toml)"),
    responses(
        (status = 201, description = "Recorded as pending", body = PluginUpload),
        (status = 200, description = "This component was uploaded before", body = PluginUpload),
        (status = 409, description = "That version exists with other content", body = ErrorBody),
        (status = 413, description = "The component is too large", body = ErrorBody),
        (status = 422, description = "Not a component of a supported world, or a bad manifest", body = ErrorBody),
    )
)]
async fn upload_plugin(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<PluginUpload>)> {
    let mut multipart = multipart.map_err(|_| Error::UnsupportedMediaType)?;
    let (mut component, mut manifest) = (None, None);
    while let Some(field) = multipart.next_field().await? {
        match field.name() {
            Some("component") => component = Some(field.bytes().await?.to_vec()),
            Some("manifest") => manifest = Some(field.text().await?),
            _ => {}
        }
    }
    let component =
        component.ok_or_else(|| Error::validation("component", "is required (the .wasm file)"))?;
    let manifest =
        manifest.ok_or_else(|| Error::validation("manifest", "is required (plugin.toml)"))?;
    let upload = state.plugins.upload(&manifest, component, false).await?;
    tracing::info!(user = %me.user.username, plugin = %upload.record.name, version = %upload.record.version, "plugin upload");
    let status = if upload.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PluginUpload {
            capability_diff: CapabilityDiff {
                added: upload.diff.added,
                removed: upload.diff.removed,
            },
            created: upload.created,
            plugin: to_api(&state, upload.record).await?,
        }),
    ))
}

/// One plugin version.
#[utoipa::path(
    get, path = "/plugins/{id}", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    responses(
        (status = 200, description = "The version", body = PluginVersion),
        (status = 404, description = "No such version", body = ErrorBody),
    )
)]
async fn get_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<PluginVersion>> {
    let record = state.store.plugin_version(id).await?;
    Ok(Json(to_api(&state, record).await?))
}

/// Grant a version the capabilities its manifest asks for.
#[utoipa::path(
    post, path = "/plugins/{id}/approve", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    responses(
        (status = 200, description = "Approved", body = PluginVersion),
        (status = 404, description = "No such version", body = ErrorBody),
    )
)]
async fn approve_plugin(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<PluginVersion>> {
    let record = state.plugins.approve(id).await?;
    tracing::info!(user = %me.user.username, plugin = %record.name, version = %record.version, "plugin approved");
    Ok(Json(to_api(&state, record).await?))
}

/// Make an approved version the one calls get. Calls in flight finish on
/// the version they started with.
#[utoipa::path(
    post, path = "/plugins/{id}/activate", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    responses(
        (status = 200, description = "Active", body = PluginVersion),
        (status = 409, description = "Not approved yet", body = ErrorBody),
    )
)]
async fn activate_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<PluginVersion>> {
    let record = state.plugins.activate(id).await?;
    Ok(Json(to_api(&state, record).await?))
}

/// Re-activate the version of this plugin that was active before the current one.
#[utoipa::path(
    post, path = "/plugins/{id}/rollback", tag = "plugins",
    params(("id" = i64, Path, description = "Any version id of the plugin")),
    responses(
        (status = 200, description = "The version now active", body = PluginVersion),
        (status = 409, description = "No earlier active version", body = ErrorBody),
    )
)]
async fn rollback_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<PluginVersion>> {
    let record = state.plugins.rollback(id).await?;
    Ok(Json(to_api(&state, record).await?))
}

/// Delete a version; refused while it is active or built in.
#[utoipa::path(
    delete, path = "/plugins/{id}", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "Active or built in", body = ErrorBody),
    )
)]
async fn delete_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.plugins.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Override a version's per-call limits; unset fields use the defaults
/// (an empty body restores them all).
#[utoipa::path(
    put, path = "/plugins/{id}/limits", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    request_body = PluginLimits,
    responses(
        (status = 200, description = "The version with its limits", body = PluginVersion),
        (status = 422, description = "A limit out of range", body = ErrorBody),
    )
)]
async fn set_plugin_limits(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(overrides): Json<PluginLimits>,
) -> Result<Json<PluginVersion>> {
    let record = state.plugins.set_limits(id, &overrides).await?;
    Ok(Json(to_api(&state, record).await?))
}

/// What an approved version says about itself — its configuration's JSON
/// Schema above all, which the account form renders. Makes no outside
/// call and is not counted among the plugin's calls' errors.
#[utoipa::path(
    get, path = "/plugins/{id}/description", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    responses(
        (status = 200, description = "Its name, version, description and configuration schema", body = PluginDescription),
        (status = 409, description = "Not approved yet", body = ErrorBody),
        (status = 422, description = "The plugin failed to describe itself", body = ErrorBody),
    )
)]
async fn describe_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<PluginDescription>> {
    let record = state.store.plugin_version(id).await?;
    let info = state.plugins.describe(&record).await?;
    Ok(Json(PluginDescription {
        name: info.name,
        version: info.version,
        description: info.description,
        config_schema: serde_json::from_str(&info.config_schema).unwrap_or(serde_json::Value::Null),
    }))
}

/// Try an approved version with a configuration: describe it, validate the
/// configuration, and make one harmless call (list regions, list modules).
#[utoipa::path(
    post, path = "/plugins/{id}/test", tag = "plugins",
    params(("id" = i64, Path, description = "Plugin version id")),
    request_body = PluginTestRequest,
    responses(
        (status = 200, description = "What the plugin answered", body = PluginTestResult),
        (status = 409, description = "Not approved yet", body = ErrorBody),
        (status = 422, description = "`config` is not an object, or the plugin failed to describe itself", body = ErrorBody),
    )
)]
async fn test_plugin(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(request): Json<PluginTestRequest>,
) -> Result<Json<PluginTestResult>> {
    // The document promises an object; a plugin handed `[]` or `5` would
    // only refuse it later, less clearly.
    if !request.config.is_object() {
        return Err(Error::validation("config", "must be a JSON object"));
    }
    let record = state.store.plugin_version(id).await?;
    let probe = state
        .plugins
        .probe(&record, request.config.to_string())
        .await?;
    let info = probe.info;
    let (sample, sample_error) = match probe.sample {
        Ok(sample) => (sample, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(Json(PluginTestResult {
        name: info.name,
        version: info.version,
        description: info.description,
        config_schema: serde_json::from_str(&info.config_schema).unwrap_or(serde_json::Value::Null),
        config_error: probe.config_error,
        sample,
        sample_error,
    }))
}
