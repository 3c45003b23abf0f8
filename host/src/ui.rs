//! Serves the web UI: the static files `scripts/build-ui` produces (a
//! client-side Leptos app, see docs/adr/0002-ui-rendering.md). Any path that
//! is not a file gets `index.html`, so the app's own routes survive a reload.
//!
//! `scripts/build-ui` names the app's assets after their content and puts
//! them under `static/`, so a name never changes meaning: those are cached
//! for a year without revalidation, and a missing one is a 404, never the
//! SPA page. Everything else (`index.html`, which names the current assets,
//! and the deep-link fallback) is revalidated on every load. Every file is
//! also built as `.br` and `.gz`, served when the request's
//! `Accept-Encoding` allows it.

use std::path::PathBuf;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::{Next, from_fn_with_state},
    response::{Html, IntoResponse, Response},
};
use tower_http::services::{ServeDir, ServeFile};

/// The path prefix of the content-hashed assets (`<ui_dir>/static`).
const HASHED_PREFIX: &str = "/static";

/// For content-hashed assets: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// For everything else: the browser asks every time (a 304 when unchanged),
/// so a new build is seen on the next load.
const REVALIDATE: &str = "no-cache";

/// A router whose fallback answers every path no other route claims.
pub fn routes(ui_dir: Option<PathBuf>) -> Router<crate::AppState> {
    match ui_dir {
        Some(dir) => {
            let index = ServeFile::new(dir.join("index.html"))
                .precompressed_br()
                .precompressed_gzip();
            let hashed = ServeDir::new(dir.join("static"))
                .precompressed_br()
                .precompressed_gzip();
            let pages = ServeDir::new(&dir)
                .append_index_html_on_directories(true)
                .precompressed_br()
                .precompressed_gzip()
                .fallback(index);
            Router::new()
                .nest_service(HASHED_PREFIX, hashed)
                .layer(from_fn_with_state(IMMUTABLE, cache_for))
                .merge(
                    Router::new()
                        .fallback_service(pages)
                        .layer(from_fn_with_state(REVALIDATE, cache_for)),
                )
        }
        None => Router::new().fallback(not_built),
    }
}

/// Sets how long a browser may keep a file (`policy` for a success, no
/// caching for an error), and that the body depends on `Accept-Encoding`.
async fn cache_for(
    axum::extract::State(policy): axum::extract::State<&'static str>,
    req: Request,
    next: Next,
) -> Response {
    let mut res = next.run(req).await;
    let policy = if res.status().is_success() || res.status() == StatusCode::NOT_MODIFIED {
        policy
    } else {
        "no-store"
    };
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    // Caches between here and the browser must not hand a brotli body to a
    // client that did not ask for one.
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    res
}

async fn not_built() -> impl IntoResponse {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Html(
            "<!doctype html><title>DCP</title><h1>DCP</h1>\
             <p>The web UI has not been built. Run <code>scripts/build-ui</code> \
             (or start DCP with <code>scripts/run</code>), or pass <code>--ui-dir</code>.</p>\
             <p>The API is up: see <a href=\"/api/docs\">/api/docs</a>.</p>",
        ),
    )
}
