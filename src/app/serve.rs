//! The accept loop of one server thread: HTTP/1.1 connections served by hyper with the gateway
//! router, bounded and timed so that slow or idle clients cannot pin resources.
//!
//! - every connection is `TCP_NODELAY`;
//! - headers must arrive within `header_read_timeout` — which also closes a keep-alive
//!   connection idle for that long between requests (slowloris, forgotten sockets);
//! - at most `max_connections` connections across all threads: beyond, new ones are closed at
//!   once instead of waiting in the backlog;
//! - accept errors (e.g. out of file descriptors) back off instead of spinning;
//! - connection upgrades (WebSocket) are supported;
//! - on `stop_accepting`, the listener closes, idle connections are closed, and requests in
//!   flight complete (hyper's graceful shutdown); `hard_stop` abandons whatever is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub(super) struct ConnectionLimits {
    /// Headers must arrive within this; also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Connections open at once across all server threads.
    pub max_connections: usize,
    /// Shared count of open connections.
    pub open: Arc<AtomicUsize>,
}

/// Pause after a failed `accept` (typically EMFILE) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `listener` until `stop_accepting`, then drains its connections until they are done
/// or `hard_stop` fires.
pub(super) async fn serve(
    listener: TcpListener,
    router: super::dispatch::Dispatch,
    limits: ConnectionLimits,
    stop_accepting: CancellationToken,
    hard_stop: CancellationToken,
) {
    let connections = TaskTracker::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    loop {
        let (tcp, remote) = tokio::select! {
            biased;
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if limits.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            limits.open.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(%remote, "connection limit reached; closing the new connection");
            drop(tcp);
            continue;
        }
        let open = OpenConnection(limits.open.clone());
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stop = stop_accepting.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    // Finish the request in flight (if any), then close; idle ones close now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = hard_stop.cancelled() => {}
    }
}

/// Binds `count` listening sockets on `addr` sharing one port (`SO_REUSEPORT`): the first binds
/// (port 0 picks a free port), the others bind to the port it got.
///
/// # Errors
/// When the address cannot be bound.
pub fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(bind_one(bound)?);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}
