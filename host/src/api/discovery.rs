//! Service discovery: `/lb-groups`, `/lb-units` and their nodes,
//! `/upstreams` and their members, `/bindings`, and the operation log
//! `/discovery-changes`.

use axum::{
    Extension,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{Next, from_fn_with_state},
    response::{IntoResponse as _, Response},
};
use dcp_api_types::{
    AlterationInput, AppKey, AppKeyCreated, AppKeyInput, AppKeyPrivileges, BackendSpec, Binding,
    BindingInput, ChangeFilter, ConfigFileInput, ConfigFileVersion, DiscoveryChange, ErrorBody,
    FileRef, GroupFilter, LbGroup, LbGroupInput, LbNode, LbNodeInput, LbNodeUpdate, LbUnit,
    LbUnitInput, MembersInput, Page, PageQuery, Release, ReleaseInput, ReleaseNode, SyncReport,
    UpstreamInput, UpstreamNodeState, UpstreamView,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    extract::{Id, Json, Path, Query, page, page_of, window},
    rfc3339,
};
use crate::{
    auth::Principal,
    discovery::{self, Discovery, MemberChange, Op, Pushed},
    store::{self, datetime},
    telemetry::RequestIds,
    validate,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_groups, create_group))
        .routes(routes!(get_group, update_group, delete_group))
        .routes(routes!(list_units, create_unit))
        .routes(routes!(get_unit, update_unit, delete_unit))
        .routes(routes!(resync_unit))
        .routes(routes!(add_node))
        .routes(routes!(update_node, delete_node))
        .routes(routes!(resync_node))
        .routes(routes!(list_upstreams, create_upstream))
        .routes(routes!(get_upstream, delete_upstream))
        .routes(routes!(set_backends))
        .routes(routes!(register))
        .routes(routes!(unregister))
        .routes(routes!(list_bindings, create_bindings))
        .routes(routes!(get_binding, update_binding, delete_binding))
        .routes(routes!(list_changes))
        .routes(routes!(get_change))
        .routes(routes!(list_files, add_file))
        .routes(routes!(get_file))
        .routes(routes!(list_releases, publish))
        .routes(routes!(get_release))
        .routes(routes!(rollback_release))
        .routes(routes!(list_app_keys, create_app_key))
        .routes(routes!(set_app_key_privileges, revoke_app_key))
}

/// The routes other systems call with an app key instead of a login.
pub(super) fn app_key_router(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(alter_register))
        .routes(routes!(alter_unregister))
        .routes(routes!(get_alteration))
        .route_layer(from_fn_with_state(state.clone(), require_app_key))
}

/// Refuses a call without a live app key (401) before its body is read.
async fn require_app_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let secret = req
        .headers()
        .get("x-app-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match state.discovery.identify(secret.as_deref()).await {
        Ok(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Err(refusal) => Error::from(refusal).into_response(),
    }
}

impl From<discovery::Error> for Error {
    fn from(e: discovery::Error) -> Self {
        match e {
            discovery::Error::Invalid(invalid) => invalid.into(),
            discovery::Error::Store(e) => e.into(),
            discovery::Error::Conflict { field, message } => Self::Conflict { field, message },
            discovery::Error::Busy(message) => Self::Busy(message),
        }
    }
}

fn group_to_api(g: store::LbGroupRecord) -> LbGroup {
    LbGroup {
        id: g.id,
        name: g.name,
        description: g.description,
        created_at: rfc3339(datetime(g.created_at)),
        updated_at: rfc3339(datetime(g.updated_at)),
    }
}

fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_default()
}

