//! `/api/v1/services`, `/api/v1/pools` and `/api/v1/pools/{id}/nodes`: the
//! orchestration tree below clusters.

use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use dcp_api_types::{
    AddNodes, ErrorBody, LogLine, LogsQuery, MachineState, Node, NodeContainer, NodeLogs, Page,
    PageQuery, Pool, PoolFilter, PoolInput, RemoveNode, Rollback, RollbackInput, Service,
    ServiceFilter, ServiceInput, Task, TemplatePurpose,
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Error, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{
    auth::Principal,
    containers, orchestration,
    store::{self, NewNode, NodeRecord, PoolRecord, ServiceRecord},
    validate::{self, Invalid},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(get_service, update_service, delete_service))
        .routes(routes!(rollback_service))
        .routes(routes!(list_pools, create_pool))
        .routes(routes!(get_pool, update_pool, delete_pool))
        .routes(routes!(list_nodes, add_nodes))
        .routes(routes!(remove_node))
        .routes(routes!(node_container))
        .routes(routes!(node_logs))
}

fn service_to_api(s: ServiceRecord) -> Result<Service> {
    let container = serde_json::from_str(&s.container).map_err(|_| store::Error::Corrupt {
        column: "services.container",
        value: s.container.clone(),
    })?;
    let rollback_tag = s
        .rollback_image()
        .and_then(validate::image_tag_of)
        .map(str::to_owned);
    Ok(Service {
        id: s.id,
        cluster_id: s.cluster_id,
        name: s.name,
        description: s.description,
        service_type: s.service_type,
        rollback_tag,
        image: s.image,
        container,
        pools: s.pools,
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(s.updated_at),
    })
}

fn pool_to_api(p: PoolRecord) -> Pool {
    Pool {
        id: p.id,
        service_id: p.service_id,
        name: p.name,
        description: p.description,
        template_id: p.template_id,
        expand_template_id: p.task_templates.expand,
        shrink_template_id: p.task_templates.shrink,
        deploy_template_id: p.task_templates.deploy,
        binding_id: p.binding_id,
        nodes: p.nodes,
        created_at: rfc3339(p.created_at),
        updated_at: rfc3339(p.updated_at),
    }
}

fn node_to_api(n: NodeRecord) -> Node {
    Node {
        tag: n
            .image
            .as_deref()
            .and_then(validate::image_tag_of)
            .map(str::to_owned),
        image: n.image,
        id: n.id,
        pool_id: n.pool_id,
        machine_id: n.machine_id,
        address: n.address,
        port: n.port,
        user: n.user,
        state: n.state,
        created_at: rfc3339(n.created_at),
    }
}

/// `id` must name an existing row, or the field is invalid.
async fn exists<T>(
    field: &'static str,
    id: i64,
    found: impl std::future::Future<Output = store::Result<T>>,
) -> Result<T> {
    found.await.map_err(|e| match e {
        store::Error::NotFound { what } => {
            Error::validation(field, format!("no {what} with id {id}"))
        }
        other => other.into(),
    })
}

async fn checked_service(state: &AppState, input: ServiceInput) -> Result<store::ServiceChange> {
    let change = orchestration::service_change(input)?;
    exists(
        "cluster_id",
        change.cluster_id,
        state.store.cluster(change.cluster_id),
    )
    .await?;
    Ok(change)
}

async fn checked_pool(state: &AppState, input: PoolInput) -> Result<store::PoolChange> {
    let change = orchestration::pool_change(input)?;
    exists(
        "service_id",
        change.service_id,
        state.store.service(change.service_id),
    )
    .await?;
    if let Some(template) = change.template_id {
        exists("template_id", template, state.store.template(template)).await?;
    }
    if let Some(binding) = change.binding_id {
        exists("binding_id", binding, state.store.binding(binding)).await?;
    }
    state
        .engine
        .check_pool_templates(
            &change.name,
            change.binding_id.is_some(),
            [
                (
                    "expand_template_id",
                    TemplatePurpose::Expand,
                    change.expand_template_id,
                ),
                (
                    "shrink_template_id",
                    TemplatePurpose::Shrink,
                    change.shrink_template_id,
                ),
                (
                    "deploy_template_id",
                    TemplatePurpose::Deploy,
                    change.deploy_template_id,
                ),
            ],
        )
        .await?;
    Ok(change)
}

