//! The Genesys sync: one task per deployment keeps every reservation in step with its callback
//! in Genesys.
//!
//! # Leadership
//! Every replica runs [`run_sync`], but only the one holding the store's leader session for
//! [`SYNC_LEADER_KEY`] works (on SQLite, the one replica always does). The others try to take
//! the lead every [`SyncOptions::leader_retry`]. The leader proves every
//! [`SyncOptions::leader_confirm`] that its session still answers and stands down at once when
//! it does not (closing its socket). A leader that dies leaves the lead within seconds (its
//! session is closed by its kernel, or dropped by the server's keepalive when its host vanished:
//! see the store's leader session), so another replica holds the channel well within 30 s.
//!
//! # While leading
//! - A [`NotificationsClient`] keeps one socket open on a channel subscribed to
//!   `v2.routing.queues.{id}.conversations.callbacks` of every configured queue (heartbeat
//!   watchdog, ping, reconnects with backoff and jitter, seamless switch on
//!   `v2.system.socket_closing` and before expiry). `gateway_notifications_connected` is 1 only
//!   while that socket is open, so only on the leader. When the queues change on reload, the
//!   client is replaced by one subscribed to the new set.
//! - Each callback event is applied ([`Reservations::apply`]). Events delivered twice (once per
//!   socket during a switch) are applied once: the last [`RECENT_EVENTS`] event ids
//!   (`metadata.CorrelationId`) are remembered.
//! - Whenever events may have been missed — the first socket of a new leader, any socket after
//!   a lost one, an event that could not be applied — a reconciliation runs beside the event
//!   stream ([`Reservations::reconcile`]), retried with backoff until it succeeds; a change
//!   reported during it is reconciled again.
//! - Every [`SyncOptions::sweep_interval`] the reservations left `pending` by a creating request
//!   that never finished are settled ([`Reservations::sweep_pending`]).
//!
//! The task stops when the application's shutdown token fires.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::notification::{CallbackUpdate, callback_topic};
use super::service::Reservations;
use crate::backoff::{Backoff, Jitter};
use crate::genesys::{
    NotificationEvent, NotificationItem, NotificationsClient, NotificationsOptions,
};
use crate::store::LeaderSession;
use crate::telemetry::Metrics;

/// The leader-session key of the sync (one lead per database).
pub const SYNC_LEADER_KEY: i64 = 0x4757_5359_4e43; // "GWSYNC"
/// Event ids remembered to apply an event delivered twice only once.
pub const RECENT_EVENTS: usize = 4096;
/// Events queued between the socket and their application.
const EVENT_QUEUE: usize = 256;

/// Timing of the sync.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The notifications client's timing (heartbeat watchdog and the rest).
    pub notifications: NotificationsOptions,
    /// How often a replica that does not lead tries to take the lead.
    pub leader_retry: Duration,
    /// How often the leader proves that its session still answers.
    pub leader_confirm: Duration,
    /// How often reservations left pending are settled.
    pub sweep_interval: Duration,
}