/// What each node of `group_id` serves, against the upstreams' revisions.
async fn node_states(state: &AppState, group_id: i64) -> Result<Vec<UpstreamNodeState>> {
    let upstreams = state.store.upstreams(Some(group_id)).await?;
    let applied = state.store.upstream_states(Some(group_id)).await?;
    let targets = state.store.push_targets(group_id).await?;
    let mut out = Vec::new();
    for u in &upstreams {
        for t in &targets {
            let seen = applied
                .iter()
                .find(|s| s.upstream_id == u.id && s.node_id == t.node_id);
            let revision = seen.map(|s| s.revision).filter(|r| *r >= 0);
            out.push(UpstreamNodeState {
                upstream_id: u.id,
                upstream: u.name.clone(),
                node_id: t.node_id,
                address: t.address.clone(),
                label: discovery::node_label(
                    t.address.as_deref(),
                    t.account_name.as_deref(),
                    &discovery::merged(&t.config, &t.settings),
                ),
                revision,
                in_sync: revision.is_some_and(|r| r >= u.revision),
                error: seen.map(|s| s.error.clone()).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

fn node_to_api(n: store::LbNodeRecord, states: &[UpstreamNodeState]) -> LbNode {
    let drift: Vec<UpstreamNodeState> = states
        .iter()
        .filter(|s| s.node_id == n.id && !s.in_sync)
        .cloned()
        .collect();
    LbNode {
        id: n.id,
        unit_id: n.unit_id,
        machine_id: n.machine_id,
        account_id: n.account_id,
        account_name: n.account_name,
        address: n.address,
        machine_state: n.machine_state,
        settings: json_of(&n.settings),
        in_sync: drift.is_empty(),
        drift,
        created_at: rfc3339(datetime(n.created_at)),
    }
}

async fn unit_to_api(state: &AppState, u: store::LbUnitRecord) -> Result<LbUnit> {
    let states = node_states(state, u.group_id).await?;
    let nodes = state
        .store
        .lb_nodes(u.id)
        .await?
        .into_iter()
        .map(|n| node_to_api(n, &states))
        .collect();
    Ok(LbUnit {
        id: u.id,
        group_id: u.group_id,
        name: u.name,
        description: u.description,
        plugin: u.plugin,
        config: json_of(&u.config),
        publish_group_id: u.publish_group_id,
        nodes,
        created_at: rfc3339(datetime(u.created_at)),
        updated_at: rfc3339(datetime(u.updated_at)),
    })
}

async fn upstream_to_api(state: &AppState, u: store::UpstreamRecord) -> Result<UpstreamView> {
    let nodes = node_states(state, u.group_id)
        .await?
        .into_iter()
        .filter(|s| s.upstream_id == u.id)
        .collect();
    Ok(UpstreamView {
        backends: discovery::members(&u),
        id: u.id,
        group_id: u.group_id,
        name: u.name,
        revision: u.revision,
        nodes,
        created_at: rfc3339(datetime(u.created_at)),
        updated_at: rfc3339(datetime(u.updated_at)),
    })
}

fn binding_to_api(b: store::BindingRecord) -> Binding {
    Binding {
        id: b.id,
        name: b.name,
        description: b.description,
        upstream_id: b.upstream_id,
        port: b.port.and_then(|p| u16::try_from(p).ok()),
        weight: u32::try_from(b.weight).unwrap_or_default(),
        created_at: rfc3339(datetime(b.created_at)),
        updated_at: rfc3339(datetime(b.updated_at)),
    }
}

/// An operation-log entry as the API shows it; `whole` is the membership
/// before and after it, given only when one change is read by id.
pub(super) fn change_to_api(
    c: store::ChangeRecord,
    whole: Option<(Vec<BackendSpec>, Vec<BackendSpec>)>,
) -> DiscoveryChange {
    let moves = crate::discovery::moves(&c);
    let size = |n: usize| u32::try_from(n).ok();
    let (before, after) = whole.unzip();
    DiscoveryChange {
        id: c.id,
        at: rfc3339(datetime(c.at)),
        actor: c.actor,
        action: c.action,
        upstream_id: c.upstream_id,
        target: c.target,
        args: json_of(&c.args),
        before,
        after,
        members_before: moves.as_ref().and_then(|m| size(m.before)),
        members_after: moves.as_ref().and_then(|m| size(m.after)),
        added: moves.as_ref().map(|m| m.added.clone()),
        removed: moves.map(|m| m.removed),
        revision: c.revision,
        state: c.state,
        message: c.message,
        correlation_id: c.correlation_id,
        finished_at: c.finished_at.map(|t| rfc3339(datetime(t))),
    }
}

fn report(p: &Pushed) -> SyncReport {
    SyncReport {
        state: p.state().to_owned(),
        message: p.summary(),
    }
}

/// The caller's `Idempotency-Key`, scoped to the caller.
pub(super) fn idempotency_key(headers: &HeaderMap, scope: &str) -> Result<Option<String>> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default();
    if value.is_empty() || value.len() > 128 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidParameter {
            field: "Idempotency-Key".into(),
            message: "must be 1 to 128 printable ASCII characters".into(),
        });
    }
    Ok(Some(format!("{scope}:{value}")))
}

// ---- groups ----

/// List balancer groups, by name.
#[utoipa::path(
    get, path = "/lb-groups", tag = "discovery",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of groups", body = Page<LbGroup>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_groups(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<LbGroup>>> {
    let (items, total) = state.store.list_lb_groups(window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(group_to_api).collect(),
        total,
        paging,
    )))
}

/// Create a balancer group (a product line).
#[utoipa::path(
    post, path = "/lb-groups", tag = "discovery",
    request_body = LbGroupInput,
    responses(
        (status = 201, description = "Created", body = LbGroup),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_group(
    State(state): State<AppState>,
    Json(input): Json<LbGroupInput>,
) -> Result<(StatusCode, Json<LbGroup>)> {
    let group = state.discovery.create_group(input).await?;
    Ok((StatusCode::CREATED, Json(group_to_api(group))))
}

/// Get one balancer group.
#[utoipa::path(
    get, path = "/lb-groups/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Group id")),
    responses(
        (status = 200, description = "The group", body = LbGroup),
        (status = 404, description = "No such group", body = ErrorBody),
    )
)]
async fn get_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<LbGroup>> {
    Ok(Json(group_to_api(state.store.lb_group(id).await?)))
}

