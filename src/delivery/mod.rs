//! The durable delivery engine: every outbound event of the gateway (ingested business events,
//! target verification events, webhook subscriptions) is handed to it as an [`OutboundMessage`]
//! inside the producer's own transaction, and delivered at least once to every destination whose
//! event types match.
//!
//! SKELETON (interface agreed between the `delivery` and `ingest` branches): the bodies below do
//! nothing yet; the delivery branch fills them in. Not to land on main as is.

pub mod webhooks;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::store::{StoreError, Transaction};

/// One message to deliver: the exact JSON body sent to every matching destination.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The message's id (an ingested event's `eventId`).
    pub id: Uuid,
    /// Matched against each destination's `event_types` globs.
    pub event_type: String,
    /// Sent as `Idempotency-Key`.
    pub idempotency_key: String,
    /// The exact bytes sent (never re-serialised: numbers keep their text).
    pub body: Bytes,
}

/// A delivery's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DeliveryId(pub Uuid);

/// A delivery as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: DeliveryId,
    pub event_id: Uuid,
    pub target_id: String,
    pub target_name: String,
    /// `pending` | `delivering` | `delivered` | `dead`.
    pub status: &'static str,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The engine's handle (cheap to clone; lives in the app state).
#[derive(Debug, Clone, Default)]
pub struct DeliveryEngine {}

impl DeliveryEngine {
    /// Writes `message` and one delivery per matching destination inside `tx`; the caller commits.
    ///
    /// # Errors
    /// When the store refuses a write.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction,
        message: &OutboundMessage,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        let _ = (tx, message);
        Ok(Vec::new())
    }

    /// Wakes the workers; call after the commit that enqueued.
    pub fn wake(&self) {}

    /// Deliveries pending or being delivered (no query per call).
    pub fn queue_depth(&self) -> u64 {
        0
    }

    /// The deliveries of one message.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn of_message(&self, id: Uuid) -> Result<Vec<DeliveryView>, StoreError> {
        let _ = id;
        Ok(Vec::new())
    }
}