impl SyncOptions {
    /// Defaults around the notifications client's options: try the lead every 2 s, confirm it
    /// every 3 s, sweep every minute.
    pub fn new(notifications: NotificationsOptions) -> Self {
        Self {
            notifications,
            leader_retry: Duration::from_secs(2),
            leader_confirm: Duration::from_secs(3),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

/// Why leading ended.
enum Led {
    /// The shutdown token fired.
    Cancelled,
    /// The session stopped answering: another replica may lead now.
    Lost,
}

/// Why one notifications client was stopped.
enum Session {
    /// Leading ended.
    Ended(Led),
    /// The queues changed: subscribe the new set.
    QueuesChanged,
}

/// The sync task of this replica (see the module docs); stops on `cancel`.
pub async fn run_sync(
    reservations: Reservations,
    metrics: Arc<Metrics>,
    options: SyncOptions,
    cancel: CancellationToken,
) {
    let mut lead = reservations.store().leader_session(SYNC_LEADER_KEY);
    let backoff = Backoff::exponential(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Jitter::Half,
    );
    let mut failures = 0;
    loop {
        let acquired = tokio::select! {
            () = cancel.cancelled() => break,
            acquired = lead.try_acquire() => acquired,
        };
        let wait = match acquired {
            Ok(true) => {
                failures = 0;
                tracing::info!("this replica leads the Genesys callback sync");
                let led =
                    lead_while_held(&reservations, &metrics, &options, &mut lead, &cancel).await;
                lead.release().await;
                match led {
                    Led::Cancelled => break,
                    Led::Lost => {
                        tracing::warn!("the Genesys callback sync lost its lead; standing down");
                        options.leader_retry
                    }
                }
            }
            Ok(false) => options.leader_retry,
            Err(err) => {
                failures += 1;
                let wait = backoff.delay(failures);
                tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64,
                    "the Genesys callback sync cannot reach the store to take the lead");
                wait
            }
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    lead.release().await;
}

/// Works while `lead` is held: one notifications client per queue set, the reconciler and the
/// sweep beside it.
async fn lead_while_held(
    reservations: &Reservations,
    metrics: &Arc<Metrics>,
    options: &SyncOptions,
    lead: &mut LeaderSession,
    cancel: &CancellationToken,
) -> Led {
    let mut queues_changed = reservations.queues_changed();
    queues_changed.mark_unchanged();
    let leading = cancel.child_token();
    let reconcile = Arc::new(Notify::new());
    let maintenance = tokio::spawn(maintain(
        reservations.clone(),
        reconcile.clone(),
        options.sweep_interval,
        leading.clone(),
    ));
    let mut recent = RecentEvents::new(RECENT_EVENTS);
    let led = loop {
        let session = leading.child_token();
        let (mut events, client) = start_client(reservations, metrics, options, &session);
        let mut confirm = tokio::time::interval(options.leader_confirm);
        confirm.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ended = loop {
            tokio::select! {
                () = cancel.cancelled() => break Session::Ended(Led::Cancelled),
                _ = confirm.tick() => {
                    if let Err(err) = lead.confirm().await {
                        tracing::warn!(error = %err, "the sync's leader session does not answer");
                        break Session::Ended(Led::Lost);
                    }
                }
                changed = queues_changed.changed() => {
                    if changed.is_ok() {
                        break Session::QueuesChanged;
                    }
                }
                item = recv(&mut events) => match item {
                    Some(NotificationItem::Reconnected { gap: true }) => reconcile.notify_one(),
                    Some(NotificationItem::Reconnected { gap: false }) => {}
                    Some(NotificationItem::Event(event)) => {
                        if recent.first_time(&event) {
                            apply(reservations, &event, &reconcile).await;
                        }
                    }
                    None => {
                        // The client ended by itself (it only does when cancelled): idle until
                        // something else happens.
                        events = None;
                    }
                },
            }
        };
        session.cancel();
        if let Some(client) = client {
            let _ = client.await;
        }
        match ended {
            Session::Ended(led) => break led,
            Session::QueuesChanged => {
                tracing::info!("callback queues changed: resubscribing");
            }
        }
    };
    leading.cancel();
    let _ = maintenance.await;
    led
}

/// A notifications client subscribed to every configured queue's callbacks, or none when no
/// queue is configured.
fn start_client(
    reservations: &Reservations,
    metrics: &Arc<Metrics>,
    options: &SyncOptions,
    session: &CancellationToken,
) -> (
    Option<mpsc::Receiver<NotificationItem>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let topics: Vec<String> = reservations
        .queues()
        .iter()
        .map(|q| callback_topic(q.id()))
        .collect();
    if topics.is_empty() {
        return (None, None);
    }
    let genesys = match reservations.genesys() {
        Ok(genesys) => genesys,
        Err(err) => {
            tracing::error!(error = %err, "the Genesys callback sync cannot start");
            return (None, None);
        }
    };
    let client = NotificationsClient::new(genesys, topics, options.notifications.clone(), metrics);
    let (events, task) = client.spawn(EVENT_QUEUE, session.clone());
    (Some(events), Some(task))
}

/// The next item, or never when there is no client.
async fn recv(events: &mut Option<mpsc::Receiver<NotificationItem>>) -> Option<NotificationItem> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Applies one event; one that cannot be applied asks for a reconciliation.
async fn apply(reservations: &Reservations, event: &NotificationEvent, reconcile: &Notify) {
    let Some(update) = CallbackUpdate::from_notification(event) else {
        tracing::debug!(topic = %event.topic_name, "sync: not a callback event; ignored");
        return;
    };
    match reservations.apply(&update).await {
        Ok(applied) => {
            tracing::debug!(conversation = %update.conversation_id, ?applied, "sync: callback event");
        }
        Err(err) => {
            tracing::warn!(error = %err, conversation = %update.conversation_id,
                "sync: a callback event could not be applied; reconciling");
            reconcile.notify_one();
        }
    }
}

/// Reconciles when asked (retrying with backoff until it succeeds) and sweeps on a timer, until
/// `cancel` fires.
async fn maintain(
    reservations: Reservations,
    wanted: Arc<Notify>,
    sweep_interval: Duration,
    cancel: CancellationToken,
) {
    let backoff = Backoff::exponential(
        Duration::from_millis(500),
        Duration::from_secs(30),
        Jitter::Half,
    );
    let mut sweep = tokio::time::interval(sweep_interval);
    sweep.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wanted.notified() => {}
            _ = sweep.tick() => {
                match reservations.sweep_pending().await {
                    Ok(0) => {}
                    Ok(settled) => tracing::info!(settled, "sync: stale pending reservations settled"),
                    Err(err) => tracing::warn!(error = %err, "sync: cannot settle stale pending reservations"),
                }
                continue;
            }
        }
        let mut failures = 0;
        loop {
            let done = tokio::select! {
                () = cancel.cancelled() => return,
                done = reservations.reconcile() => done,
            };
            match done {
                Ok(seen) => {
                    tracing::info!(reservations = seen, "sync: reconciled with Genesys");
                    break;
                }
                Err(err) => {
                    failures += 1;
                    let wait = backoff.delay(failures);
                    tracing::warn!(error = %err, wait_ms = wait.as_millis() as u64,
                        "sync: reconciliation failed; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

/// The ids of the events applied last (see the module docs).
struct RecentEvents {
    order: VecDeque<String>,
    seen: HashSet<String>,
    capacity: usize,
}

impl RecentEvents {
    fn new(capacity: usize) -> Self {
        Self {
            order: VecDeque::with_capacity(capacity),
            seen: HashSet::with_capacity(capacity),
            capacity,
        }
    }

    /// Whether `event` was not seen among the last events; remembers it. An event without an
    /// id is always new.
    fn first_time(&mut self, event: &NotificationEvent) -> bool {
        let Some(id) = event
            .metadata
            .get("CorrelationId")
            .and_then(serde_json::Value::as_str)
            .filter(|id| !id.is_empty())
        else {
            return true;
        };
        let key = format!("{}\n{id}", event.topic_name);
        if self.seen.contains(&key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.seen.insert(key.clone());
        self.order.push_back(key);
        true
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(id: Option<&str>) -> NotificationEvent {
        NotificationEvent {
            topic_name: "v2.routing.queues.q.conversations.callbacks".to_owned(),
            version: None,
            event_body: json!({}),
            metadata: id.map_or_else(|| json!({}), |id| json!({"CorrelationId": id})),
        }
    }

    #[test]
    fn an_event_delivered_twice_is_new_once() {
        let mut recent = RecentEvents::new(2);
        assert!(recent.first_time(&event(Some("a"))));
        assert!(!recent.first_time(&event(Some("a"))));
        assert!(recent.first_time(&event(Some("b"))));
        assert!(recent.first_time(&event(Some("c"))), "a is forgotten now");
        assert!(recent.first_time(&event(Some("a"))));
        assert!(!recent.first_time(&event(Some("c"))));
        assert!(recent.first_time(&event(None)));
        assert!(recent.first_time(&event(None)), "no id: always applied");
    }
}