/// Rename or redescribe a balancer group.
#[utoipa::path(
    put, path = "/lb-groups/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Group id")),
    request_body = LbGroupInput,
    responses(
        (status = 200, description = "The updated group", body = LbGroup),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<LbGroupInput>,
) -> Result<Json<LbGroup>> {
    Ok(Json(group_to_api(
        state.discovery.update_group(id, input).await?,
    )))
}

/// Delete a balancer group without units or upstreams.
#[utoipa::path(
    delete, path = "/lb-groups/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Group id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such group", body = ErrorBody),
        (status = 409, description = "Still in use; the message says by what", body = ErrorBody),
    )
)]
async fn delete_group(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_lb_group(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- units and nodes ----

/// List units (of one group) with their nodes and what each serves.
#[utoipa::path(
    get, path = "/lb-units", tag = "discovery",
    params(PageQuery, GroupFilter),
    responses(
        (status = 200, description = "One page of units, by group and name", body = Page<LbUnit>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_units(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<GroupFilter>,
) -> Result<Json<Page<LbUnit>>> {
    let units = page_of(state.store.lb_units(filter.group_id).await?, paging)?;
    let mut items = Vec::new();
    for unit in units.items {
        items.push(unit_to_api(&state, unit).await?);
    }
    Ok(Json(page(items, units.total, paging)))
}

/// Create a unit: the balancer hosts serving one service, run by a
/// load-balancer plugin with these settings (checked by the plugin).
#[utoipa::path(
    post, path = "/lb-units", tag = "discovery",
    request_body = LbUnitInput,
    responses(
        (status = 201, description = "Created", body = LbUnit),
        (status = 409, description = "The group has a unit by that name", body = ErrorBody),
        (status = 422, description = "A field breaks a rule, or the plugin refuses the settings", body = ErrorBody),
    )
)]
async fn create_unit(
    State(state): State<AppState>,
    Json(input): Json<LbUnitInput>,
) -> Result<(StatusCode, Json<LbUnit>)> {
    let unit = state.discovery.create_unit(input).await?;
    Ok((StatusCode::CREATED, Json(unit_to_api(&state, unit).await?)))
}

/// Get one unit with its nodes.
#[utoipa::path(
    get, path = "/lb-units/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    responses(
        (status = 200, description = "The unit", body = LbUnit),
        (status = 404, description = "No such unit", body = ErrorBody),
    )
)]
async fn get_unit(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<LbUnit>> {
    let unit = state.store.lb_unit(id).await?;
    Ok(Json(unit_to_api(&state, unit).await?))
}

/// Replace a unit's fields (it stays in its group).
#[utoipa::path(
    put, path = "/lb-units/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    request_body = LbUnitInput,
    responses(
        (status = 200, description = "The updated unit", body = LbUnit),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 409, description = "The group has a unit by that name", body = ErrorBody),
        (status = 422, description = "A field breaks a rule, or the plugin refuses the settings", body = ErrorBody),
    )
)]
async fn update_unit(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<LbUnitInput>,
) -> Result<Json<LbUnit>> {
    let unit = state.discovery.update_unit(id, input).await?;
    Ok(Json(unit_to_api(&state, unit).await?))
}

/// Delete a unit without nodes.
#[utoipa::path(
    delete, path = "/lb-units/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 409, description = "It still has nodes", body = ErrorBody),
    )
)]
async fn delete_unit(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_lb_unit(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Push every upstream of the unit's group to each of its nodes, in one
/// reload per node: how a node that was down or edited by hand catches up.
#[utoipa::path(
    post, path = "/lb-units/{id}/resync", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    responses(
        (status = 200, description = "What each node did", body = SyncReport),
        (status = 404, description = "No such unit", body = ErrorBody),
    )
)]
async fn resync_unit(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<SyncReport>> {
    let pushed = state
        .discovery
        .resync_unit(id, &format!("user:{}", me.user.username))
        .await?;
    Ok(Json(report(&pushed)))
}

/// Add a balancer node to a unit — a machine (`machine_id`, or `address`
/// of a machine DCP has, with its SSH `port`) or a cloud account's load
/// balancer (`account_id`; which one, the settings say) — then push the
/// group's upstreams to it. Exactly one of `machine_id`, `address` and
/// `account_id` is given.
#[utoipa::path(
    post, path = "/lb-units/{id}/nodes", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    request_body = LbNodeInput,
    responses(
        (status = 201, description = "Added; `drift` shows an upstream it could not take yet", body = LbNode),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 409, description = "The machine is a node of this unit already", body = ErrorBody),
        (status = 422, description = "Not exactly one of machine_id, address and account_id (the field \
            named is one too many, or machine_id when none is given); a port without an address; no such \
            machine or account; an account node in a unit whose plugin is not granted the secret \
            `account`; or the plugin refuses the settings", body = ErrorBody),
    )
)]
async fn add_node(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<LbNodeInput>,
) -> Result<(StatusCode, Json<LbNode>)> {
    let (node, _) = state
        .discovery
        .add_node(id, input, &format!("user:{}", me.user.username))
        .await?;
    let unit = state.store.lb_unit(node.unit_id).await?;
    let states = node_states(&state, unit.group_id).await?;
    let node = state.store.lb_node(node.id).await?;
    Ok((StatusCode::CREATED, Json(node_to_api(node, &states))))
}

