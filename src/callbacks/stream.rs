//! `GET /v1/callbacks/stream`: every published reservation change, in `seq` order, to internal
//! consumers over a WebSocket — and the per-process hub that fans the changes out.
//!
//! # Protocol
//! - Each change is one frame `{"seq", "type", "reservation"}`: a text frame of JSON, or with
//!   `?format=msgpack` a binary frame of MessagePack (the same map, field names included).
//! - `?since=<seq>` first replays every stored change with a greater `seq`, then goes live; the
//!   consumer sees each `seq` once, in increasing order, with no change left out (numbers may
//!   skip: a rolled-back change leaves a gap). Without `since` the stream starts with the next
//!   change.
//! - The consumer may send `{"ack": <seq>}` (text or, with msgpack, binary) to say what it has
//!   handled; anything else it sends closes the stream with 1007. The last ack is logged when the
//!   stream ends.
//! - A consumer that does not keep up — its queue of [`CLIENT_QUEUE`] frames overflows while the
//!   socket is not taking data, or one frame (or ping) cannot be written for [`SEND_STALL`] — is
//!   closed with 1008 (`reason` says the `seq` to resume after); it reconnects with `?since=`.
//!   The gateway's shutdown closes streams with 1001; a replay the store cannot answer, 1011. Every write races the shutdown, the slow
//!   mark and [`SEND_STALL`], so a consumer that stops reading never holds its stream (or the
//!   shutdown) open; the close handshake itself is given [`CLOSE_TIMEOUT`].
//! - A `since` older than the changes the store still keeps (see
//!   [`super::changes::ChangeRetention`]) cannot be replayed without a hole: the stream is
//!   closed with [`RESYNC_CLOSE_CODE`] and a `reason` naming the `seq` to resume with once the
//!   consumer has read the current state from `GET /v1/callbacks` — never by skipping changes.
//! - The server pings every 30 s (load balancers keep idle connections).
//!
//! # Fan-out
//! One task per process ([`run_fanout`]) reads the new changes from the store, encodes each
//! frame once (JSON and MessagePack, shared by every client) and hands it to every registered
//! client's queue. It reads when woken: by this process's own commits ([`StreamHub::wake`]), by
//! PostgreSQL `NOTIFY` from any replica (the store's change listener), and every
//! [`POLL_INTERVAL`] in case a notification was lost. Because `seq` follows commit order, reading
//! "everything above the last `seq` seen" never skips a change committed later with a smaller
//! number. The hub keeps the last [`RING`] frames: a client whose `since` is within them
//! registers at once; an older `since` is replayed from the store page by page first.
//!
//! Every stream task is tracked by the hub: the fan-out task, once stopped, waits for them, so
//! the application's shutdown drains the streams (each ends within [`CLOSE_TIMEOUT`] of the
//! shutdown) instead of abandoning them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use prometheus::IntGauge;
use serde::{Deserialize, Serialize as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TrackedFuture;

use super::changes::frame_of;
use super::event::StreamMessage;
use crate::backoff::{Backoff, Jitter};
use crate::store::Store;

/// Frames queued for one client beyond which it is too slow (closed with 1008).
pub const CLIENT_QUEUE: usize = 256;
/// Recent frames the hub keeps for clients joining with a recent `since`.
pub const RING: usize = 1024;
/// The fan-out reads the store at least this often.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Changes read from the store per query (fan-out and replay).
const PAGE: u32 = 500;
/// Interval of the server's pings.
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// Longest a single frame (or ping) may take to be written before its consumer counts as too
/// slow (closed with 1008).
pub const SEND_STALL: Duration = Duration::from_secs(5);
/// Longest wait for the close handshake of a stream being closed (sending the close frame and
/// reading the consumer's answer); the connection is dropped after it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The close code of a stream whose `since` is older than the changes kept: the consumer reads
/// the reservations again (`GET /v1/callbacks`) and reconnects with the `since` the reason names.
pub const RESYNC_CLOSE_CODE: u16 = 4410;

/// How frames are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamFormat {
    /// Text frames of JSON.
    #[default]
    Json,
    /// Binary frames of MessagePack.
    Msgpack,
}

