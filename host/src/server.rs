//! The HTTP server: the accept loop and what it allows a client.
//!
//! A public control plane meets clients that are slow on purpose. Each
//! connection holds one of `max_connections` slots (past them, new clients
//! wait in the kernel's listen backlog); a client has `header_timeout` to
//! send its headers — counted from when the connection is ready for a
//! request, so an idle keep-alive connection is closed after it too — and
//! `body_timeout` to send its whole body (408, then the connection closes).
//! Together these bound how long a dripping or idle client holds a slot.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
    time::Sleep,
};
use tower::ServiceExt as _;

/// What the server allows each client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's headers; also the idle keep-alive timeout.
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes,
/// then stops accepting, lets in-flight requests finish, closes idle
/// connections, and returns once every connection is gone.
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Every connection holds a receiver of `open`; `closed()` resolves when
    // the last is dropped. `stop` tells connections to finish gracefully.
    let (open, open_rx) = watch::channel(());
    let (stop, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !is_per_connection(&e) {
                        // Out of file descriptors, most likely: wait for
                        // some to close rather than spin.
                        tracing::warn!(error = %e, "accepting connections failed; pausing");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(100)) => {},
                            () = &mut shutdown => break,
                        }
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut().insert(ConnectInfo(remote));
            app.clone().oneshot(req.map(Body::new))
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stop_rx = stop_rx.clone();
        let open_rx = open_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _open = open_rx;
            tokio::pin!(connection);
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        tracing::debug!(client = %remote, error = %e, "connection ended");
                    }
                }
                () = async {
                    // The guard `wait_for` returns must not live across awaits.
                    let _ = stop_rx.wait_for(|stop| *stop).await;
                } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open_rx);
    open.closed().await;
}

/// Accept errors about one connection (the client gave up early), as
/// opposed to the listener's own trouble.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Middleware: a request body must arrive whole within `limit`, counted
/// from its headers; past it the handler's read fails and the answer is
/// 408 with `Connection: close`. Requests without a body are not timed.
pub(crate) async fn body_deadline(
    State(limit): State<Duration>,
    req: Request,
    next: Next,
) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(limit)),
            expired: Arc::clone(&expired),
        })
    });
    let res = next.run(req).await;
    if expired.load(Ordering::Relaxed) {
        return crate::api::Error::BodyTimeout(limit.as_secs()).into_response();
    }
    res
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl http_body::Body for Deadline {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.sleep.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
