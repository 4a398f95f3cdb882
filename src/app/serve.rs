//! The accept loop of one server thread: HTTP/1.1 connections served by hyper with the gateway
//! router, bounded and timed so that slow, idle or greedy clients cannot pin resources.
//!
//! - every connection is `TCP_NODELAY`;
//! - headers must arrive within `header_read_timeout` — which also closes a keep-alive
//!   connection idle for that long between requests (slowloris, forgotten sockets);
//! - a request's header block may hold at most `max_header_bytes` ([`HeadCapped`]): beyond,
//!   the connection answers 431 `headers.too.large` in the error shape and closes, and hyper's
//!   read buffer is capped near that size, so a connection's memory stays bounded while its
//!   headers arrive;
//! - at most `max_connections` connections across all threads, and at most
//!   `max_connections_per_client` from one client address: beyond, new ones are closed at once
//!   instead of waiting in the backlog, and other addresses are still served;
//! - the client's address is on every request (axum's `ConnectInfo<SocketAddr>`);
//! - accept errors (e.g. out of file descriptors) back off instead of spinning;
//! - connection upgrades (WebSocket) are supported;
//! - on `stop_accepting`, the listener closes, idle connections are closed, a connection that
//!   has sent only part of a request's head gets [`HEAD_GRACE`] to complete it and is closed
//!   otherwise, and requests in flight complete (hyper's graceful shutdown); `hard_stop`
//!   abandons whatever is left.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::error::{ApiError, ErrorCode};
use crate::telemetry::{FloodGate, RequestId};

/// Limits applied to every connection.
#[derive(Debug, Clone)]
pub(super) struct ConnectionLimits {
    /// Headers must arrive within this; also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// Connections open at once across all server threads.
    pub max_connections: usize,
    /// Shared count of open connections.
    pub open: Arc<AtomicUsize>,
    /// Largest header block of one request.
    pub max_header_bytes: usize,
    /// Connections open at once per client address (0 = no limit), across all threads.
    pub per_client: Arc<ClientConnections>,
    /// The flood rule for the lines written about refused connections.
    pub flood: Arc<FloodGate>,
}

/// A request on the wire when the shutdown begins gets this long to arrive whole; a connection
/// still holding part of a request's head after it is closed (it has nothing in flight).
pub(super) const HEAD_GRACE: Duration = Duration::from_millis(250);

/// Connections open per client address, shared by every server thread (touched once per
/// connection, never per request).
#[derive(Debug)]
pub(super) struct ClientConnections {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientConnections {
    /// At most `max` connections per address (0 = no limit).
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a connection slot of `ip`; `None` when it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.max == 0 {
            return Some(ClientSlot(None));
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot(Some((self.clone(), ip))))
    }
}

/// One connection's slot of its client address, given back when dropped.
struct ClientSlot(Option<(Arc<ClientConnections>, IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some((clients, ip)) = self.0.take() else {
            return;
        };
        let mut open = clients
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&ip);
            }
        }
    }
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
        // hyper's own cap (its 431 has no body) stays above ours, which answers first; it
        // bounds the read buffer of a connection whose head is arriving.
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192)
        .keep_alive(true);
    loop {
        let (tcp, remote) = tokio::select! {
            biased;
            () = stop_accepting.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    if let Some(suppressed) = limits.flood.admit(&"accept failed") {
                        tracing::warn!(error = %err, suppressed, "accept failed; backing off");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        if limits.open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            limits.open.fetch_sub(1, Ordering::AcqRel);
            if let Some(suppressed) = limits.flood.admit(&"connection limit") {
                tracing::warn!(%remote, suppressed, max = limits.max_connections,
                    "connection limit reached; closing new connections");
            }
            drop(tcp);
            continue;
        }
        let open = OpenConnection(limits.open.clone());
        let Some(client_slot) = limits.per_client.take(remote.ip()) else {
            if let Some(suppressed) = limits
                .flood
                .admit(&("client connection limit", remote.ip()))
            {
                tracing::warn!(client = %remote.ip(), suppressed,
                    max = limits.per_client.max,
                    "one client address holds server.max_connections_per_client connections; \
                     closing its new ones");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let head = Arc::new(HeadProgress::default());
        let io = HeadCapped::new(tcp, limits.max_header_bytes, head.clone());
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                req
            },
        ));
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let stop = stop_accepting.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    // Finish the request in flight (if any), then close; idle ones close now.
                    connection.as_mut().graceful_shutdown();
                    tokio::select! {
                        result = connection.as_mut() => result,
                        () = tokio::time::sleep(HEAD_GRACE) => {
                            if head.partial() {
                                // Part of a head and nothing in flight: not worth the grace.
                                Ok(())
                            } else {
                                connection.await
                            }
                        }
                    }
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
            drop(client_slot);
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

/// How far the head of a connection's current request has arrived: the bytes read of it, or
/// [`HeadProgress::IN_REQUEST`] once it is whole (until the answer's head is written).
#[derive(Debug, Default)]
struct HeadProgress(AtomicUsize);

impl HeadProgress {
    const IN_REQUEST: usize = usize::MAX;

    /// Part of a head has arrived, not all of it.
    fn partial(&self) -> bool {
        let n = self.0.load(Ordering::Acquire);
        n != Self::IN_REQUEST && n > 0
    }
}

/// Where the scan for the end of a head (an empty line) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Inside a line.
    Line,
    /// Just after a line feed.
    LineStart,
    /// After a line feed and a carriage return.
    LineStartCr,
}