/// One change, encoded once for every client.
#[derive(Debug)]
pub struct Frame {
    seq: u64,
    json: Utf8Bytes,
    msgpack: Bytes,
}

impl Frame {
    /// Encodes a stream message both ways.
    ///
    /// # Errors
    /// When it cannot be encoded (never for a valid reservation).
    pub fn encode(message: &StreamMessage) -> Result<Self, String> {
        let json = serde_json::to_string(message).map_err(|e| e.to_string())?;
        // Human-readable: ids and instants are strings, exactly as in the JSON frame.
        let mut msgpack = Vec::with_capacity(json.len());
        message
            .serialize(
                &mut rmp_serde::Serializer::new(&mut msgpack)
                    .with_struct_map()
                    .with_human_readable(),
            )
            .map_err(|e| e.to_string())?;
        Ok(Self {
            seq: message.seq,
            json: Utf8Bytes::from(json),
            msgpack: Bytes::from(msgpack),
        })
    }

    /// The change's number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    fn message(&self, format: StreamFormat) -> Message {
        match format {
            StreamFormat::Json => Message::Text(self.json.clone()),
            StreamFormat::Msgpack => Message::Binary(self.msgpack.clone()),
        }
    }
}

/// Counts a connected client once in `gateway_stream_clients`, until released.
struct Counted {
    gauge: IntGauge,
    counted: AtomicBool,
}

impl Counted {
    fn new(gauge: IntGauge) -> Arc<Self> {
        gauge.inc();
        Arc::new(Self {
            gauge,
            counted: AtomicBool::new(true),
        })
    }

    fn release(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.gauge.dec();
        }
    }
}

struct Slot {
    tx: mpsc::Sender<Arc<Frame>>,
    slow: CancellationToken,
    counted: Arc<Counted>,
}

#[derive(Default)]
struct HubState {
    /// Set once the fan-out read the store's last `seq`.
    started: bool,
    /// The highest `seq` handed to clients.
    last_seq: u64,
    ring: VecDeque<Arc<Frame>>,
    clients: HashMap<u64, Slot>,
    next_id: u64,
}

impl HubState {
    /// Whether every change above `since` is in the ring (or there is none).
    fn covers(&self, since: u64) -> bool {
        since >= self.last_seq || self.ring.front().is_some_and(|f| since + 1 >= f.seq)
    }
}

struct HubInner {
    state: Mutex<HubState>,
    wake: Notify,
    started: Notify,
    gauge: IntGauge,
    shutdown: CancellationToken,
    /// The stream tasks, drained by the fan-out when it stops.
    streams: TaskTracker,
}

/// The per-process fan-out of reservation changes to stream clients (see the module docs).
/// Cheap to clone.
#[derive(Clone)]
pub struct StreamHub {
    inner: Arc<HubInner>,
}

impl std::fmt::Debug for StreamHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHub").finish_non_exhaustive()
    }
}

/// What a client gets when it registers: the ring's frames after its cursor, then its queue.
struct Subscription {
    hub: StreamHub,
    id: u64,
    backlog: Vec<Arc<Frame>>,
    rx: mpsc::Receiver<Arc<Frame>>,
    slow: CancellationToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.hub.lock();
        if let Some(slot) = state.clients.remove(&self.id) {
            slot.counted.release();
        }
    }
}

