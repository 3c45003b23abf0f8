//! `/api/v1/users`: the users and their login lock-outs, for administrators.

use axum::{Extension, extract::State};
use dcp_api_types::{ErrorBody, Page, PageQuery, UserStatus};
use time::OffsetDateTime;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::auth::{self, Principal};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(unlock_user))
}

fn to_api(status: auth::UserStatus) -> UserStatus {
    UserStatus {
        id: status.user.id,
        username: status.user.username,
        role: status.user.role,
        failed_logins: status.lock.failures,
        locked_until: status
            .lock
            .locked_for
            .map(|left| rfc3339(OffsetDateTime::now_utc() + left)),
    }
}

/// List the users, with failed logins and lock-outs (administrators only).
#[utoipa::path(
    get, path = "/users", tag = "users",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of users, by id", body = Page<UserStatus>),
        (status = 403, description = "The caller is not an administrator", body = ErrorBody),
        (status = 422, description = "`page` or `per_page` out of range", body = ErrorBody),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<UserStatus>>> {
    let (users, total) = state.auth.users(&me.user, window(paging)?).await?;
    Ok(Json(page(
        users.into_iter().map(to_api).collect(),
        total,
        paging,
    )))
}

/// Lift a user's login lock-out and forget their failed logins
/// (administrators only). Addresses stay throttled on their own.
#[utoipa::path(
    delete, path = "/users/{id}/lock", tag = "users",
    params(("id" = i64, Path, description = "User id")),
    responses(
        (status = 200, description = "Unlocked; the user as they are now", body = UserStatus),
        (status = 403, description = "The caller is not an administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
async fn unlock_user(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<Json<UserStatus>> {
    Ok(Json(to_api(state.auth.unlock(&me.user, id).await?)))
}
