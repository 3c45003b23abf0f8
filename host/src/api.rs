//! The REST API under `/api/v1`, its OpenAPI document, and the health and
//! metrics endpoints.
//!
//! Conventions every module follows (see CONTRIBUTING.md):
//! - JSON only; bodies, queries and paths go through [`extract`], whose
//!   rejections are [`Error`]s, so every failure has the one error shape;
//! - list endpoints take `?page=&per_page=` and answer a `Page`;
//! - handlers are thin: rules live in the domain modules, state in the store.

mod builds;
mod clusters;
mod commands;
mod discovery;
pub mod error;
mod executions;
pub mod extract;
mod images;
mod load_balancers;
mod machines;
mod openapi;
mod overview;
mod plugins;
mod services;
mod session;
mod system;
mod tasks;
mod tokens;
mod users;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware::{from_fn, from_fn_with_state},
    routing::{any, get},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

pub use self::error::{Error, Result};
use crate::{AppState, telemetry, validate::Invalid};

impl From<Invalid> for Error {
    fn from(invalid: Invalid) -> Self {
        Self::Validation {
            field: invalid.field.into_owned(),
            message: invalid.message,
            also: invalid
                .also
                .into_iter()
                .map(|i| (i.field.into_owned(), i.message))
                .collect(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DCP",
        description = "DCP's REST API. Everything the web UI does goes through it.\n\n\
## Authentication\n\
Send a personal API token as `Authorization: Bearer <token>` (create one with \
`POST /api/v1/tokens` or in the UI's user menu), or log in with \
`POST /api/v1/session`, which sets the HTTP-only `dcp_session` cookie.\n\n\
## CSRF\n\
Cookie-authenticated requests that change state (anything but GET, HEAD, \
OPTIONS) must echo the `dcp_csrf` cookie — also returned as `csrf_token` by \
`POST` and `GET /api/v1/session` — in an `X-CSRF-Token` header \
(double-submit). Bearer-token requests need no CSRF token.\n\n\
## Errors\n\
Every failure answers `{\"error\": {\"code\", \"message\", \"field\"?, \"request_id\"?}}`: \
400 `malformed_json` / `invalid_parameter`, 401 `unauthorized`, 403 `forbidden`, \
404 `not_found`, 405, 408 `request_timeout` (the body did not arrive in time), \
409 `conflict`, 413 `payload_too_large`, 415, \
422 `validation_failed` (with the `field`), 429 `too_many_requests` (with \
`Retry-After`), 502 `upstream` (a cloud call failed; the \
message names the provider's code and request id), 5xx `internal` / `unavailable` \
(details only in the server log, under the `X-Request-Id`).\n\n\
## Lists\n\
`?page=` (from 1) and `?per_page=` (1–200, default 20); the answer is \
`{\"items\", \"total\", \"page\", \"per_page\"}` in a stable order.",
    ),
    tags(
        (name = "session", description = "Log in and out"),
        (name = "tokens", description = "Personal API tokens"),
        (name = "users", description = "Users and their login lock-outs (administrators)"),
        (name = "clusters", description = "Clusters: the top of cluster → service → pool → node"),
        (name = "plugins", description = "WebAssembly plugins: clouds, load balancers, remote-command modules"),
        (name = "commands", description = "Commands with typed parameters, and command groups"),
        (name = "executions", description = "Run commands on many hosts over SSH; trusted host keys"),
        (name = "orchestration", description = "Services, their pools and the pools' nodes"),
        (name = "machines", description = "Cloud accounts, machine templates, quotas, machines and the fleet history"),
        (name = "load-balancers", description = "A cloud account's own load balancers: listeners, white lists and backends' health, through the account's provider plugin"),
        (name = "tasks", description = "Task templates and tasks: expand, shrink, deploy and ad-hoc work on pools, followed live"),
        (name = "discovery", description = "Service discovery: balancer groups, units and nodes, upstreams and their members, bindings of pools, and the operation log"),
        (name = "images", description = "The image market: the registry DCP's images live in, its repositories, tags and manifests; image projects and their builds, with live logs"),
        (name = "overview", description = "Everything at a glance: fleet, pools' health, work under way, recent failures, quotas"),
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = []))
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A personal API token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "app_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-App-Key",
                "An app key (see /app-keys), for other systems' alterations",
            ))),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "dcp_session",
                "The browser session; writes also need X-CSRF-Token",
            ))),
        );
    }
}

/// The API routes and their OpenAPI document.
fn v1(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let protected = OpenApiRouter::new()
        .merge(clusters::router())
        .merge(tokens::router())
        .merge(plugins::router())
        .merge(commands::router())
        .merge(executions::router())
        .merge(machines::router())
        .merge(load_balancers::router())
        .merge(services::router())
        .merge(tasks::router())
        .merge(users::router())
        .merge(overview::router())
        .merge(discovery::router())
        .merge(images::router())
        .merge(builds::router())
        .route_layer(from_fn_with_state(state.clone(), session::require_auth));
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(
            "/api/v1",
            session::public_router()
                .merge(discovery::app_key_router(state))
                .merge(protected),
        )
        .split_for_parts();
    openapi::complete(&mut doc);
    (routes, doc)
}

/// The whole HTTP application: API, docs, health, metrics and the web UI.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = v1(&state);
    let openapi = Arc::new(openapi);
    // With an address of its own, /metrics is not on the public listener
    // (404 there, rather than the web UI's fallback page).
    let metrics = if state.config.metrics_bind.is_none() {
        get(system::metrics)
    } else {
        any(error::no_route)
    };
    Router::new()
        .route("/metrics", metrics)
        .merge(api)
        .route(
            "/api/v1/openapi.json",
            get(move || system::openapi_json(Arc::clone(&openapi))),
        )
        .route("/api/docs", get(system::api_docs))
        .route("/api", any(error::no_route))
        .route("/api/{*rest}", any(error::no_route))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .merge(crate::ui::routes(state.config.ui_dir()))
        .route_layer(from_fn(telemetry::tag_route))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::new())
        .layer(from_fn_with_state(
            Duration::from_secs(state.config.body_timeout_secs.max(1)),
            crate::server::body_deadline,
        ))
        .layer(from_fn(error::normalize))
        .layer(from_fn(system::security_headers))
        .layer(from_fn_with_state(
            Arc::clone(&state.metrics),
            telemetry::record_metrics,
        ))
        .layer(from_fn(telemetry::request_ids))
        .with_state(state)
}

/// The application for `metrics_bind`: `/metrics` (behind `metrics_token`
/// if set) and nothing else.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(system::metrics))
        .fallback(error::no_route)
        .layer(from_fn(error::normalize))
        .layer(from_fn(system::security_headers))
        .layer(from_fn(telemetry::request_ids))
        .with_state(state)
}

/// A timestamp as the API shows it: RFC 3339 in UTC.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}