/// List services, by name.
#[utoipa::path(
    get, path = "/services", tag = "orchestration",
    params(PageQuery, ServiceFilter),
    responses(
        (status = 200, description = "One page of services", body = Page<Service>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_services(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<ServiceFilter>,
) -> Result<Json<Page<Service>>> {
    let (items, total) = state
        .store
        .list_services(filter.cluster_id, window(paging)?)
        .await?;
    let items = items
        .into_iter()
        .map(service_to_api)
        .collect::<Result<_>>()?;
    Ok(Json(page(items, total, paging)))
}

/// Create a service: an image and how its container runs.
#[utoipa::path(
    post, path = "/services", tag = "orchestration",
    request_body = ServiceInput,
    responses(
        (status = 201, description = "Created", body = Service),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_service(
    State(state): State<AppState>,
    Json(input): Json<ServiceInput>,
) -> Result<(StatusCode, Json<Service>)> {
    let change = checked_service(&state, input).await?;
    let service = state.store.create_service(&change).await?;
    Ok((StatusCode::CREATED, Json(service_to_api(service)?)))
}

/// Get one service.
#[utoipa::path(
    get, path = "/services/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Service id")),
    responses(
        (status = 200, description = "The service", body = Service),
        (status = 404, description = "No such service", body = ErrorBody),
    )
)]
async fn get_service(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Service>> {
    Ok(Json(service_to_api(state.store.service(id).await?)?))
}

/// Roll a service back to its `rollback_tag`: a deploy of that tag on each
/// of its pools with nodes (queued behind what a pool runs), one node at a
/// time unless `batch_size` says otherwise.
#[utoipa::path(
    post, path = "/services/{id}/rollback", tag = "orchestration",
    params(("id" = i64, Path, description = "Service id")),
    request_body = RollbackInput,
    responses(
        (status = 202, description = "The deploys started", body = Rollback),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "Nothing to roll back to, no nodes, or the rollback tag is no longer `tag`", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn rollback_service(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<RollbackInput>,
) -> Result<(StatusCode, Json<Rollback>)> {
    let (tag, tasks) = state.engine.rollback(id, input, &me.user.username).await?;
    Ok((StatusCode::ACCEPTED, Json(Rollback { tag, tasks })))
}

/// Replace a service's fields.
#[utoipa::path(
    put, path = "/services/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Service id")),
    request_body = ServiceInput,
    responses(
        (status = 200, description = "The updated service", body = Service),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_service(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<ServiceInput>,
) -> Result<Json<Service>> {
    let change = checked_service(&state, input).await?;
    Ok(Json(service_to_api(
        state.store.update_service(id, &change).await?,
    )?))
}

/// Delete a service; refused while it has pools.
#[utoipa::path(
    delete, path = "/services/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Service id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such service", body = ErrorBody),
        (status = 409, description = "It has pools", body = ErrorBody),
    )
)]
async fn delete_service(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_service(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List pools, by name.
#[utoipa::path(
    get, path = "/pools", tag = "orchestration",
    params(PageQuery, PoolFilter),
    responses(
        (status = 200, description = "One page of pools", body = Page<Pool>),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_pools(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<PoolFilter>,
) -> Result<Json<Page<Pool>>> {
    let (items, total) = state
        .store
        .list_pools(filter.service_id, window(paging)?)
        .await?;
    Ok(Json(page(
        items.into_iter().map(pool_to_api).collect(),
        total,
        paging,
    )))
}

/// Create a pool of a service.
#[utoipa::path(
    post, path = "/pools", tag = "orchestration",
    request_body = PoolInput,
    responses(
        (status = 201, description = "Created", body = Pool),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_pool(
    State(state): State<AppState>,
    Json(input): Json<PoolInput>,
) -> Result<(StatusCode, Json<Pool>)> {
    let change = checked_pool(&state, input).await?;
    Ok((
        StatusCode::CREATED,
        Json(pool_to_api(state.store.create_pool(&change).await?)),
    ))
}

/// Get one pool.
#[utoipa::path(
    get, path = "/pools/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Pool id")),
    responses(
        (status = 200, description = "The pool", body = Pool),
        (status = 404, description = "No such pool", body = ErrorBody),
    )
)]
async fn get_pool(State(state): State<AppState>, Path(Id { id }): Path<Id>) -> Result<Json<Pool>> {
    Ok(Json(pool_to_api(state.store.pool_record(id).await?)))
}

