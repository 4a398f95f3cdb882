//! The simulator's own accept loop: hyper HTTP/1 with upgrades (for the notifications
//! WebSocket), the peer address as `ConnectInfo`, and a per-connection kill switch so that a
//! fault with `status: 0` can drop the connection without answering.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Drops the connection that carried the request (request extension).
#[derive(Debug, Clone)]
pub(crate) struct ConnectionKill(Arc<Notify>);

impl ConnectionKill {
    /// Closes the connection at once, without an answer.
    pub fn kill(&self) {
        self.0.notify_one();
    }
}

/// Accepts connections until `shutdown`; each connection runs on `tasks`.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let (stream, remote) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::warn!(error = %err, "simulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let kill = Arc::new(Notify::new());
            let service = {
                let kill = kill.clone();
                hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectionKill(kill.clone()));
                    req.extensions_mut().insert(ConnectInfo(remote));
                    router.clone().oneshot(req.map(Body::new))
                })
            };
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, %remote, "simulator: connection ended with an error");
                    }
                }
                () = kill.notified() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The peer of a request, as inserted by [`serve`].
pub(crate) type Peer = ConnectInfo<SocketAddr>;

/// `host:port` reachable from this machine for `addr` (the loopback address of its family
/// when `addr` is unspecified).
pub(crate) fn loopback_authority(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() => match ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        },
        ip => ip,
    };
    SocketAddr::new(ip, addr.port()).to_string()
}
