//! Health, readiness, metrics and the OpenAPI document.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
};
use serde_json::json;

use super::{AppState, Error, Result};

/// The process is up.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers within two seconds.
pub(super) async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(e)) => Err(Error::Unavailable(e.to_string())),
        Err(_) => Err(Error::Unavailable(
            "the database did not answer within 2 s".into(),
        )),
    }
}

/// Prometheus metrics in the text exposition format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// The OpenAPI 3 document, generated from the handlers.
pub(super) async fn openapi_json(doc: Arc<utoipa::openapi::OpenApi>) -> impl IntoResponse {
    Json(doc.as_ref().clone())
}

/// Browsable API docs: Swagger UI (bundled into the UI directory from npm's
/// `swagger-ui-dist` by `scripts/build-ui`) over the OpenAPI document.
pub(super) async fn api_docs() -> Html<&'static str> {
    Html(include_str!("api_docs.html"))
}