/// Replace a node's own plugin settings.
#[utoipa::path(
    put, path = "/lb-nodes/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Node id")),
    request_body = LbNodeUpdate,
    responses(
        (status = 200, description = "The updated node", body = LbNode),
        (status = 404, description = "No such node", body = ErrorBody),
        (status = 422, description = "The plugin refuses the settings", body = ErrorBody),
    )
)]
async fn update_node(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<LbNodeUpdate>,
) -> Result<Json<LbNode>> {
    let node = state.discovery.update_node(id, &input.settings).await?;
    let unit = state.store.lb_unit(node.unit_id).await?;
    let states = node_states(&state, unit.group_id).await?;
    Ok(Json(node_to_api(node, &states)))
}

/// Remove a balancer node (the balancer itself is left as it is).
#[utoipa::path(
    delete, path = "/lb-nodes/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Node id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such node", body = ErrorBody),
    )
)]
async fn delete_node(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_lb_node(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Push every upstream of the node's group to it, in one reload.
#[utoipa::path(
    post, path = "/lb-nodes/{id}/resync", tag = "discovery",
    params(("id" = i64, Path, description = "Node id")),
    responses(
        (status = 200, description = "What the node did", body = SyncReport),
        (status = 404, description = "No such node", body = ErrorBody),
    )
)]
async fn resync_node(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<SyncReport>> {
    let pushed = state
        .discovery
        .resync_node(id, &format!("user:{}", me.user.username))
        .await?;
    Ok(Json(report(&pushed)))
}

// ---- upstreams ----

/// List upstreams (of one group) with what each node serves.
#[utoipa::path(
    get, path = "/upstreams", tag = "discovery",
    params(PageQuery, GroupFilter),
    responses(
        (status = 200, description = "One page of upstreams, by group and name", body = Page<UpstreamView>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_upstreams(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<GroupFilter>,
) -> Result<Json<Page<UpstreamView>>> {
    let upstreams = page_of(state.store.upstreams(filter.group_id).await?, paging)?;
    let mut items = Vec::new();
    for u in upstreams.items {
        items.push(upstream_to_api(&state, u).await?);
    }
    Ok(Json(page(items, upstreams.total, paging)))
}

/// Create an upstream with no members.
#[utoipa::path(
    post, path = "/upstreams", tag = "discovery",
    request_body = UpstreamInput,
    responses(
        (status = 201, description = "Created", body = UpstreamView),
        (status = 409, description = "The group has an upstream by that name", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_upstream(
    State(state): State<AppState>,
    Json(input): Json<UpstreamInput>,
) -> Result<(StatusCode, Json<UpstreamView>)> {
    let u = state
        .discovery
        .create_upstream(input.group_id, &input.name)
        .await?;
    Ok((StatusCode::CREATED, Json(upstream_to_api(&state, u).await?)))
}

/// Get one upstream: its members and what each node serves.
#[utoipa::path(
    get, path = "/upstreams/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Upstream id")),
    responses(
        (status = 200, description = "The upstream", body = UpstreamView),
        (status = 404, description = "No such upstream", body = ErrorBody),
    )
)]
async fn get_upstream(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<UpstreamView>> {
    let u = state.store.upstream(id).await?;
    Ok(Json(upstream_to_api(&state, u).await?))
}

/// Delete an upstream no binding uses (its files stay on the balancers
/// until they are edited).
#[utoipa::path(
    delete, path = "/upstreams/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Upstream id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 409, description = "A binding uses it", body = ErrorBody),
    )
)]
async fn delete_upstream(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_upstream(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn members(
    state: &AppState,
    me: &Principal,
    ids: &RequestIds,
    headers: &HeaderMap,
    id: i64,
    op: Op,
    input: MembersInput,
) -> Result<Json<DiscoveryChange>> {
    // The upstream is the path's: a missing one is 404, not a field error.
    state.store.upstream(id).await?;
    let actor = format!("user:{}", me.user.username);
    let change = state
        .discovery
        .change(MemberChange {
            idempotency_key: idempotency_key(headers, &actor)?,
            actor,
            upstream_id: id,
            op,
            backends: input.backends,
            force: input.force,
            correlation_id: ids.correlation_id.clone(),
        })
        .await?;
    Ok(Json(change_to_api(change, None)))
}

/// Replace an upstream's members, then push them to every node of its
/// group. Removing every member needs `force`. With an `Idempotency-Key`,
/// a retry edits the members once.
#[utoipa::path(
    put, path = "/upstreams/{id}/backends", tag = "discovery",
    params(
        ("id" = i64, Path, description = "Upstream id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once (1–128 printable characters)"),
    ),
    request_body = MembersInput,
    responses(
        (status = 200, description = "The change and what each node did (`state`: succeeded, partial or failed)", body = DiscoveryChange),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 409, description = "It would leave the upstream empty without force", body = ErrorBody),
        (status = 422, description = "A backend breaks a rule", body = ErrorBody),
    )
)]
async fn set_backends(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    Path(Id { id }): Path<Id>,
    Json(input): Json<MembersInput>,
) -> Result<Json<DiscoveryChange>> {
    members(&state, &me, &ids, &headers, id, Op::Set, input).await
}

