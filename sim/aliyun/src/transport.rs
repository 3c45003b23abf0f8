//! Connections that a handler can sever, for "the reply was lost after the
//! side effect" (reference §5.6): the handler marks its connection, and the
//! response hyper then tries to write fails, so hyper drops the socket
//! without having sent a byte of it — the client sees the connection close
//! before any HTTP response, a transport error, as with a real lost reply.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// A TCP listener whose connections carry a [`Severer`].
#[derive(Debug)]
pub(crate) struct SeverableListener(pub(crate) TcpListener);

impl Listener for SeverableListener {
    type Io = SeverableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    return (
                        SeverableStream {
                            stream,
                            severed: Arc::default(),
                        },
                        addr,
                    );
                }
                // Out of file descriptors and the like: wait rather than spin.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// An accepted connection that fails every operation once severed.
#[derive(Debug)]
pub(crate) struct SeverableStream {
    stream: TcpStream,
    severed: Arc<AtomicBool>,
}

impl SeverableStream {
    fn is_severed(&self) -> bool {
        self.severed.load(Ordering::Acquire)
    }
}

fn severed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "reply dropped by fault injection",
    )
}

impl AsyncRead for SeverableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SeverableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_severed() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Handed to handlers (as connect info): severs the connection the request
/// came on.
#[derive(Clone, Debug)]
pub(crate) struct Severer(Arc<AtomicBool>);

impl Severer {
    pub(crate) fn sever(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, SeverableListener>> for Severer {
    fn connect_info(stream: IncomingStream<'_, SeverableListener>) -> Self {
        Self(Arc::clone(&stream.io().severed))
    }
}
