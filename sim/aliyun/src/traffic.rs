//! The SLB data plane: every running listener of an active load balancer
//! really listens on the balancer's address and port and spreads traffic
//! over its backends — per request for HTTP (a reverse proxy adding
//! `X-Forwarded-For`), per connection for TCP — by its scheduler, to the
//! instances' real addresses. Health checks probe those addresses (HTTP
//! `HEAD` or a TCP connect) on the listener's interval and thresholds; with
//! checks on, only backends found `normal` get traffic. A white list, when
//! open, closes connections from anyone it does not name.
//!
//! Stopping a listener stops its accepting at once; requests in flight
//! finish (that is what lets a caller drain a backend it removed: new
//! requests stop going there the moment the removal is answered).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State, connect_info::Connected},
    http::{HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
    serve::{IncomingStream, Listener as _},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use crate::{
    balancers::{Health, HealthCheck, Protocol, Verdict},
    cloud::{Cloud, lock},
    world::InstanceStatus,
};

/// Connections one listener serves at once; more wait to be accepted.
const CONNECTIONS_MAX: usize = 4096;
/// How long a connect to a backend may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a proxied HTTP request may take (Aliyun's `RequestTimeout`
/// default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Health probes of one listener in flight at once.
const PROBES_MAX: usize = 64;

/// The listeners that listen now, by (load balancer, port).
#[derive(Debug, Default)]
pub(crate) struct Plane {
    open: Mutex<HashMap<(String, u16), Open>>,
}

#[derive(Debug)]
struct Open {
    stop: CancellationToken,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener's scheduling state: smooth weighted round robin's current
/// weights, round robin's cursor, and the connections open per backend
/// (for least connections).
#[derive(Debug, Default)]
struct Spread {
    current: Mutex<HashMap<String, i64>>,
    cursor: AtomicUsize,
    active: Mutex<HashMap<String, usize>>,
}

/// One open connection or request to a backend, counted while it lives.
struct Active {
    spread: Arc<Spread>,
    server: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut active = lock(&self.spread.active);
        if let Some(n) = active.get_mut(&self.server) {
            *n = n.saturating_sub(1);
        }
    }
}

/// A backend that can take traffic.
struct Candidate {
    server: String,
    weight: u32,
    addr: SocketAddr,
}

impl Cloud {
    /// Starts listening for listener `port` of balancer `lb` (replacing any
    /// earlier socket of it). Answers whether it listens.
    pub(crate) async fn open_listener(self: &Arc<Self>, lb: &str, port: u16) -> bool {
        let Some((address, protocol)) = ({
            let world = lock(&self.world);
            world.balancer(lb).and_then(|b| {
                b.listener(port)
                    .map(|l| (b.address, l.protocol))
                    .filter(|_| b.status == "active")
            })
        }) else {
            return false;
        };
        self.close_listener(lb, port);
        let socket = match TcpListener::bind((address, port)).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!("listener {address}:{port} of {lb}: {e}");
                return false;
            }
        };
        let stop = self.closing.child_token();
        let spread = Arc::new(Spread::default());
        let way = Way {
            cloud: Arc::clone(self),
            lb: lb.to_owned(),
            port,
            spread,
        };
        match protocol {
            Protocol::Http => tokio::spawn(serve_http(way.clone(), socket, stop.clone())),
            Protocol::Tcp => tokio::spawn(serve_tcp(way.clone(), socket, stop.clone())),
        };
        tokio::spawn(check_health(way, stop.clone()));
        lock(&self.traffic.open).insert((lb.to_owned(), port), Open { stop });
        true
    }

    /// Stops listener `port` of `lb` from accepting; what is in flight ends
    /// on its own.
    pub(crate) fn close_listener(&self, lb: &str, port: u16) {
        lock(&self.traffic.open).remove(&(lb.to_owned(), port));
    }

    /// Stops every listener of `lb` from accepting.
    pub(crate) fn close_listeners(&self, lb: &str) {
        lock(&self.traffic.open).retain(|(b, _), _| b != lb);
    }
}

/// Where one listener's traffic goes, as its tasks share it.
#[derive(Clone)]
struct Way {
    cloud: Arc<Cloud>,
    lb: String,
    port: u16,
    spread: Arc<Spread>,
}

impl Way {
    /// Whether a client at `ip` gets in.
    fn admits(&self, ip: std::net::IpAddr) -> bool {
        let std::net::IpAddr::V4(ip) = ip else {
            return false;
        };
        let world = lock(&self.cloud.world);
        world
            .balancer(&self.lb)
            .and_then(|b| b.listener(self.port))
            .is_some_and(|l| l.admits(ip))
    }