/// Replace a pool's fields.
#[utoipa::path(
    put, path = "/pools/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Pool id")),
    request_body = PoolInput,
    responses(
        (status = 200, description = "The updated pool", body = Pool),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_pool(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<PoolInput>,
) -> Result<Json<Pool>> {
    let change = checked_pool(&state, input).await?;
    Ok(Json(pool_to_api(
        state.store.update_pool(id, &change).await?,
    )))
}

/// Delete a pool, with its finished tasks; refused while it has nodes or
/// an unfinished task.
#[utoipa::path(
    delete, path = "/pools/{id}", tag = "orchestration",
    params(("id" = i64, Path, description = "Pool id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "It has nodes, or a task on it is unfinished", body = ErrorBody),
    )
)]
async fn delete_pool(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_pool(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A pool's nodes, oldest first.
#[utoipa::path(
    get, path = "/pools/{id}/nodes", tag = "orchestration",
    params(("id" = i64, Path, description = "Pool id"), PageQuery),
    responses(
        (status = 200, description = "One page of nodes", body = Page<Node>),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 422, description = "Paging out of range", body = ErrorBody),
    )
)]
async fn list_nodes(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Node>>> {
    let window = window(paging)?;
    state.store.pool_record(id).await?;
    let (nodes, total) = state.store.list_nodes(id, window).await?;
    Ok(Json(page(
        nodes.into_iter().map(node_to_api).collect(),
        total,
        paging,
    )))
}

/// Add nodes to a pool: ready machines (each takes the machine's address,
/// port, user and key, and the machine then shows the pool), and servers by
/// address (logged in with DCP's default key, so refused when none is
/// configured; see `GET /ssh/settings`). All or none; a machine is in one
/// pool at most.
#[utoipa::path(
    post, path = "/pools/{id}/nodes", tag = "orchestration",
    params(("id" = i64, Path, description = "Pool id")),
    request_body = AddNodes,
    responses(
        (status = 201, description = "The nodes added", body = Vec<Node>),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 409, description = "A machine is a node of a pool already (the error names `machine_ids[i]` and the pool), or an address is in this pool already", body = ErrorBody),
        (status = 422, description = "A machine is unknown or not ready, an address is invalid, or an address is given while no default key is configured (the error names `addresses[i]`)", body = ErrorBody),
    )
)]
async fn add_nodes(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<AddNodes>,
) -> Result<(StatusCode, Json<Vec<Node>>)> {
    state.store.pool_record(id).await?;
    if input.machine_ids.is_empty() && input.addresses.is_empty() {
        return Err(Error::validation(
            "machine_ids",
            "name at least one machine or address",
        ));
    }
    let mut nodes = Vec::new();
    let machines = state.store.machines_by_ids(&input.machine_ids).await?;
    for (i, machine_id) in input.machine_ids.iter().enumerate() {
        let field = format!("machine_ids[{i}]");
        let machine = machines
            .iter()
            .find(|m| m.id == *machine_id)
            .ok_or_else(|| {
                Error::validation(field.clone(), format!("no machine with id {machine_id}"))
            })?;
        let (MachineState::Ready, Some(address)) = (machine.state, &machine.address) else {
            return Err(Error::validation(
                field,
                format!(
                    "machine {} is {}, not ready",
                    machine.name,
                    machine.state.as_str()
                ),
            ));
        };
        if let Some(pool) = state.store.pool_of_machine(machine.id).await? {
            return Err(Error::Conflict {
                field,
                message: format!("machine {} is a node of pool {pool} already", machine.name),
            });
        }
        nodes.push(NewNode {
            machine_id: Some(machine.id),
            address: address.clone(),
            port: machine.port,
            user: machine.user.clone(),
        });
    }
    for (i, address) in input.addresses.iter().enumerate() {
        let field = |part: &str| format!("addresses[{i}].{part}");
        validate::address(field("address"), address.address.trim())?;
        let user = address.user.clone().unwrap_or_else(|| "root".to_owned());
        validate::identifier("user", &user, 32)
            .map_err(|e| Invalid::new(field("user"), e.message))?;
        if address.port == Some(0) {
            return Err(Invalid::new(field("port"), "must be between 1 and 65535").into());
        }
        // Nodes keep no credential of their own: without a default key,
        // nothing could ever log in to this one.
        if state.config.ssh_key_file.is_none() {
            return Err(Error::validation(
                format!("addresses[{i}]"),
                "no default key is configured (ssh_key_file) to log in to a server by address: \
                 adopt it with a private key or password (POST /machines/adopt), then add it by machine_ids",
            ));
        }
        nodes.push(NewNode {
            machine_id: None,
            address: address.address.trim().to_owned(),
            port: address.port.unwrap_or(22),
            user,
        });
    }
    let added = state.store.add_nodes(id, &nodes).await?;
    Ok((
        StatusCode::CREATED,
        Json(added.into_iter().map(node_to_api).collect()),
    ))
}

