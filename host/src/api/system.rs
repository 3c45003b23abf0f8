//! Health, readiness, metrics and the OpenAPI document.

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{Html, IntoResponse, Response},
};
use serde_json::json;
use subtle::ConstantTimeEq as _;

use super::{AppState, Error, Result};
use crate::auth;

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

/// The policy for the web UI and the API: scripts, styles and connections
/// from DCP itself only; `wasm-unsafe-eval` lets the Leptos app compile its
/// wasm; inline styles are allowed because the UI sets `style` attributes.
const CSP: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Swagger UI (`/api/docs`) starts from an inline script in a page DCP
/// ships verbatim (no user content in it) and draws images from data: URLs.
const DOCS_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the browser-hardening headers to every answer: a
/// Content-Security-Policy, no framing (clickjacking), no MIME sniffing and
/// no full URLs in `Referer` to other sites.
pub(super) async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path() == "/api/docs";
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    let csp = if docs { DOCS_CSP } else { CSP };
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    ] {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    res
}

/// Prometheus metrics in the text exposition format; with `metrics_token`
/// set, only for `Authorization: Bearer <metrics_token>`.
pub(super) async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse> {
    if let Some(expected) = &state.config.metrics_token {
        let given = super::session::bearer(&headers).ok_or(auth::Error::Missing)?;
        // Digests have one length, so the comparison's time tells nothing
        // about the token, not even its length.
        let matches = crate::sha256_hex(given.as_bytes())
            .as_bytes()
            .ct_eq(crate::sha256_hex(expected.as_bytes()).as_bytes());
        if !bool::from(matches) {
            return Err(auth::Error::InvalidToken.into());
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    ))
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
