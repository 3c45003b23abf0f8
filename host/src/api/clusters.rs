//! `/api/v1/clusters`: create, read, list, replace and delete clusters.

use axum::{extract::State, http::StatusCode};
use dcp_api_types::{Cluster, ClusterFilter, ClusterInput, ErrorBody, Page, PageQuery};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{orchestration, store, validate};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_clusters, create_cluster))
        .routes(routes!(get_cluster, update_cluster, delete_cluster))
}

fn to_api(c: store::Cluster) -> Cluster {
    Cluster {
        id: c.id,
        name: c.name,
        description: c.description,
        business_line: c.business_line,
        created_at: rfc3339(c.created_at),
        updated_at: rfc3339(c.updated_at),
    }
}

/// List clusters, ordered by name.
#[utoipa::path(
    get, path = "/clusters", tag = "clusters",
    params(PageQuery, ClusterFilter),
    responses(
        (status = 200, description = "One page of clusters", body = Page<Cluster>),
        (status = 400, description = "A parameter is not of its type", body = ErrorBody),
        (status = 422, description = "Paging out of range, or a control character in a filter", body = ErrorBody),
    )
)]
async fn list_clusters(
    State(state): State<AppState>,
    Query(paging): Query<PageQuery>,
    Query(filter): Query<ClusterFilter>,
) -> Result<Json<Page<Cluster>>> {
    let window = window(paging)?;
    for (field, value) in [
        ("name", &filter.name),
        ("business_line", &filter.business_line),
    ] {
        if let Some(value) = value {
            validate::filter(field, value)?;
        }
    }
    let query = store::ClusterQuery {
        name_contains: filter
            .name
            .filter(|n| !n.is_empty())
            .map(|n| n.to_lowercase()),
        business_line: filter.business_line.filter(|b| !b.is_empty()),
    };
    let (items, total) = state.store.list_clusters(&query, window).await?;
    Ok(Json(page(
        items.into_iter().map(to_api).collect(),
        total,
        paging,
    )))
}

/// Create a cluster.
#[utoipa::path(
    post, path = "/clusters", tag = "clusters",
    request_body = ClusterInput,
    responses(
        (status = 201, description = "Created", body = Cluster),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_cluster(
    State(state): State<AppState>,
    Json(input): Json<ClusterInput>,
) -> Result<(StatusCode, Json<Cluster>)> {
    let change = orchestration::cluster_change(input)?;
    let cluster = state.store.create_cluster(&change).await?;
    Ok((StatusCode::CREATED, Json(to_api(cluster))))
}

/// Get one cluster.
#[utoipa::path(
    get, path = "/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 200, description = "The cluster", body = Cluster),
        (status = 404, description = "No such cluster", body = ErrorBody),
    )
)]
async fn get_cluster(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<Cluster>> {
    Ok(Json(to_api(state.store.cluster(id).await?)))
}

/// Replace a cluster's fields.
#[utoipa::path(
    put, path = "/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    request_body = ClusterInput,
    responses(
        (status = 200, description = "The updated cluster", body = Cluster),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn update_cluster(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
    Json(input): Json<ClusterInput>,
) -> Result<Json<Cluster>> {
    let change = orchestration::cluster_change(input)?;
    Ok(Json(to_api(state.store.update_cluster(id, &change).await?)))
}

/// Delete a cluster; refused while services belong to it.
#[utoipa::path(
    delete, path = "/clusters/{id}", tag = "clusters",
    params(("id" = i64, Path, description = "Cluster id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such cluster", body = ErrorBody),
        (status = 409, description = "Still in use; the message says by what", body = ErrorBody),
    )
)]
async fn delete_cluster(
    State(state): State<AppState>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_cluster(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