impl StreamHub {
    /// A hub counting its clients in `gauge` (`gateway_stream_clients`); streams close with 1001
    /// when `shutdown` fires.
    pub fn new(gauge: IntGauge, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(HubInner {
                state: Mutex::new(HubState::default()),
                wake: Notify::new(),
                started: Notify::new(),
                gauge,
                shutdown,
                streams: TaskTracker::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the fan-out to read the store now (after a commit of this process).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The highest `seq` handed to clients so far.
    pub fn last_seq(&self) -> u64 {
        self.lock().last_seq
    }

    fn start(&self, last_seq: u64) {
        let mut state = self.lock();
        state.started = true;
        state.last_seq = state.last_seq.max(last_seq);
        drop(state);
        self.inner.started.notify_waiters();
    }

    async fn started(&self) {
        loop {
            let notified = self.inner.started.notified();
            if self.lock().started {
                return;
            }
            notified.await;
        }
    }

    /// Hands frames (in `seq` order, above every frame before) to every client; a client whose
    /// queue is full is marked slow and removed.
    fn publish(&self, frames: Vec<Arc<Frame>>) {
        let mut state = self.lock();
        for frame in frames {
            // Already handed out (or below what the store had at start, which clients replay
            // from the store): never a second time, and the ring stays in `seq` order.
            if frame.seq <= state.last_seq {
                continue;
            }
            state.last_seq = state.last_seq.max(frame.seq);
            if state.ring.len() == RING {
                state.ring.pop_front();
            }
            state.ring.push_back(frame.clone());
            state
                .clients
                .retain(|_, slot| match slot.tx.try_send(frame.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.slow.cancel();
                        slot.counted.release();
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        slot.counted.release();
                        false
                    }
                });
        }
    }

    /// Serves `stream` as one of the hub's tracked stream tasks (see the module docs).
    pub(super) fn track<F>(&self, stream: F) -> TrackedFuture<F>
    where
        F: Future<Output = ()>,
    {
        self.inner.streams.track_future(stream)
    }

    /// Waits until every stream task has ended (after the shutdown: each ends on its own).
    async fn streams_ended(&self) {
        self.inner.streams.close();
        self.inner.streams.wait().await;
    }

    /// Registers a client whose cursor is `since` if the ring covers it; `None` when older
    /// changes must be replayed from the store first.
    fn try_register(&self, since: u64, counted: &Arc<Counted>) -> Option<Subscription> {
        let mut state = self.lock();
        if !state.covers(since) {
            return None;
        }
        let backlog: Vec<Arc<Frame>> = state
            .ring
            .iter()
            .filter(|f| f.seq > since)
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        let slow = CancellationToken::new();
        let id = state.next_id;
        state.next_id += 1;
        state.clients.insert(
            id,
            Slot {
                tx,
                slow: slow.clone(),
                counted: counted.clone(),
            },
        );
        drop(state);
        Some(Subscription {
            hub: self.clone(),
            id,
            backlog,
            rx,
            slow,
        })
    }
}

/// The fan-out task of this process (see the module docs); stops on `cancel`, then waits for
/// the stream tasks to end (they watch the same shutdown).
pub async fn run_fanout(hub: StreamHub, store: Store, cancel: CancellationToken) {
    fan_out(&hub, store, cancel).await;
    hub.streams_ended().await;
}

async fn fan_out(hub: &StreamHub, store: Store, cancel: CancellationToken) {
    let backoff = Backoff::exponential(
        Duration::from_millis(200),
        Duration::from_secs(10),
        Jitter::Half,
    );
    let mut failures = 0;
    let mut last = loop {
        match store.last_change_seq().await {
            Ok(seq) => break u64::try_from(seq).unwrap_or(0),
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "stream: cannot read the last change number");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.delay(failures)) => {}
                }
            }
        }
    };
    hub.start(last);
    let listener = tokio::spawn(listen(hub.clone(), store.clone(), cancel.clone()));
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = hub.inner.wake.notified() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        loop {
            let rows = match store
                .changes_after(i64::try_from(last).unwrap_or(i64::MAX), PAGE)
                .await
            {
                Ok(rows) => rows,
                Err(err) => {
                    tracing::warn!(error = %err, "stream: cannot read new changes");
                    break;
                }
            };
            let full = rows.len() == PAGE as usize;
            let mut frames = Vec::with_capacity(rows.len());
            for row in &rows {
                last = last.max(u64::try_from(row.seq).unwrap_or(0));
                match frame_of(row)
                    .map_err(|e| e.to_string())
                    .and_then(|m| Frame::encode(&m))
                {
                    Ok(frame) => frames.push(Arc::new(frame)),
                    Err(err) => {
                        tracing::error!(seq = row.seq, error = %err, "stream: a stored change cannot be read; skipped");
                    }
                }
            }
            hub.publish(frames);
            if !full {
                break;
            }
        }
    }
    listener.abort();
    let _ = listener.await;
}

