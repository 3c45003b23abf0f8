//! `/api/v1/tokens`: the caller's personal API tokens.

use axum::{Extension, extract::State, http::StatusCode};
use dcp_api_types::{CreatedToken, ErrorBody, Page, PageQuery, Token, TokenInput};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    AppState, Result,
    extract::{Id, Json, Path, Query, page, window},
    rfc3339,
};
use crate::{auth::Principal, store::TokenRecord, validate};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tokens, create_token))
        .routes(routes!(revoke_token))
}

fn to_api(t: TokenRecord) -> Token {
    Token {
        id: t.id,
        name: t.name,
        prefix: t.prefix,
        created_at: rfc3339(t.created_at),
        last_used_at: t.last_used_at.map(rfc3339),
    }
}

/// List the caller's API tokens, newest first (never their secrets).
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    params(PageQuery),
    responses((status = 200, description = "One page of tokens", body = Page<Token>))
)]
async fn list_tokens(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Query(paging): Query<PageQuery>,
) -> Result<Json<Page<Token>>> {
    let (items, total) = state.store.list_tokens(me.user.id, window(paging)?).await?;
    Ok(Json(page(
        items.into_iter().map(to_api).collect(),
        total,
        paging,
    )))
}

/// Create an API token. The response is the only time the secret is shown.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    request_body = TokenInput,
    responses(
        (status = 201, description = "Created; `token` is shown this once", body = CreatedToken),
        (status = 422, description = "A field breaks a rule", body = ErrorBody),
    )
)]
async fn create_token(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Json(input): Json<TokenInput>,
) -> Result<(StatusCode, Json<CreatedToken>)> {
    let name = input.name.trim();
    validate::name("name", name, 64)?;
    let (record, token) = state.auth.create_token(me.user.id, name).await?;
    tracing::info!(user = %me.user.username, token_id = record.id, "API token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: record.id,
            name: record.name,
            token,
        }),
    ))
}

/// Revoke one of the caller's API tokens; it stops working at once.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = i64, Path, description = "Token id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token of yours", body = ErrorBody),
    )
)]
async fn revoke_token(
    State(state): State<AppState>,
    Extension(me): Extension<Principal>,
    Path(Id { id }): Path<Id>,
) -> Result<StatusCode> {
    state.store.delete_token(me.user.id, id).await?;
    tracing::info!(user = %me.user.username, token_id = id, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
