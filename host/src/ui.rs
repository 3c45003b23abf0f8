//! Serves the web UI: the static files `scripts/build-ui` produces (a
//! client-side Leptos app, see docs/adr/0002-ui-rendering.md). Any path that
//! is not a file gets `index.html`, so the app's own routes survive a reload.

use std::path::PathBuf;

use axum::{
    Router,
    http::StatusCode,
    response::{Html, IntoResponse},
};
use tower_http::services::{ServeDir, ServeFile};

/// A router whose fallback answers every path no other route claims.
pub fn routes(ui_dir: Option<PathBuf>) -> Router<crate::AppState> {
    match ui_dir {
        Some(dir) => {
            let index = dir.join("index.html");
            Router::new().fallback_service(
                ServeDir::new(&dir)
                    .append_index_html_on_directories(true)
                    .fallback(ServeFile::new(index)),
            )
        }
        None => Router::new().fallback(not_built),
    }
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