/// The IO of one connection, counting the bytes of each request's head (request line and
/// header lines, up to the empty line that ends them) as hyper reads them: beyond `cap`, it
/// writes a 431 `headers.too.large` in the error shape itself, closes, and reads as the end of
/// the stream for hyper. Counting starts again when the answer's status line is written (an
/// interim `100 Continue` excepted). No allocation; a byte scan of the head only.
struct HeadCapped<T> {
    io: T,
    cap: usize,
    head: Arc<HeadProgress>,
    /// Bytes of the current head read so far (mirrored in `head`).
    count: usize,
    scan: Scan,
    /// The 431 answer being written, and how much of it is written.
    rejecting: Option<(bytes::Bytes, usize)>,
}

impl<T> HeadCapped<T> {
    fn new(io: T, cap: usize, head: Arc<HeadProgress>) -> Self {
        Self {
            io,
            cap,
            head,
            count: 0,
            scan: Scan::Line,
            rejecting: None,
        }
    }

    /// Counts `bytes` (just read) against the current head. `Err` when the head outgrew the cap.
    ///
    /// Only the line feeds are looked at (found with `memchr`, not byte by byte): a head ends at
    /// a line that is empty or a lone carriage return, and the state between two reads is where
    /// the last line stands (`scan`).
    fn count_head(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if self.count == HeadProgress::IN_REQUEST {
            return Ok(());
        }
        let mut rest = bytes;
        if self.count == 0 {
            // Empty lines before a request line are skipped (RFC 9112 §2.2), not counted.
            let blank = rest
                .iter()
                .position(|b| !matches!(b, b'\r' | b'\n'))
                .unwrap_or(rest.len());
            rest = &rest[blank..];
        }
        while let Some(at) = memchr::memchr(b'\n', rest) {
            let line = &rest[..at];
            let empty = match self.scan {
                Scan::LineStart => line.is_empty() || line == b"\r",
                Scan::LineStartCr => line.is_empty(),
                Scan::Line => false,
            };
            self.count += at;
            if self.count > self.cap {
                return Err(());
            }
            if empty {
                // The empty line: the head is whole.
                self.count = HeadProgress::IN_REQUEST;
                self.head.0.store(self.count, Ordering::Release);
                return Ok(());
            }
            self.count += 1;
            if self.count > self.cap {
                return Err(());
            }
            self.scan = Scan::LineStart;
            rest = &rest[at + 1..];
        }
        if !rest.is_empty() {
            self.scan = match self.scan {
                Scan::LineStart if rest == b"\r" => Scan::LineStartCr,
                _ => Scan::Line,
            };
            self.count += rest.len();
            if self.count > self.cap {
                return Err(());
            }
        }
        self.head.0.store(self.count, Ordering::Release);
        Ok(())
    }

    /// Seen on the way out: the status line of a final answer starts the next head.
    fn on_write(&mut self, bytes: &[u8]) {
        if self.count == HeadProgress::IN_REQUEST
            && bytes.len() > 9
            && bytes.starts_with(b"HTTP/1.")
            && bytes[9] != b'1'
        {
            self.count = 0;
            self.scan = Scan::Line;
            self.head.0.store(0, Ordering::Release);
        }
    }
}

/// The whole 431 answer of a connection whose head outgrew the cap.
fn headers_too_large(cap: usize) -> bytes::Bytes {
    let id = RequestId::generate();
    let body = ApiError::new(
        ErrorCode::HeadersTooLarge,
        format!("The request's headers are larger than the gateway accepts ({cap} bytes)."),
    )
    .body_for(&id);
    let status = ErrorCode::HeadersTooLarge.status();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nx-request-id: {id}\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    bytes::Bytes::from(answer)
}

