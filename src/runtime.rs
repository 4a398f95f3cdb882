//! The server's runtime layout: one single-threaded tokio runtime per core, each accepting on
//! its own listening socket bound to the shared port with `SO_REUSEPORT`.
//!
//! On this class of machine that layout served a data-action hop ≈ 1.3–1.8× faster than the
//! default work-stealing runtime (see `PERF-NOTES.md`): a request is accepted, served and its
//! upstream call made on one thread, with no cross-thread wake-ups. Everything shared across
//! threads (caches, breakers, metrics, the store) is `Send + Sync` and lives behind `Arc`s;
//! per-thread resources (HTTP connection pools) are picked with [`worker_index`].

use std::cell::Cell;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

thread_local! {
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the server thread running the caller, or `None` off the server threads
/// (background tasks, tests).
pub fn worker_index() -> Option<usize> {
    WORKER.with(Cell::get)
}

/// Marks the current thread as server thread `index`.
pub fn set_worker_index(index: usize) {
    WORKER.with(|w| w.set(Some(index)));
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