/// Wakes the fan-out on every change another replica notifies (PostgreSQL only).
async fn listen(hub: StreamHub, store: Store, cancel: CancellationToken) {
    let backoff = Backoff::exponential(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Jitter::Half,
    );
    let mut failures = 0;
    loop {
        let listener = tokio::select! {
            () = cancel.cancelled() => return,
            listener = store.change_listener() => listener,
        };
        let mut listener = match listener {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(err) => {
                failures += 1;
                tracing::warn!(error = %err, "stream: cannot listen for changes of other replicas");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.delay(failures)) => continue,
                }
            }
        };
        failures = 0;
        // Changes made while no one listened are read now.
        hub.wake();
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => {
                    listener.close().await;
                    return;
                }
                next = listener.next() => next,
            };
            match next {
                Ok(Some(_)) => hub.wake(),
                Ok(None) => hub.wake(),
                Err(err) => {
                    tracing::warn!(error = %err, "stream: the change listener failed");
                    break;
                }
            }
        }
    }
}

/// What the consumer may send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    ack: u64,
}

/// Why a stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The consumer closed it or went away.
    Gone,
    /// It sent something that is not an ack (1007).
    Invalid,
    /// It did not keep up (1008).
    Slow,
    /// The gateway is shutting down (1001).
    Shutdown,
    /// The store could not be read for the replay (1011); the consumer may retry.
    Unavailable,
    /// Its cursor is older than the changes kept ([`RESYNC_CLOSE_CODE`]); it resumes with
    /// `since` = this after reading the reservations again.
    Resync(u64),
}

type Sink = SplitSink<WebSocket, Message>;

/// Writes one message, racing the shutdown, the slow mark (once registered) and
/// [`SEND_STALL`]: a consumer that does not take it in time is [`End::Slow`].
async fn send(
    sink: &mut Sink,
    message: Message,
    shutdown: &CancellationToken,
    slow: Option<&CancellationToken>,
) -> Result<(), End> {
    let slow = async {
        match slow {
            Some(slow) => slow.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Err(End::Shutdown),
        () = slow => Err(End::Slow),
        sent = tokio::time::timeout(SEND_STALL, sink.send(message)) => match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Slow),
        },
    }
}