impl<T: AsyncRead + AsyncWrite + Unpin> HeadCapped<T> {
    /// Writes the rest of the 431, then shuts the write side; ready when done (or failed).
    fn poll_reject(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((answer, written)) = &mut self.rejecting {
            while *written < answer.len() {
                match ready!(Pin::new(&mut self.io).poll_write(cx, &answer[*written..])) {
                    Ok(0) | Err(_) => {
                        *written = answer.len();
                    }
                    Ok(n) => *written += n,
                }
            }
        }
        let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for HeadCapped<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rejecting.is_some() {
            // Nothing more is read: hyper sees the end of the stream once the 431 is out.
            return this.poll_reject(cx);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        if this.count_head(&buf.filled()[before..]).is_err() {
            buf.set_filled(before);
            tracing::debug!(cap = this.cap, "request headers too large; answering 431");
            this.rejecting = Some((headers_too_large(this.cap), 0));
            return this.poll_reject(cx);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadCapped<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rejecting.is_some() {
            // Whatever hyper would say after our 431 is not sent.
            return Poll::Ready(Ok(buf.len()));
        }
        this.on_write(buf);
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.rejecting.is_some() {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            this.on_write(first);
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rejecting.is_some() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.rejecting.is_some() {
            return this.poll_reject(cx);
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Binds `count` listening sockets on `addr` sharing one port (`SO_REUSEPORT`): the first binds
/// (port 0 picks a free port), the others bind to the port it got.
///
/// `SO_REUSEPORT` would let this process share a port another process already listens on, and
/// the kernel would split connections between the two: so a fixed port is first probed with a
/// plain bind (no `SO_REUSEPORT`), which fails while any process listens there.
///
/// # Errors
/// When the address cannot be bound; [`io::ErrorKind::AddrInUse`] with the message
/// `<addr> is already in use` when another process listens on it.
pub fn bind_shared(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        probe(addr)?;
    }
    let first = bind_one(addr)?;
    let bound = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count.max(1) {
        listeners.push(bind_one(bound)?);
    }
    Ok(listeners)
}

/// A plain bind of `addr` (`SO_REUSEADDR` only, so that connections of an earlier process left
/// in `TIME_WAIT` do not count), dropped at once.
fn probe(addr: SocketAddr) -> io::Result<()> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    match socket.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use (another process listens on it)"),
        )),
        Err(err) => Err(err),
    }
}

fn bind_one(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The head scan byte by byte, as the rule reads: what [`HeadCapped::count_head`] must
    /// agree with whatever the reads' boundaries.
    fn reference(reads: &[Vec<u8>], cap: usize) -> (Result<(), ()>, usize) {
        let (mut count, mut scan) = (0usize, Scan::Line);
        for read in reads {
            for &b in read {
                if count == HeadProgress::IN_REQUEST {
                    return (Ok(()), count);
                }
                if count == 0 && matches!(b, b'\r' | b'\n') {
                    continue;
                }
                count += 1;
                scan = match (scan, b) {
                    (Scan::LineStart | Scan::LineStartCr, b'\n') => {
                        count = HeadProgress::IN_REQUEST;
                        continue;
                    }
                    (Scan::LineStart, b'\r') => Scan::LineStartCr,
                    (_, b'\n') => Scan::LineStart,
                    _ => Scan::Line,
                };
                if count > cap {
                    return (Err(()), count);
                }
            }
        }
        (Ok(()), count)
    }

    fn scanned(reads: &[Vec<u8>], cap: usize) -> (Result<(), ()>, usize) {
        let mut capped = HeadCapped::new((), cap, Arc::new(HeadProgress::default()));
        for read in reads {
            if capped.count_head(read).is_err() {
                return (Err(()), capped.count);
            }
        }
        assert_eq!(capped.head.0.load(Ordering::Acquire), capped.count);
        (Ok(()), capped.count)
    }

    #[test]
    fn a_head_ends_at_its_empty_line_and_is_capped() {
        let head = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nbody".to_vec();
        assert_eq!(
            scanned(std::slice::from_ref(&head), 1000),
            (Ok(()), HeadProgress::IN_REQUEST)
        );
        assert_eq!(scanned(&[head], 10).0, Err(()));
        let bare_lf = b"GET / HTTP/1.1\nHost: a\n\n".to_vec();
        assert_eq!(
            scanned(&[bare_lf], 1000),
            (Ok(()), HeadProgress::IN_REQUEST)
        );
        let partial = b"GET / HTTP/1.1\r\nHost: a\r\n\r".to_vec();
        assert_eq!(scanned(&[partial], 1000), (Ok(()), 26));
    }

    proptest! {
        #[test]
        fn the_scan_agrees_with_the_byte_rule_whatever_the_reads(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':'), any::<u8>()],
                0..200,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..6),
            cap in 1usize..220,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut reads = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                reads.push(bytes[from..cut].to_vec());
                from = cut;
            }
            let expected = reference(&reads, cap);
            let got = scanned(&reads, cap);
            prop_assert_eq!(got.0, expected.0);
            if expected.0.is_ok() {
                prop_assert_eq!(got.1, expected.1);
            }
        }
    }
}