    /// The backend the next connection or request goes to, by the
    /// listener's scheduler, counted as active until the guard drops.
    fn pick(&self) -> Option<(SocketAddr, Active, bool)> {
        let (candidates, scheduler, forwarded_for) = {
            let world = lock(&self.cloud.world);
            let lb = world.balancer(&self.lb)?;
            let listener = lb.listener(self.port)?;
            if lb.status != "active" {
                return None;
            }
            let candidates: Vec<Candidate> = lb
                .backends
                .iter()
                .filter(|b| b.weight > 0)
                .filter(|b| {
                    !listener.health.enabled
                        || lb.health_of(self.port, &b.server_id) == Health::Normal
                })
                .filter_map(|b| {
                    let instance = world.instance(&b.server_id)?;
                    (instance.status == InstanceStatus::Running && !instance.deleting).then(|| {
                        Candidate {
                            server: b.server_id.clone(),
                            weight: b.weight,
                            addr: SocketAddr::from((instance.private_ip, listener.backend_port)),
                        }
                    })
                })
                .collect();
            (
                candidates,
                listener.scheduler.clone(),
                listener.x_forwarded_for != "off",
            )
        };
        let chosen = match scheduler.as_str() {
            "rr" => {
                let n = self.spread.cursor.fetch_add(1, Ordering::Relaxed);
                candidates.get(n % candidates.len().max(1))
            }
            "wlc" => {
                let active = lock(&self.spread.active);
                let load = |c: &Candidate| active.get(&c.server).copied().unwrap_or(0);
                // Fewest connections per unit of weight, compared without
                // division: a/wa < b/wb ⇔ a·wb < b·wa.
                candidates.iter().min_by(|a, b| {
                    (load(a) as u64 * u64::from(b.weight))
                        .cmp(&(load(b) as u64 * u64::from(a.weight)))
                })
            }
            _ => {
                // Smooth weighted round robin (nginx's): no backend gets a
                // burst, each its share in every cycle.
                let total: i64 = candidates.iter().map(|c| i64::from(c.weight)).sum();
                let mut current = lock(&self.spread.current);
                current.retain(|server, _| candidates.iter().any(|c| &c.server == server));
                for c in &candidates {
                    *current.entry(c.server.clone()).or_default() += i64::from(c.weight);
                }
                let weight = |c: &Candidate| current.get(&c.server).copied().unwrap_or(0);
                // The first of the heaviest, so equal weights take turns in order.
                let best = candidates.iter().rev().max_by_key(|c| weight(c));
                if let Some(b) = best {
                    *current.entry(b.server.clone()).or_default() -= total;
                }
                best
            }
        }?;
        *lock(&self.spread.active)
            .entry(chosen.server.clone())
            .or_default() += 1;
        Some((
            chosen.addr,
            Active {
                spread: Arc::clone(&self.spread),
                server: chosen.server.clone(),
            },
            forwarded_for,
        ))
    }
}

/// A listening socket that closes connections the white list refuses as
/// soon as they are accepted, and holds at most `CONNECTIONS_MAX` open.
struct Gate {
    socket: TcpListener,
    way: Way,
    slots: Arc<Semaphore>,
}

impl Gate {
    fn new(socket: TcpListener, way: Way) -> Self {
        Self {
            socket,
            way,
            slots: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
        }
    }
}

impl axum::serve::Listener for Gate {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                std::future::pending::<()>().await;
                continue;
            };
            match self.socket.accept().await {
                Ok((stream, peer)) if self.way.admits(peer.ip()) => {
                    return (
                        Held {
                            stream,
                            _slot: slot,
                        },
                        peer,
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.socket.local_addr()
    }
}

/// An accepted connection, holding its place among the listener's
/// connections until it closes.
struct Held {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An HTTP listener: a reverse proxy, one backend per request.
async fn serve_http(way: Way, socket: TcpListener, stop: CancellationToken) {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let client: Client<HttpConnector, Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let router = Router::new()
        .fallback(forward)
        .with_state((way.clone(), client));
    let gate = Gate::new(socket, way);
    if let Err(e) = axum::serve(gate, router.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!("HTTP listener: {e}");
    }
}

/// Headers that belong to one hop, never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client's address, as a listener's requests see it.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, Gate>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Gate>) -> Self {
        Self(*stream.remote_addr())
    }
}