/// Add backends to an upstream (one already there takes the new weight),
/// then push it to every node of its group.
#[utoipa::path(
    post, path = "/upstreams/{id}/register", tag = "discovery",
    params(
        ("id" = i64, Path, description = "Upstream id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once (1–128 printable characters)"),
    ),
    request_body = MembersInput,
    responses(
        (status = 200, description = "The change and what each node did", body = DiscoveryChange),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 409, description = "The upstream would exceed its size", body = ErrorBody),
        (status = 422, description = "A backend breaks a rule", body = ErrorBody),
    )
)]
async fn register(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    Path(Id { id }): Path<Id>,
    Json(input): Json<MembersInput>,
) -> Result<Json<DiscoveryChange>> {
    members(&state, &me, &ids, &headers, id, Op::Register, input).await
}

/// Remove backends from an upstream (drained: the balancer finishes their
/// requests), then push it. Removing the last needs `force`.
#[utoipa::path(
    post, path = "/upstreams/{id}/unregister", tag = "discovery",
    params(
        ("id" = i64, Path, description = "Upstream id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once (1–128 printable characters)"),
    ),
    request_body = MembersInput,
    responses(
        (status = 200, description = "The change and what each node did", body = DiscoveryChange),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such upstream", body = ErrorBody),
        (status = 409, description = "It would leave the upstream empty without force", body = ErrorBody),
        (status = 422, description = "A backend breaks a rule", body = ErrorBody),
    )
)]
async fn unregister(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    Path(Id { id }): Path<Id>,
    Json(input): Json<MembersInput>,
) -> Result<Json<DiscoveryChange>> {
    members(&state, &me, &ids, &headers, id, Op::Unregister, input).await
}

// ---- bindings ----

/// List discovery bindings, by name.
#[utoipa::path(
    get, path = "/bindings", tag = "discovery",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of bindings", body = Page<Binding>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_bindings(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Binding>>> {
    let items = state.store.bindings().await?;
    Ok(Json(page_of(
        items.into_iter().map(binding_to_api).collect(),
        paging,
    )?))
}

