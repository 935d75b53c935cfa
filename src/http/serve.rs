//! The accept loop of both listeners, plain or TLS. `axum::serve` would be
//! shorter, but it runs hyper without a timer (so no header-read timeout)
//! and keeps every connection it is offered. Here each listener holds at
//! most `limits.max_connections` connections, closing newer ones at once,
//! and a connection that goes `limits.header_timeout` without a complete
//! request head (a slow header, an idle keep-alive connection, a TLS
//! handshake that never ends) is closed. Request bodies have their own
//! timeout in [`super::limits`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::tls::LiveTlsConfig;
use crate::metrics::Metrics;

/// Longest that stopping waits for open requests to finish.
const DRAIN: Duration = Duration::from_secs(30);

/// How one listener serves its connections.
pub struct Listener {
    /// `public` or `admin`: the metrics label.
    pub name: &'static str,
    /// The routes.
    pub router: Router,
    /// TLS, or plain HTTP when `None`.
    pub tls: Option<LiveTlsConfig>,
    /// Open connections at most.
    pub max_connections: usize,
    /// Longest wait for a complete request head (and for the TLS handshake).
    pub header_timeout: Duration,
    /// Counts open and refused connections.
    pub metrics: Arc<Metrics>,
}

/// Connections the kernel completes and queues for `accept` before it
/// drops new ones. `TcpListener::bind` asks for 128 (std's value): a burst
/// of more new connections than that (a few hundred CI jobs starting at
/// once) overflowed the queue, the kernel dropped their handshakes, and
/// each waited a second for the SYN to be sent again; a client that sent
/// its request and closed at once could be lost altogether, with its
/// request unseen and unaudited. The kernel caps it at `net.core.somaxconn`
/// (4096 on current kernels).
pub const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`ACCEPT_BACKLOG`]: every listener
/// stint opens (broker, agent, console, shipper, dev issuer) binds here.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted process can bind at once
    // while its old connections are still in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// Accepts on `socket` until `stop` turns true, then lets open requests
/// finish (at most [`DRAIN`]) and returns.
pub async fn serve(socket: TcpListener, listener: Listener, mut stop: watch::Receiver<bool>) -> std::io::Result<()> {
    let listener = Arc::new(listener);
    let max = u32::try_from(listener.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    loop {
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            // The guard `wait_for` returns is dropped at once: not held across an await.
            _ = stop.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) if transient(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::warn!(listener = listener.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        // Closing at once, before any byte is read, costs the broker nothing
        // and tells the client to go elsewhere.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            listener.metrics.connection_refused(listener.name);
            drop(stream);
            continue;
        };
        let listener = listener.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            listener.metrics.connection(listener.name, true);
            connection(stream, peer, &listener, stop).await;
            listener.metrics.connection(listener.name, false);
            drop(slot);
        });
    }
    drop(socket);
    // Every open connection holds a slot: all slots back means all closed.
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(max)).await;
    Ok(())
}

/// Accept errors that concern one connection only.
fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

async fn connection(stream: TcpStream, peer: SocketAddr, listener: &Listener, stop: watch::Receiver<bool>) {
    let _ = stream.set_nodelay(true);
    match &listener.tls {
        None => http(stream, peer, listener, stop).await,
        Some(tls) => {
            let handshake = tokio_rustls::TlsAcceptor::from(tls.current()).accept(stream);
            match tokio::time::timeout(listener.header_timeout, handshake).await {
                Ok(Ok(stream)) => http(stream, peer, listener, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 on one connection (ALPN offers nothing else).
async fn http<S>(stream: S, peer: SocketAddr, listener: &Listener, mut stop: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = TowerToHyperService::new(listener.router.clone());
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        // Each request runs in a task of its own, started as soon as its
        // head is read: hyper drops a request's future when its client
        // hangs up, and a flow cut off half-way could leave a denial (or an
        // issuance) unrecorded. So the work ends as if the client had waited.
        let work = tokio::spawn(hyper::service::Service::call(&router, request));
        async move {
            match work.await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::error!(%peer, error = %e, "a request's task failed");
                    let mut response = axum::response::Response::new(axum::body::Body::empty());
                    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    Ok(response)
                }
            }
        }
    });
    let mut builder = http1::Builder::new();
    // The timer is what makes hyper's header timeout work at all. It starts
    // when hyper waits for a request head, so it also ends idle keep-alive
    // connections.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(listener.header_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            // Finish the request in progress, if any, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
