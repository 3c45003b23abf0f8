//! `/api/v1/accounts/{id}/load-balancers`: a cloud account's own load
//! balancers, listeners, white lists and backends' health (OpenDCP's SLB
//! pages), through the account's provider plugin.

use axum::{Extension, extract::State, http::HeaderMap, http::StatusCode};
use dcp_api_types::{
    BackendHealth, BackendServer, CloudLoadBalancer, CloudLoadBalancerDetail,
    CloudLoadBalancerInput, ErrorBody, LbAddressType, LbStatus, LbStatusInput, LbUnitRef, Listener,
    ListenerHealth, ListenerHealthCheck, ListenerInput, ListenerProtocol, ListenerRunningInput,
    ListenerStatus, Page, PageQuery, RegionQuery, WhiteListInput,
};
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    discovery::idempotency_key,
    extract::{Id, Json, Path, Query, page_of},
};
use crate::{
    auth::Principal,
    machines::load_balancers::{Detail, ServedUnit},
    plugins::cloud_lb,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_load_balancers, create_load_balancer))
        .routes(routes!(get_load_balancer, delete_load_balancer))
        .routes(routes!(set_status))
        .routes(routes!(create_listener))
        .routes(routes!(delete_listener))
        .routes(routes!(set_running))
        .routes(routes!(set_white_list))
}

#[derive(Deserialize)]
struct LbPath {
    id: i64,
    lb: String,
}

#[derive(Deserialize)]
struct ListenerPath {
    id: i64,
    lb: String,
    port: u16,
}