/// Create a discovery binding: a pool naming it registers its nodes in
/// the upstream, on this port, with this weight.
#[utoipa::path(
    post, path = "/bindings", tag = "discovery",
    request_body = BindingInput,
    responses(
        (status = 201, description = "Created", body = Binding),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_bindings(
    State(state): State<AppState>,
    Json(input): Json<BindingInput>,
) -> Result<(StatusCode, Json<Binding>)> {
    let change = state.discovery.binding_change(input).await?;
    let b = state.store.create_binding(&change).await?;
    Ok((StatusCode::CREATED, Json(binding_to_api(b))))
}

/// Get one binding.
#[utoipa::path(
    get, path = "/bindings/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Binding id")),
    responses(
        (status = 200, description = "The binding", body = Binding),
        (status = 404, description = "No such binding", body = ErrorBody),
    )
)]
async fn get_binding(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Binding>> {
    Ok(Json(binding_to_api(state.store.binding(id).await?)))
}

/// Replace a binding's fields (nodes registered already stay as they are).
#[utoipa::path(
    put, path = "/bindings/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Binding id")),
    request_body = BindingInput,
    responses(
        (status = 200, description = "The updated binding", body = Binding),
        (status = 404, description = "No such binding", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_binding(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<BindingInput>,
) -> Result<Json<Binding>> {
    state.store.binding(id).await?;
    let change = state.discovery.binding_change(input).await?;
    Ok(Json(binding_to_api(
        state.store.update_binding(id, &change).await?,
    )))
}

/// Delete a binding no pool names.
#[utoipa::path(
    delete, path = "/bindings/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Binding id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such binding", body = ErrorBody),
        (status = 409, description = "A pool names it", body = ErrorBody),
    )
)]
async fn delete_binding(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_binding(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- the operation log ----

/// Search the operation log: every discovery change, newest first.
#[utoipa::path(
    get, path = "/discovery-changes", tag = "discovery",
    params(PageQuery, ChangeFilter),
    responses(
        (status = 200, description = "One page of changes", body = Page<DiscoveryChange>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range, or a control character in a filter", body = ErrorBody),
    )
)]
async fn list_changes(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<ChangeFilter>,
) -> Result<Json<Page<DiscoveryChange>>> {
    let window = window(paging)?;
    for (field, value) in [
        ("actor", &filter.actor),
        ("action", &filter.action),
        ("correlation_id", &filter.correlation_id),
        ("q", &filter.q),
    ] {
        if let Some(value) = value {
            validate::filter(field, value)?;
        }
    }
    let query = store::ChangeQuery {
        upstream_id: filter.upstream_id,
        actor: filter.actor.filter(|a| !a.is_empty()),
        action: filter.action.filter(|a| !a.is_empty()),
        correlation_id: filter.correlation_id.filter(|c| !c.is_empty()),
        text: filter.q.filter(|q| !q.is_empty()),
    };
    let (items, total) = state.store.list_changes(&query, window).await?;
    Ok(Json(page(
        items.into_iter().map(|c| change_to_api(c, None)).collect(),
        total,
        paging,
    )))
}

/// Get one change of the operation log.
#[utoipa::path(
    get, path = "/discovery-changes/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Change id")),
    responses(
        (status = 200, description = "The change", body = DiscoveryChange),
        (status = 404, description = "No such change", body = ErrorBody),
    )
)]
async fn get_change(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<DiscoveryChange>> {
    let (change, whole) = state.discovery.logged_change(id).await?;
    Ok(Json(change_to_api(change, whole)))
}

// ---- configuration files and releases ----

fn file_to_api(f: store::ConfigFileRecord, content: bool) -> ConfigFileVersion {
    ConfigFileVersion {
        path: f.path,
        version: f.version,
        content: content.then_some(f.content),
        created_by: f.created_by,
        created_at: rfc3339(datetime(f.created_at)),
    }
}

async fn release_to_api(state: &AppState, r: store::ReleaseRecord) -> Result<Release> {
    let nodes = state
        .store
        .release_nodes(r.id)
        .await?
        .into_iter()
        .map(|n| ReleaseNode {
            node_id: n.node_id,
            address: n.address,
            state: n.state,
            log: n.log,
            started_at: n.started_at.map(|t| rfc3339(datetime(t))),
            finished_at: n.finished_at.map(|t| rfc3339(datetime(t))),
        })
        .collect();
    Ok(Release {
        id: r.id,
        unit_id: r.unit_id,
        files: serde_json::from_str::<Vec<FileRef>>(&r.files).unwrap_or_default(),
        state: r.state,
        rollback_of: r.rollback_of,
        created_by: r.created_by,
        created_at: rfc3339(datetime(r.created_at)),
        finished_at: r.finished_at.map(|t| rfc3339(datetime(t))),
        execution_id: r.execution_id,
        nodes,
    })
}

/// Every version of every configuration file of a unit (without their
/// text), by path, newest version first.
#[utoipa::path(
    get, path = "/lb-units/{id}/files", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id"), PageQuery),
    responses(
        (status = 200, description = "One page of versions", body = Page<ConfigFileVersion>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_files(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<ConfigFileVersion>>> {
    state.store.lb_unit(id).await?;
    let versions = state.store.config_file_versions(id).await?;
    Ok(Json(page_of(
        versions
            .into_iter()
            .map(|f| file_to_api(f, false))
            .collect(),
        paging,
    )?))
}

/// Store the next version of one of a unit's configuration files (every
/// version is kept; publish a release to put it live).
#[utoipa::path(
    post, path = "/lb-units/{id}/files", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    request_body = ConfigFileInput,
    responses(
        (status = 201, description = "The new version", body = ConfigFileVersion),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 413, description = "The body is larger than the server's limit", body = ErrorBody),
        (status = 422, description = "A bad path, or content over 1 MiB", body = ErrorBody),
    )
)]
async fn add_file(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<ConfigFileInput>,
) -> Result<(StatusCode, Json<ConfigFileVersion>)> {
    let file = state
        .discovery
        .add_file(id, input, &me.user.username)
        .await?;
    Ok((StatusCode::CREATED, Json(file_to_api(file, true))))
}

/// One version of a unit's file, with its text.
#[utoipa::path(
    get, path = "/lb-units/{id}/files/{version}", tag = "discovery",
    params(
        ("id" = i64, Path, description = "Unit id"),
        ("version" = i64, Path, description = "The version"),
        ("path" = String, Query, description = "The file's path"),
    ),
    responses(
        (status = 200, description = "The version", body = ConfigFileVersion),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 404, description = "No such unit, file or version", body = ErrorBody),
    )
)]
async fn get_file(
    State(state): State<AppState>,
    Path((id, version)): Path<(i64, i64)>,
    Query(file): Query<FilePath>,
) -> Result<Json<ConfigFileVersion>> {
    let f = state.store.config_file(id, &file.path, version).await?;
    Ok(Json(file_to_api(f, true)))
}

