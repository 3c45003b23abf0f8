//! Logs, request ids and Prometheus metrics.
//!
//! Every request runs inside a `request` span carrying its request id and
//! correlation id, so every log line written while serving it names both.
//! The correlation id is accepted from the caller (or defaults to the request
//! id) so one id can follow work across DCP and the systems around it.

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method},
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing::Instrument;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// The header carrying a request's own id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The header carrying an id shared by every request of one piece of work.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Installs the global log subscriber: `RUST_LOG` filters (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second call (tests starting several apps) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => registry.with(fmt::layer().with_target(false)).try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
}

/// A request's ids, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestIds {
    /// Unique to this request.
    pub request_id: String,
    /// Shared by related requests; the request id unless the caller sent one.
    pub correlation_id: String,
}

/// Accepts or generates the request and correlation ids, runs the request in
/// a span naming them, and returns them as response headers.
pub async fn request_ids(mut req: Request, next: Next) -> Response {
    let request_id =
        caller_id(&req, &REQUEST_ID).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let correlation_id = caller_id(&req, &CORRELATION_ID).unwrap_or_else(|| request_id.clone());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        correlation_id = %correlation_id,
        method = %req.method(),
        path = %req.uri().path(),
    );
    req.extensions_mut().insert(RequestIds {
        request_id: request_id.clone(),
        correlation_id: correlation_id.clone(),
    });
    let mut res = next.run(req).instrument(span).await;
    for (name, value) in [(REQUEST_ID, request_id), (CORRELATION_ID, correlation_id)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            res.headers_mut().insert(name, value);
        }
    }
    res
}

/// A caller-supplied id, if it is a sane token (printable ASCII, ≤ 128 bytes);
/// anything else is replaced rather than echoed into logs.
fn caller_id(req: &Request, header: &HeaderName) -> Option<String> {
    let value = req.headers().get(header)?.to_str().ok()?;
    let sane =
        !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_graphic());
    sane.then(|| value.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// What the SSH transport counts: how often it logs in (a connection costs
/// the host a key exchange and a process; a pooled one is reused), how many
/// connections it holds, and the sessions (commands, uploads) it opens.
#[derive(Debug, Clone, Default)]
pub struct SshMetrics {
    connections: Family<OutcomeLabels, Counter>,
    open: Gauge,
    sessions: Counter,
    hosts: Gauge,
}

impl SshMetrics {
    /// A login attempt ended: `ok`, or not.
    pub fn connected(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.connections
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        if ok {
            self.open.inc();
        }
    }

    /// A connection [`SshMetrics::connected`] counted is gone.
    pub fn closed(&self) {
        self.open.dec();
    }

    /// A session was opened on a connection.
    pub fn session(&self) {
        self.sessions.inc();
    }

    /// The pool keeps a place for `n` hosts now.
    pub fn hosts(&self, n: usize) {
        self.hosts.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// The process's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    in_flight: Gauge,
    ssh: SshMetrics,
    // Encoding needs `&mut String` and the registry is shared; a mutex keeps
    // two scrapes from interleaving.
    render_lock: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with DCP's HTTP and SSH metrics.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dcp");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let in_flight = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            latency.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served now",
            in_flight.clone(),
        );
        let ssh = SshMetrics::default();
        registry.register(
            "ssh_connections",
            "SSH logins attempted, by outcome (ok, failed)",
            ssh.connections.clone(),
        );
        registry.register(
            "ssh_connections_open",
            "SSH connections held now, in use or pooled",
            ssh.open.clone(),
        );
        registry.register(
            "ssh_sessions",
            "SSH sessions opened (commands, uploads, signals)",
            ssh.sessions.clone(),
        );
        registry.register(
            "ssh_hosts_pooled",
            "Hosts (address, port, user and credential) the SSH pool keeps a place for now",
            ssh.hosts.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            in_flight,
            ssh,
            render_lock: Mutex::new(()),
        }
    }

    /// The SSH transport's counters, registered here.
    #[must_use]
    pub fn ssh(&self) -> SshMetrics {
        self.ssh.clone()
    }

    /// The metrics in the Prometheus text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let _guard = self
            .render_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }

    fn observe(&self, method: &Method, route: String, status: u16, seconds: f64) {
        let labels = RequestLabels {
            method: method_label(method).to_owned(),
            route,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency.get_or_create(&labels).observe(seconds);
    }
}

/// The method as a label: the standard ones by name, any other as `other`,
/// so made-up methods cannot create series without end.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", Method::as_str)
}

/// Marks which route served a request, for [`record_metrics`]. Installed with
/// `route_layer`, where the matched route is known.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(route) = route {
        res.extensions_mut().insert(route);
    }
    res
}

/// Counts requests and their latency by method, route template and status.
pub async fn record_metrics(
    State(metrics): State<Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    metrics.in_flight.inc();
    let res = next.run(req).await;
    metrics.in_flight.dec();
    // Unmatched paths share one label so scanners cannot blow up the series count.
    let route = res
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    metrics.observe(
        &method,
        route,
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_and_paths_share_bounded_series() {
        let metrics = Metrics::new();
        for i in 0..300 {
            let method = Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            metrics.observe(&method, "unmatched".to_owned(), 404, 0.001);
        }
        metrics.observe(&Method::GET, "unmatched".to_owned(), 404, 0.001);
        let text = metrics.render();
        let series = text
            .lines()
            .filter(|l| l.starts_with("dcp_http_requests_total{"))
            .count();
        assert_eq!(series, 2, "{text}");
        assert!(text.contains("method=\"other\""), "{text}");
    }
}