/// Serves one upgraded stream until it ends.
pub(super) async fn serve(
    socket: WebSocket,
    hub: StreamHub,
    store: Store,
    since: Option<u64>,
    format: StreamFormat,
) {
    let counted = Counted::new(hub.inner.gauge.clone());
    let shutdown = hub.inner.shutdown.clone();
    let (mut sink, mut source) = socket.split();
    let mut acked: Option<u64> = None;
    let mut cursor = since;
    let end = async {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return End::Shutdown,
            () = hub.started() => {}
        }
        // Replay until the hub's ring covers the cursor.
        let mut subscription = loop {
            let at = cursor.unwrap_or_else(|| hub.last_seq());
            if let Some(subscription) = hub.try_register(at, &counted) {
                cursor = Some(at);
                break subscription;
            }
            let read = async {
                let rows = store
                    .changes_after(i64::try_from(at).unwrap_or(i64::MAX), PAGE)
                    .await?;
                // Read after the page: a pruning committed before the page was read is seen.
                let pruned = store.changes_pruned_through().await?;
                Ok::<_, crate::store::StoreError>((rows, pruned))
            };
            let (rows, pruned) = tokio::select! {
                biased;
                () = shutdown.cancelled() => return End::Shutdown,
                read = read => match read {
                    Ok(read) => read,
                    Err(err) => {
                        tracing::warn!(error = %err, "stream: cannot replay changes");
                        return End::Unavailable;
                    }
                },
            };
            if i64::try_from(at).unwrap_or(i64::MAX) < pruned {
                // Changes after the cursor are no longer kept: replaying would leave a hole.
                return End::Resync(hub.last_seq().max(u64::try_from(pruned).unwrap_or(0)));
            }
            if rows.is_empty() {
                // Nothing stored above the cursor: whatever the ring lacks was never committed.
                cursor = Some(at.max(hub.last_seq()));
                continue;
            }
            for row in rows {
                let frame = match frame_of(&row)
                    .map_err(|e| e.to_string())
                    .and_then(|m| Frame::encode(&m))
                {
                    Ok(frame) => frame,
                    Err(err) => {
                        tracing::error!(seq = row.seq, error = %err, "stream: a stored change cannot be read; skipped");
                        cursor = Some(u64::try_from(row.seq).unwrap_or(at));
                        continue;
                    }
                };
                if let Err(end) = send(&mut sink, frame.message(format), &shutdown, None).await {
                    return end;
                }
                cursor = Some(frame.seq);
            }
        };
        let mut last = cursor.unwrap_or(0);
        let backlog = std::mem::take(&mut subscription.backlog);
        let mut backlog = backlog.into_iter();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + PING_INTERVAL,
            PING_INTERVAL,
        );
        let slow = subscription.slow.clone();
        loop {
            let frame = if let Some(frame) = backlog.next() {
                Some(frame)
            } else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return End::Shutdown,
                    () = slow.cancelled() => return End::Slow,
                    incoming = source.next() => match incoming {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<Ack>(text.as_str()) {
                            Ok(ack) => { acked = Some(ack.ack); None }
                            Err(_) => return End::Invalid,
                        },
                        Some(Ok(Message::Binary(data))) => match rmp_serde::from_slice::<Ack>(&data) {
                            Ok(ack) => { acked = Some(ack.ack); None }
                            Err(_) => return End::Invalid,
                        },
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return End::Gone,
                        Some(Ok(_)) => None,
                    },
                    frame = subscription.rx.recv() => match frame {
                        Some(frame) => Some(frame),
                        None => return End::Slow,
                    },
                    _ = ping.tick() => {
                        if let Err(end) = send(&mut sink, Message::Ping(Bytes::new()), &shutdown, Some(&slow)).await {
                            return end;
                        }
                        None
                    }
                }
            };
            let Some(frame) = frame else { continue };
            if frame.seq <= last {
                continue;
            }
            if let Err(end) = send(&mut sink, frame.message(format), &shutdown, Some(&slow)).await {
                return end;
            }
            last = frame.seq;
            cursor = Some(last);
        }
    }
    .await;
    counted.release();
    let resume = cursor.unwrap_or(0);
    tracing::debug!(resume, acked, ?end, "stream: closed");
    if let Some((code, reason)) = close_of(end, resume) {
        let message = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            if sink.send(message).await.is_ok() {
                // Wait for the consumer's close (or its going away).
                while let Some(Ok(incoming)) = source.next().await {
                    if matches!(incoming, Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// The close frame (code, reason) that ends a stream, none when the consumer went away;
/// `resume` is the last `seq` the consumer was sent.
fn close_of(end: End, resume: u64) -> Option<(u16, String)> {
    match end {
        End::Gone => None,
        End::Invalid => Some((
            close_code::INVALID,
            "only {\"ack\": <seq>} may be sent".to_owned(),
        )),
        End::Slow => Some((
            close_code::POLICY,
            format!("too slow; resume with since={resume}"),
        )),
        End::Shutdown => Some((close_code::AWAY, "the gateway is stopping".to_owned())),
        End::Unavailable => Some((
            close_code::ERROR,
            format!("changes cannot be read now; retry with since={resume}"),
        )),
        End::Resync(since) => Some((
            RESYNC_CLOSE_CODE,
            format!(
                "changes after {resume} are gone; reload GET /v1/callbacks, then resume with \
                 since={since}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::callbacks::{
        CallbackNumber, Reservation, ReservationEventType, ReservationId, ReservationStatus, Slot,
    };

    fn frame(seq: u64) -> Arc<Frame> {
        let at = Utc.with_ymd_and_hms(2027, 3, 15, 13, 0, 0).unwrap();
        let reservation = Reservation {
            id: ReservationId::new(),
            status: ReservationStatus::Scheduled,
            version: 1,
            seq,
            queue_id: "q".into(),
            callback_number: CallbackNumber::parse("+14155550199").unwrap(),
            callback_user_name: None,
            reason: None,
            slot: Slot::new(at, at + chrono::TimeDelta::minutes(30)).unwrap(),
            conversation_id: None,
            callback_identifiers: Vec::new(),
            channel_preferences: None,
            data: BTreeMap::new(),
            created_at: at,
            updated_at: at,
        };
        Arc::new(
            Frame::encode(&StreamMessage::new(
                ReservationEventType::Created,
                reservation,
            ))
            .unwrap(),
        )
    }

    fn hub() -> StreamHub {
        let gauge = IntGauge::new("test_stream_clients", "test").unwrap();
        StreamHub::new(gauge, CancellationToken::new())
    }

    #[test]
    fn both_encodings_hold_the_same_message() {
        let f = frame(7);
        let from_json: serde_json::Value = serde_json::from_str(f.json.as_str()).unwrap();
        let from_msgpack: serde_json::Value = rmp_serde::from_slice(&f.msgpack).unwrap();
        assert_eq!(from_json, from_msgpack);
        assert_eq!(from_json["seq"], 7);
    }

    #[test]
    fn a_client_registers_only_when_the_ring_covers_its_cursor() {
        let hub = hub();
        hub.start(10);
        let counted = Counted::new(hub.inner.gauge.clone());
        assert!(
            hub.try_register(10, &counted).is_some(),
            "live from the last"
        );
        assert!(
            hub.try_register(3, &counted).is_none(),
            "3..10 must be replayed"
        );
        hub.publish(vec![frame(12), frame(13)]);
        assert!(
            hub.try_register(10, &counted).is_none(),
            "11 may exist: replay"
        );
        let sub = hub.try_register(11, &counted).unwrap();
        assert_eq!(
            sub.backlog.iter().map(|f| f.seq).collect::<Vec<_>>(),
            [12, 13]
        );
        assert_eq!(hub.last_seq(), 13);
    }

    #[test]
    fn a_client_whose_queue_overflows_is_slow_and_removed() {
        let hub = hub();
        hub.start(0);
        let counted = Counted::new(hub.inner.gauge.clone());
        assert_eq!(hub.inner.gauge.get(), 1);
        let sub = hub.try_register(0, &counted).unwrap();
        let frames: Vec<_> = (1..=CLIENT_QUEUE as u64).map(frame).collect();
        hub.publish(frames);
        assert!(!sub.slow.is_cancelled());
        hub.publish(vec![frame(CLIENT_QUEUE as u64 + 1)]);
        assert!(sub.slow.is_cancelled());
        assert_eq!(hub.inner.gauge.get(), 0, "no longer counted");
        assert!(hub.lock().clients.is_empty());
        drop(sub);
        assert_eq!(hub.inner.gauge.get(), 0, "released once");
    }

    #[test]
    fn a_frame_at_or_below_the_last_seq_is_never_handed_out() {
        let hub = hub();
        // The store's last change at start is 10: clients replay 1..=10 from the store.
        hub.start(10);
        let counted = Counted::new(hub.inner.gauge.clone());
        let mut sub = hub.try_register(10, &counted).unwrap();
        hub.publish(vec![frame(9), frame(10), frame(11)]);
        // 11 again (e.g. read twice), then 12.
        hub.publish(vec![frame(11), frame(12)]);
        let mut queued = Vec::new();
        while let Ok(f) = sub.rx.try_recv() {
            queued.push(f.seq);
        }
        assert_eq!(queued, [11, 12]);
        let ring: Vec<_> = hub.lock().ring.iter().map(|f| f.seq).collect();
        assert_eq!(ring, [11, 12], "in order, each once");
        assert_eq!(hub.last_seq(), 12);
    }

    #[test]
    fn every_close_reason_fits_a_close_frame() {
        for end in [
            End::Invalid,
            End::Slow,
            End::Shutdown,
            End::Unavailable,
            End::Resync(u64::MAX),
        ] {
            let (_, reason) = close_of(end, u64::MAX).unwrap();
            assert!(reason.len() <= 123, "{end:?}: {} bytes", reason.len());
        }
        assert_eq!(close_of(End::Slow, 7).unwrap().0, close_code::POLICY);
        assert_eq!(close_of(End::Resync(9), 3).unwrap().0, RESYNC_CLOSE_CODE);
        assert!(close_of(End::Gone, 1).is_none());
    }

    #[test]
    fn frames_already_published_are_not_published_twice() {
        let hub = hub();
        hub.start(0);
        hub.publish(vec![frame(1), frame(2)]);
        hub.publish(vec![frame(2), frame(3)]);
        let seqs: Vec<_> = hub.lock().ring.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
}