/// The `path` of a file version asked for.
#[derive(Debug, serde::Deserialize)]
struct FilePath {
    path: String,
}

/// A unit's releases, newest first.
#[utoipa::path(
    get, path = "/lb-units/{id}/releases", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id"), PageQuery),
    responses(
        (status = 200, description = "One page of releases", body = Page<Release>),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_releases(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Release>>> {
    state.store.lb_unit(id).await?;
    let (rows, total) = state.store.list_releases(id, window(paging)?).await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(release_to_api(&state, r).await?);
    }
    Ok(Json(page(items, total, paging)))
}

/// Publish file versions (by default the newest of every file) to the
/// unit's nodes, one at a time: each checks them (`nginx -t`) before they
/// go live and keeps its configuration on any failure; the first failure
/// leaves the remaining nodes as they are. Follow it by id.
#[utoipa::path(
    post, path = "/lb-units/{id}/releases", tag = "discovery",
    params(("id" = i64, Path, description = "Unit id")),
    request_body = ReleaseInput,
    responses(
        (status = 202, description = "Started", body = Release),
        (status = 404, description = "No such unit", body = ErrorBody),
        (status = 409, description = "A release of the unit is under way", body = ErrorBody),
        (status = 422, description = "No such file version, or the unit has no files or nodes", body = ErrorBody),
    )
)]
async fn publish(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<ReleaseInput>,
) -> Result<(StatusCode, Json<Release>)> {
    let release = state
        .discovery
        .publish(id, input.files, None, &me.user.username)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(release_to_api(&state, release).await?),
    ))
}

/// One release with each node's progress and log.
#[utoipa::path(
    get, path = "/lb-releases/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Release id")),
    responses(
        (status = 200, description = "The release", body = Release),
        (status = 404, description = "No such release", body = ErrorBody),
    )
)]
async fn get_release(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Release>> {
    let r = state.store.release(id).await?;
    Ok(Json(release_to_api(&state, r).await?))
}

/// Publish the files of an earlier release again, as a new release.
#[utoipa::path(
    post, path = "/lb-releases/{id}/rollback", tag = "discovery",
    params(("id" = i64, Path, description = "The release to return to")),
    responses(
        (status = 202, description = "Started", body = Release),
        (status = 404, description = "No such release", body = ErrorBody),
        (status = 409, description = "A release of the unit is under way", body = ErrorBody),
        (status = 422, description = "The unit has no nodes", body = ErrorBody),
    )
)]
async fn rollback_release(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<(StatusCode, Json<Release>)> {
    let release = state.discovery.rollback(id, &me.user.username).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(release_to_api(&state, release).await?),
    ))
}

// ---- app keys ----

fn key_to_api(k: store::AppKeyRecord) -> AppKey {
    AppKey {
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        privileges: serde_json::from_str(&k.privileges).unwrap_or_default(),
        created_by: k.created_by,
        created_at: rfc3339(datetime(k.created_at)),
        last_used_at: k.last_used_at.map(|t| rfc3339(datetime(t))),
        revoked_at: k.revoked_at.map(|t| rfc3339(datetime(t))),
    }
}

/// Every app key (never their secrets).
#[utoipa::path(
    get, path = "/app-keys", tag = "discovery",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of keys, by name", body = Page<AppKey>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_app_keys(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<AppKey>>> {
    let keys = state.store.app_keys().await?;
    Ok(Json(page_of(
        keys.into_iter().map(key_to_api).collect(),
        paging,
    )?))
}

/// Make an app key for another system; its secret is in this answer only.
#[utoipa::path(
    post, path = "/app-keys", tag = "discovery",
    request_body = AppKeyInput,
    responses(
        (status = 201, description = "The key and its secret", body = AppKeyCreated),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_app_key(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<AppKeyInput>,
) -> Result<(StatusCode, Json<AppKeyCreated>)> {
    let (key, secret) = state
        .discovery
        .create_app_key(input, &me.user.username)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(AppKeyCreated {
            key: key_to_api(key),
            secret,
        }),
    ))
}

/// Replace an app key's privileges.
#[utoipa::path(
    put, path = "/app-keys/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Key id")),
    request_body = AppKeyPrivileges,
    responses(
        (status = 200, description = "The key", body = AppKey),
        (status = 404, description = "No such key", body = ErrorBody),
        (status = 422, description = "An unknown privilege", body = ErrorBody),
    )
)]
async fn set_app_key_privileges(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<AppKeyPrivileges>,
) -> Result<Json<AppKey>> {
    Ok(Json(key_to_api(
        state
            .discovery
            .set_app_key_privileges(id, &input.privileges)
            .await?,
    )))
}