/// List an account's load balancers in a region, by name.
#[utoipa::path(
    get, path = "/accounts/{id}/load-balancers", tag = "load-balancers",
    params(("id" = i64, Path, description = "Account id"), RegionQuery, PageQuery),
    responses(
        (status = 200, description = "One page of the load balancers", body = Page<CloudLoadBalancer>),
        (status = 400, description = "A parameter is missing or not of its type", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "The account's provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "The region is not a region id, or paging is out of range", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn list_load_balancers(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Query(query): Query<RegionQuery>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<CloudLoadBalancer>>> {
    let mut found: Vec<CloudLoadBalancer> = state
        .machines
        .cloud_load_balancers(id, &query.region)
        .await?
        .into_iter()
        .map(load_balancer_to_api)
        .collect();
    found.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(Json(page_of(found, paging)?))
}

/// Create a load balancer. With an `Idempotency-Key`, a retry answers the
/// load balancer the first request made instead of making another.
#[utoipa::path(
    post, path = "/accounts/{id}/load-balancers", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry create one load balancer (1–128 printable characters)"),
    ),
    request_body = CloudLoadBalancerInput,
    responses(
        (status = 201, description = "Created (or made by the first request with this Idempotency-Key)", body = CloudLoadBalancer),
        (status = 400, description = "Malformed JSON or a bad Idempotency-Key", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "The account's provider does not manage load balancers, or the key was used with other fields", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn create_load_balancer(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
    headers: HeaderMap,
    Json(input): Json<CloudLoadBalancerInput>,
) -> Result<(StatusCode, Json<CloudLoadBalancer>)> {
    let scope = format!("account:{id}:user:{}", me.user.username);
    // Without a key the request is its own: a fresh one per call.
    let key = idempotency_key(&headers, &scope)?
        .unwrap_or_else(|| format!("{scope}:{}", uuid::Uuid::now_v7().simple()));
    let created = state
        .machines
        .create_cloud_load_balancer(id, &input, &key)
        .await?;
    Ok((StatusCode::CREATED, Json(load_balancer_to_api(created))))
}

/// One load balancer: its listeners with their white lists, its backend
/// servers' health on each listener, and the discovery units serving
/// through it.
#[utoipa::path(
    get, path = "/accounts/{id}/load-balancers/{lb}", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        RegionQuery,
    ),
    responses(
        (status = 200, description = "The load balancer", body = CloudLoadBalancerDetail),
        (status = 400, description = "A parameter is missing or not of its type", body = ErrorBody),
        (status = 404, description = "No such account or load balancer", body = ErrorBody),
        (status = 409, description = "The account's provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "The region or id breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn get_load_balancer(
    State(state): State<AppState>,
    Path(LbPath { id, lb }): Path<LbPath>,
    Query(query): Query<RegionQuery>,
) -> Result<Json<CloudLoadBalancerDetail>> {
    let detail = state
        .machines
        .cloud_load_balancer(id, &query.region, &lb)
        .await?;
    Ok(Json(detail_to_api(detail)))
}

/// Delete a load balancer with its listeners. Refused while a discovery
/// unit serves through it; deleting one that is gone succeeds.
#[utoipa::path(
    delete, path = "/accounts/{id}/load-balancers/{lb}", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        RegionQuery,
    ),
    responses(
        (status = 204, description = "Deleted, or already gone"),
        (status = 400, description = "A parameter is missing or not of its type", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "A discovery unit serves through it, or the provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "The region or id breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn delete_load_balancer(
    State(state): State<AppState>,
    Path(LbPath { id, lb }): Path<LbPath>,
    Query(query): Query<RegionQuery>,
) -> Result<StatusCode> {
    state
        .machines
        .delete_cloud_load_balancer(id, &query.region, &lb)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Activate or stop a load balancer.
#[utoipa::path(
    put, path = "/accounts/{id}/load-balancers/{lb}/status", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        RegionQuery,
    ),
    request_body = LbStatusInput,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Malformed JSON or a parameter not of its type", body = ErrorBody),
        (status = 404, description = "No such account or load balancer", body = ErrorBody),
        (status = 409, description = "The provider does not manage load balancers, or the cloud refused the change (e.g. locked)", body = ErrorBody),
        (status = 422, description = "The region or id breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn set_status(
    State(state): State<AppState>,
    Path(LbPath { id, lb }): Path<LbPath>,
    Query(query): Query<RegionQuery>,
    Json(input): Json<LbStatusInput>,
) -> Result<StatusCode> {
    state
        .machines
        .set_cloud_load_balancer_status(id, &query.region, &lb, input.status)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a listener, stopped. Creating the same listener again succeeds;
/// another listener on the same port is a conflict.
#[utoipa::path(
    post, path = "/accounts/{id}/load-balancers/{lb}/listeners", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        RegionQuery,
    ),
    request_body = ListenerInput,
    responses(
        (status = 204, description = "Created, or already there as asked"),
        (status = 400, description = "Malformed JSON or a parameter not of its type", body = ErrorBody),
        (status = 404, description = "No such account or load balancer", body = ErrorBody),
        (status = 409, description = "Another listener has the port, or the provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn create_listener(
    State(state): State<AppState>,
    Path(LbPath { id, lb }): Path<LbPath>,
    Query(query): Query<RegionQuery>,
    Json(input): Json<ListenerInput>,
) -> Result<StatusCode> {
    state
        .machines
        .create_cloud_listener(id, &query.region, &lb, &input)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a listener; deleting one that is gone succeeds.
#[utoipa::path(
    delete, path = "/accounts/{id}/load-balancers/{lb}/listeners/{port}", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The listener's port"),
        RegionQuery,
    ),
    responses(
        (status = 204, description = "Deleted, or already gone"),
        (status = 400, description = "A parameter is missing or not of its type", body = ErrorBody),
        (status = 404, description = "No such account or load balancer", body = ErrorBody),
        (status = 409, description = "The provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "The region, id or port breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn delete_listener(
    State(state): State<AppState>,
    Path(ListenerPath { id, lb, port }): Path<ListenerPath>,
    Query(query): Query<RegionQuery>,
) -> Result<StatusCode> {
    state
        .machines
        .delete_cloud_listener(id, &query.region, &lb, port)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Start or stop a listener.
#[utoipa::path(
    put, path = "/accounts/{id}/load-balancers/{lb}/listeners/{port}/running", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The listener's port"),
        RegionQuery,
    ),
    request_body = ListenerRunningInput,
    responses(
        (status = 204, description = "Done"),
        (status = 400, description = "Malformed JSON or a parameter not of its type", body = ErrorBody),
        (status = 404, description = "No such account, load balancer or listener", body = ErrorBody),
        (status = 409, description = "The provider does not manage load balancers, or the cloud refused the change", body = ErrorBody),
        (status = 422, description = "The region, id or port breaks a rule", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn set_running(
    State(state): State<AppState>,
    Path(ListenerPath { id, lb, port }): Path<ListenerPath>,
    Query(query): Query<RegionQuery>,
    Json(input): Json<ListenerRunningInput>,
) -> Result<StatusCode> {
    state
        .machines
        .set_cloud_listener_running(id, &query.region, &lb, port, input.running)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a listener's white list and turn its enforcement on or off.
#[utoipa::path(
    put, path = "/accounts/{id}/load-balancers/{lb}/listeners/{port}/white-list", tag = "load-balancers",
    params(
        ("id" = i64, Path, description = "Account id"),
        ("lb" = String, Path, pattern = "^[A-Za-z0-9._-]{1,64}$", description = "The cloud's load balancer id"),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The listener's port"),
        RegionQuery,
    ),
    request_body = WhiteListInput,
    responses(
        (status = 204, description = "The list is exactly as asked"),
        (status = 400, description = "Malformed JSON or a parameter not of its type", body = ErrorBody),
        (status = 404, description = "No such account, load balancer or listener", body = ErrorBody),
        (status = 409, description = "The provider does not manage load balancers", body = ErrorBody),
        (status = 422, description = "An entry is not an IPv4 address or CIDR block, is repeated, or there are more than 300", body = ErrorBody),
        (status = 502, description = "The cloud call failed", body = ErrorBody),
        (status = 503, description = "The account's provider plugin is not active", body = ErrorBody),
    )
)]
async fn set_white_list(
    State(state): State<AppState>,
    Path(ListenerPath { id, lb, port }): Path<ListenerPath>,
    Query(query): Query<RegionQuery>,
    Json(input): Json<WhiteListInput>,
) -> Result<StatusCode> {
    state
        .machines
        .set_cloud_white_list(id, &query.region, &lb, port, input.enabled, &input.entries)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

fn load_balancer_to_api(lb: cloud_lb::LoadBalancer) -> CloudLoadBalancer {
    CloudLoadBalancer {
        id: lb.id,
        name: lb.name,
        region: lb.region,
        address: lb.address,
        address_type: match lb.address_type {
            cloud_lb::AddressType::Internet => LbAddressType::Internet,
            cloud_lb::AddressType::Intranet => LbAddressType::Intranet,
        },
        status: match lb.status {
            cloud_lb::LoadBalancerStatus::Active => LbStatus::Active,
            cloud_lb::LoadBalancerStatus::Inactive => LbStatus::Inactive,
            cloud_lb::LoadBalancerStatus::Locked => LbStatus::Locked,
        },
        vpc_id: lb.vpc_id,
        spec: lb.spec,
        created_at: lb.created_at,
    }
}

fn listener_to_api(l: cloud_lb::Listener) -> Listener {
    let spec = l.spec;
    Listener {
        port: spec.port,
        protocol: match spec.protocol {
            cloud_lb::ListenerProtocol::Http => ListenerProtocol::Http,
            cloud_lb::ListenerProtocol::Tcp => ListenerProtocol::Tcp,
        },
        backend_port: spec.backend_port,
        bandwidth_mbps: spec.bandwidth_mbps,
        scheduler: spec.scheduler,
        health_check: ListenerHealthCheck {
            enabled: spec.health_check.enabled,
            uri: spec.health_check.uri,
            interval_seconds: spec.health_check.interval_seconds,
            healthy_threshold: spec.health_check.healthy_threshold,
            unhealthy_threshold: spec.health_check.unhealthy_threshold,
        },
        status: match l.status {
            cloud_lb::ListenerStatus::Running => ListenerStatus::Running,
            cloud_lb::ListenerStatus::Stopped => ListenerStatus::Stopped,
            cloud_lb::ListenerStatus::Starting => ListenerStatus::Starting,
            cloud_lb::ListenerStatus::Configuring => ListenerStatus::Configuring,
        },
        access_control: l.access_control,
        white_list: l.white_list,
    }
}

fn backend_to_api(b: cloud_lb::BackendServer) -> BackendServer {
    BackendServer {
        instance_id: b.instance_id,
        address: b.address,
        weight: b.weight,
        health: b
            .health
            .into_iter()
            .map(|h| ListenerHealth {
                port: h.port,
                health: match h.health {
                    cloud_lb::Health::Normal => BackendHealth::Normal,
                    cloud_lb::Health::Abnormal => BackendHealth::Abnormal,
                    cloud_lb::Health::Unavailable => BackendHealth::Unavailable,
                },
            })
            .collect(),
    }
}

fn detail_to_api(detail: Detail) -> CloudLoadBalancerDetail {
    let cloud = detail.cloud;
    CloudLoadBalancerDetail {
        load_balancer: load_balancer_to_api(cloud.load_balancer),
        listeners: cloud.listeners.into_iter().map(listener_to_api).collect(),
        backends: cloud.backends.into_iter().map(backend_to_api).collect(),
        served_by: detail
            .served_by
            .into_iter()
            .map(|ServedUnit { id, name }| LbUnitRef { id, name })
            .collect(),
    }
}