#[derive(Deserialize)]
struct NodePath {
    id: i64,
    node_id: i64,
}

/// Remove a node from its pool, as a task: the pool's shrink template runs
/// on it (the seeded one stops its container, then returns its machine —
/// released or kept, see `release_machine`). The node reads `removing`
/// until the task succeeds, then it is gone; asking again meanwhile
/// answers the same task. With `force` the row goes at once and nothing
/// runs on the server (it is gone).
#[utoipa::path(
    delete, path = "/pools/{id}/nodes/{node_id}", tag = "orchestration",
    params(
        ("id" = i64, Path, description = "Pool id"),
        ("node_id" = i64, Path, description = "Node id"),
        RemoveNode,
    ),
    responses(
        (status = 202, description = "The removal task (a shrink of this node); it runs in the background", body = Task),
        (status = 204, description = "Removed at once (`force`)"),
        (status = 404, description = "No such pool, or no such node in it", body = ErrorBody),
        (status = 409, description = "The pool is busy with another task (ask again with `queue=true` to run after it)", body = ErrorBody),
    )
)]
async fn remove_node(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(NodePath { id, node_id }): Path<NodePath>,
    Query(how): Query<RemoveNode>,
) -> Result<Response> {
    if how.force {
        state.store.remove_node(id, node_id).await?;
        tracing::info!(user = %me.user.username, pool = id, node = node_id, "node removed by force");
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let task = state
        .engine
        .remove_node(id, node_id, &how, &me.user.username)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(task)).into_response())
}

/// The node's container as Docker reports it now — state, image and tag,
/// start time, restarts, exit code — with the service's health check asked
/// once. Asked over SSH on each call.
#[utoipa::path(
    get, path = "/pools/{id}/nodes/{node_id}/container", tag = "orchestration",
    params(
        ("id" = i64, Path, description = "Pool id"),
        ("node_id" = i64, Path, description = "Node id"),
    ),
    responses(
        (status = 200, description = "The container (`state` is `missing` when there is none)", body = NodeContainer),
        (status = 404, description = "No such pool, or no such node in it", body = ErrorBody),
        (status = 502, description = "The node could not be reached or asked", body = ErrorBody),
        (status = 503, description = "Too many looks at containers under way (8); try again shortly", body = ErrorBody),
    )
)]
async fn node_container(
    State(state): State<AppState>,
    Path(NodePath { id, node_id }): Path<NodePath>,
) -> Result<Json<NodeContainer>> {
    let s = containers::status(&state.store, &state.remote, id, node_id).await?;
    let tag = s
        .image
        .as_deref()
        .and_then(validate::image_tag_of)
        .map(str::to_owned);
    Ok(Json(NodeContainer {
        name: s.name,
        state: s.state,
        image: s.image,
        tag,
        started_at: s.started_at.map(rfc3339),
        restart_count: s.restart_count,
        exit_code: s.exit_code,
        health: s.health,
        health_detail: s.health_detail,
    }))
}

/// The node container's log: its last `tail` lines, or (following it) the
/// lines after `since`. At most 1 MiB per answer.
#[utoipa::path(
    get, path = "/pools/{id}/nodes/{node_id}/logs", tag = "orchestration",
    params(
        ("id" = i64, Path, description = "Pool id"),
        ("node_id" = i64, Path, description = "Node id"),
        LogsQuery,
    ),
    responses(
        (status = 200, description = "The lines, oldest first", body = NodeLogs),
        (status = 404, description = "No such pool, no such node in it, or no container on it", body = ErrorBody),
        (status = 502, description = "The node could not be reached or asked", body = ErrorBody),
        (status = 503, description = "Too many looks at containers under way (8); try again shortly", body = ErrorBody),
    )
)]
async fn node_logs(
    State(state): State<AppState>,
    Path(NodePath { id, node_id }): Path<NodePath>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<NodeLogs>> {
    let log = containers::log(
        &state.store,
        &state.remote,
        id,
        node_id,
        query.tail,
        query.since.as_deref(),
    )
    .await?;
    Ok(Json(NodeLogs {
        name: log.name,
        lines: log
            .lines
            .into_iter()
            .map(|(at, text)| LogLine { at, text })
            .collect(),
        truncated: log.truncated,
    }))
}