async fn forward(
    State((way, client)): State<(Way, Client<HttpConnector, Body>)>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    mut request: Request,
) -> Response {
    let Some((backend, _active, forwarded_for)) = way.pick() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no backend server of this listener can take the request\n",
        )
            .into_response();
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = format!("http://{backend}{path}").parse::<Uri>() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if forwarded_for {
        let chain = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, client.request(request)).await {
        Ok(Ok(answer)) => {
            let (mut parts, body) = answer.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(*name);
            }
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::debug!("to {backend}: {e}");
            (StatusCode::BAD_GATEWAY, "the backend server failed\n").into_response()
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "the backend server did not answer in time\n",
        )
            .into_response(),
    }
}

/// A TCP listener: each connection spliced to one backend.
async fn serve_tcp(way: Way, socket: TcpListener, stop: CancellationToken) {
    let mut gate = Gate::new(socket, way);
    loop {
        let (mut client, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = gate.accept() => accepted,
        };
        let way = gate.way.clone();
        tokio::spawn(async move {
            let Some((backend, _active, _)) = way.pick() else {
                return;
            };
            let Ok(Ok(mut server)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await
            else {
                return;
            };
            // A stopped listener's connections finish; the simulator's
            // own shutdown ends them.
            tokio::select! {
                () = way.cloud.closing.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}

/// One round of probes every interval while the listener listens; the
/// verdicts land in the world, where scheduling and DescribeHealthStatus
/// read them.
async fn check_health(way: Way, stop: CancellationToken) {
    loop {
        let plan = {
            let world = lock(&way.cloud.world);
            let Some(lb) = world.balancer(&way.lb) else {
                return;
            };
            let Some(listener) = lb.listener(way.port) else {
                return;
            };
            let targets: Vec<(String, Option<Ipv4Addr>)> = lb
                .backends
                .iter()
                .map(|b| {
                    let ip = world
                        .instance(&b.server_id)
                        .filter(|i| i.status == InstanceStatus::Running && !i.deleting)
                        .map(|i| i.private_ip);
                    (b.server_id.clone(), ip)
                })
                .collect();
            (listener.health.clone(), listener.backend_port, targets)
        };
        let (check, backend_port, targets) = plan;
        let interval = Duration::from_secs(u64::from(check.interval_secs.max(1)));
        if check.enabled {
            let results = probe_all(&check, backend_port, targets).await;
            let mut world = lock(&way.cloud.world);
            if let Some(lb) = world.balancer_mut(&way.lb) {
                let port = way.port;
                let servers: Vec<String> =
                    lb.backends.iter().map(|b| b.server_id.clone()).collect();
                lb.health
                    .retain(|(p, server), _| *p != port || servers.contains(server));
                for (server, passed) in results {
                    if servers.contains(&server) {
                        lb.health
                            .entry((port, server))
                            .or_insert(Verdict::NONE)
                            .record(passed, &check);
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

async fn probe_all(
    check: &HealthCheck,
    backend_port: u16,
    targets: Vec<(String, Option<Ipv4Addr>)>,
) -> Vec<(String, bool)> {
    let slots = Arc::new(Semaphore::new(PROBES_MAX));
    let mut probes = JoinSet::new();
    for (server, ip) in targets {
        let (check, slots) = (check.clone(), Arc::clone(&slots));
        probes.spawn(async move {
            let _slot = slots.acquire_owned().await;
            let passed = match ip {
                Some(ip) => {
                    let port = check.connect_port.unwrap_or(backend_port);
                    probe(&check, SocketAddr::from((ip, port))).await
                }
                // A stopped or deleted instance fails its checks.
                None => false,
            };
            (server, passed)
        });
    }
    let mut results = Vec::new();
    while let Some(joined) = probes.join_next().await {
        if let Ok(result) = joined {
            results.push(result);
        }
    }
    results
}

/// One probe: a TCP connect, or an HTTP `HEAD` whose status must fall in
/// one of the classes the check accepts.
async fn probe(check: &HealthCheck, addr: SocketAddr) -> bool {
    let timeout = Duration::from_secs(u64::from(check.timeout_secs.max(1)));
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        if check.kind == Protocol::Tcp {
            return Some(true);
        }
        let host = if check.domain.is_empty() {
            addr.ip().to_string()
        } else {
            check.domain.clone()
        };
        let request = format!(
            "HEAD {} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: aliyun-sim-health-check\r\n\r\n",
            check.uri
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0_u8; 64];
        let n = stream.read(&mut head).await.ok()?;
        let line = String::from_utf8_lossy(&head[..n]);
        let status = line.split(' ').nth(1)?.chars().next()?;
        Some(
            check
                .http_codes
                .iter()
                .any(|c| c == &format!("http_{status}xx")),
        )
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}