/// Revoke an app key: refused from now on (kept, so the log names it).
#[utoipa::path(
    delete, path = "/app-keys/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "Key id")),
    responses(
        (status = 200, description = "The revoked key", body = AppKey),
        (status = 404, description = "No such key", body = ErrorBody),
    )
)]
async fn revoke_app_key(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<AppKey>> {
    Ok(Json(key_to_api(state.store.revoke_app_key(id).await?)))
}

// ---- alterations: other systems, by app key ----

async fn alter(
    state: &AppState,
    key: &store::AppKeyRecord,
    ids: &RequestIds,
    headers: &HeaderMap,
    op: Op,
    privilege: &'static str,
    input: AlterationInput,
) -> Result<(StatusCode, Json<DiscoveryChange>)> {
    Discovery::permit(key, privilege)?;
    let change = state
        .discovery
        .alter(
            key,
            op,
            &input,
            &ids.correlation_id,
            idempotency_key(headers, "")?,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(change_to_api(change, None))))
}

/// Register backends in a binding's upstream (OpenDCP's
/// `auto_alteration add`). Asynchronous: poll the answer's id. Needs the
/// privilege `alterations.register`.
#[utoipa::path(
    post, path = "/alterations/register", tag = "discovery",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once (1–128 printable characters)"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Recorded with the change, to find it in the log"),
    ),
    request_body = AlterationInput,
    security(("app_key" = [])),
    responses(
        (status = 202, description = "Recorded; applied in the background", body = DiscoveryChange),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No app key, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The key lacks the privilege; the message names it", body = ErrorBody),
        (status = 422, description = "No such binding, or a backend breaks a rule", body = ErrorBody),
        (status = 503, description = "Too many alterations are waiting to be applied; try again shortly", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn alter_register(
    State(state): State<AppState>,
    Extension(key): Extension<store::AppKeyRecord>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    Json(input): Json<AlterationInput>,
) -> Result<(StatusCode, Json<DiscoveryChange>)> {
    alter(
        &state,
        &key,
        &ids,
        &headers,
        Op::Register,
        "alterations.register",
        input,
    )
    .await
}

/// Unregister backends from a binding's upstream (OpenDCP's
/// `auto_alteration remove`); removing its last backend needs `force`.
/// Asynchronous: poll the answer's id. Needs `alterations.unregister`.
#[utoipa::path(
    post, path = "/alterations/unregister", tag = "discovery",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry apply once (1–128 printable characters)"),
        ("X-Correlation-Id" = Option<String>, Header, description = "Recorded with the change, to find it in the log"),
    ),
    request_body = AlterationInput,
    security(("app_key" = [])),
    responses(
        (status = 202, description = "Recorded; applied in the background (a refusal to empty the upstream shows as state failed)", body = DiscoveryChange),
        (status = 400, description = "A bad Idempotency-Key", body = ErrorBody),
        (status = 401, description = "No app key, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The key lacks the privilege; the message names it", body = ErrorBody),
        (status = 422, description = "No such binding, or a backend breaks a rule", body = ErrorBody),
        (status = 503, description = "Too many alterations are waiting to be applied; try again shortly", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn alter_unregister(
    State(state): State<AppState>,
    Extension(key): Extension<store::AppKeyRecord>,
    Extension(ids): Extension<RequestIds>,
    headers: HeaderMap,
    Json(input): Json<AlterationInput>,
) -> Result<(StatusCode, Json<DiscoveryChange>)> {
    alter(
        &state,
        &key,
        &ids,
        &headers,
        Op::Unregister,
        "alterations.unregister",
        input,
    )
    .await
}

/// An alteration's state (OpenDCP's `check_state`): `pending`, then
/// `succeeded`, `partial` or `failed` with each node's outcome. Needs
/// `alterations.read`.
#[utoipa::path(
    get, path = "/alterations/{id}", tag = "discovery",
    params(("id" = i64, Path, description = "The change's id")),
    security(("app_key" = [])),
    responses(
        (status = 200, description = "The change", body = DiscoveryChange),
        (status = 401, description = "No app key, an unknown one or a revoked one", body = ErrorBody),
        (status = 403, description = "The key lacks the privilege; the message names it", body = ErrorBody),
        (status = 404, description = "No such change", body = ErrorBody),
    )
)]
async fn get_alteration(
    State(state): State<AppState>,
    Extension(key): Extension<store::AppKeyRecord>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<DiscoveryChange>> {
    Discovery::permit(&key, "alterations.read")?;
    let (change, whole) = state.discovery.logged_change(id).await?;
    Ok(Json(change_to_api(change, whole)))
}
