//! How an execution ended, the metric handles that count it, and the figures an operator reads
//! about one action (`GET /admin/v1/actions/{name}`).
//!
//! The handles are resolved once per action when the action set is built
//! (`with_label_values` never runs on the hot path); executions that name no known action share
//! the handles of the fixed label [`UNKNOWN_ACTION`], so a URL can never mint a label.
//!
//! # Stats since start
//! An action's [`ActionStats`] are read from the same counters Prometheus scrapes (they count
//! since the process started, across reloads: a reloaded action gets the same counters back)
//! plus a last-failure slot, written only when an execution fails. The slots are kept by name in
//! an [`ActionStatsBook`] that the action registry attaches to every set it builds, so that a
//! reload keeps them too. Nothing is added to a successful execution's path.
//!
//! # The audit budget
//! The same per-name slot holds, per outcome, how many execution records were written this
//! second ([`ActionMetrics::admit_audit`], two atomic operations) and how many were held back
//! beyond `audit.execution_records_per_s`; [`ActionStatsBook::take_held_back`] hands the
//! held-back counts to the writer of the summary records once a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use prometheus::{Histogram, IntCounter};
use serde::Serialize;

use crate::telemetry::Metrics;

/// The `action` label of executions that name no known action.
pub const UNKNOWN_ACTION: &str = "unknown";

/// The outcome of one execution: the `outcome` label of `gateway_action_executions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// 200.
    Success,
    /// 400 (schema, required mapping, unparsable body), 413, 415.
    InvalidInput,
    /// 401.
    Unauthorized,
    /// 404: no such action.
    NotFound,
    /// 422: the upstream's answer fails the output schema or mapping.
    OutputInvalid,
    /// 502: the upstream answered a status that is not retried.
    UpstreamError,
    /// 503: the upstream stayed unavailable.
    UpstreamUnavailable,
    /// 503: the upstream's breaker is open.
    CircuitOpen,
    /// 504: the action's deadline passed.
    Timeout,
    /// The caller went away before the answer (audited with status 499; no answer was sent).
    Canceled,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 10] = [
        Self::Success,
        Self::InvalidInput,
        Self::Unauthorized,
        Self::NotFound,
        Self::OutputInvalid,
        Self::UpstreamError,
        Self::UpstreamUnavailable,
        Self::CircuitOpen,
        Self::Timeout,
        Self::Canceled,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::InvalidInput => "invalid_input",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::OutputInvalid => "output_invalid",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::CircuitOpen => "circuit_open",
            Self::Timeout => "timeout",
            Self::Canceled => "canceled",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The metric handles of one action label, and its last-failure slot once attached.
#[derive(Debug, Clone)]
pub struct ActionMetrics {
    executions: [IntCounter; Outcome::ALL.len()],
    duration: Histogram,
    last_failure: OnceLock<Arc<FailureSlot>>,
}

/// Execution records of one action and outcome: written this second, held back since the last
/// summary.
#[derive(Debug, Default)]
struct AuditBudget {
    /// The second (since the slot was made) `written` counts.
    second: AtomicU64,
    written: AtomicU64,
    held_back: AtomicU64,
}

impl AuditBudget {
    fn admit(&self, second: u64, per_s: u64) -> bool {
        let current = self.second.load(Ordering::Relaxed);
        if current != second
            && self
                .second
                .compare_exchange(current, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.written.store(0, Ordering::Relaxed);
        }
        if self.written.fetch_add(1, Ordering::Relaxed) < per_s {
            true
        } else {
            self.held_back.fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

impl ActionMetrics {
    /// Resolves the handles of `action` (once, at build time).
    pub fn new(metrics: &Metrics, action: &str) -> Self {
        let executions = Outcome::ALL.map(|o| {
            metrics
                .action_executions_total
                .with_label_values(&[action, o.as_str()])
        });
        Self {
            executions,
            duration: metrics.action_duration_seconds.with_label_values(&[action]),
            last_failure: OnceLock::new(),
        }
    }

    /// Counts one execution and its duration.
    pub fn observe(&self, outcome: Outcome, seconds: f64) {
        self.executions[outcome.index()].inc();
        self.duration.observe(seconds);
    }

    /// Remembers a failed execution as the action's last error (nothing happens before an
    /// [`ActionStatsBook`] attached a slot: the handles of unknown actions have none).
    pub fn failed(&self, failure: LastError) {
        if let Some(slot) = self.last_failure.get() {
            *slot
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(failure);
        }
    }

    /// Whether the execution record of an execution with `outcome`, ended at `now`, is written
    /// on its own: `true` for the first `per_s` of each second (and always with `per_s` 0 or
    /// before a slot is attached), `false` beyond — it is then counted for the next summary
    /// record ([`ActionStatsBook::take_held_back`]).
    pub fn admit_audit(&self, outcome: Outcome, now: Instant, per_s: u64) -> bool {
        if per_s == 0 {
            return true;
        }
        let Some(slot) = self.last_failure.get() else {
            return true;
        };
        let second = now.saturating_duration_since(slot.made).as_secs();
        slot.audit[outcome.index()].admit(second, per_s)
    }

    /// The executions counted since the process started, and the last failure.
    pub fn stats(&self) -> ActionStats {
        let by_outcome: BTreeMap<&'static str, u64> = Outcome::ALL
            .iter()
            .map(|o| (o.as_str(), self.executions[o.index()].get()))
            .collect();
        ActionStats {
            calls: by_outcome.values().sum(),
            by_outcome,
            last_error: self.last_failure.get().and_then(|slot| {
                slot.last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone()
            }),
        }
    }
}

/// A failed execution, as `lastError` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// When it ended (RFC 3339 UTC, milliseconds).
    #[serde(serialize_with = "rfc3339_millis")]
    #[schema(value_type = String)]
    pub at: DateTime<Utc>,
    /// Its outcome label (`upstream_error`, `timeout`…).
    pub outcome: &'static str,
    /// The upstream's last status, when it answered.
    pub upstream_status: Option<u16>,
    /// The request id of the call (also in its log line and audit record).
    pub request_id: Option<String>,
}

fn rfc3339_millis<S: serde::Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// What `GET /admin/v1/actions/{name}` shows of an action's executions since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionStats {
    /// Every execution counted (refused credentials included).
    pub calls: u64,
    /// Executions per outcome label.
    #[schema(value_type = Object)]
    pub by_outcome: BTreeMap<&'static str, u64>,
    /// The last failed execution, if any.
    pub last_error: Option<LastError>,
}

/// One action name's slot: its last failure and its audit budget per outcome.
#[derive(Debug)]
struct FailureSlot {
    last: Mutex<Option<LastError>>,
    /// When the slot was made: audit budget seconds count from here.
    made: Instant,
    /// Per outcome, in [`Outcome::ALL`] order.
    audit: [AuditBudget; Outcome::ALL.len()],
}

impl Default for FailureSlot {
    fn default() -> Self {
        Self {
            last: Mutex::new(None),
            made: Instant::now(),
            audit: Default::default(),
        }
    }
}

/// The last-failure slots of every action name served since start (see "Stats since start").
#[derive(Debug, Default)]
pub struct ActionStatsBook {
    slots: Mutex<HashMap<Box<str>, Arc<FailureSlot>>>,
}

impl ActionStatsBook {
    /// Gives the handles `metrics` of action `name` its slot (the one an earlier set of the
    /// same name had); handles that have one keep it.
    pub fn attach(&self, name: &str, metrics: &ActionMetrics) {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = slots.entry(name.into()).or_default().clone();
        let _ = metrics.last_failure.set(slot);
    }

    /// The execution records held back since the last call, per action name and outcome
    /// (only those with some), the counters reset: what one summary record each stands for.
    pub fn take_held_back(&self) -> Vec<(Box<str>, Outcome, u64)> {
        let slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut held = Vec::new();
        for (name, slot) in slots.iter() {
            for outcome in Outcome::ALL {
                let count = slot.audit[outcome.index()]
                    .held_back
                    .swap(0, Ordering::Relaxed);
                if count > 0 {
                    held.push((name.clone(), outcome, count));
                }
            }
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(outcome: &'static str) -> LastError {
        LastError {
            at: DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
            outcome,
            upstream_status: Some(404),
            request_id: Some("r-1".into()),
        }
    }

    #[test]
    fn stats_count_outcomes_and_keep_the_last_failure_across_rebuilt_handles() {
        let metrics = Metrics::new();
        let book = ActionStatsBook::default();
        let first = ActionMetrics::new(&metrics, "a");
        first.failed(failure("timeout"));
        assert_eq!(first.stats().last_error, None, "no slot attached yet");
        book.attach("a", &first);
        first.observe(Outcome::Success, 0.01);
        first.observe(Outcome::UpstreamError, 0.01);
        first.failed(failure("upstream_error"));

        // A reload builds new handles for the same name: same counters, same slot.
        let second = ActionMetrics::new(&metrics, "a");
        book.attach("a", &second);
        let stats = second.stats();
        assert_eq!(stats.calls, 2);
        assert_eq!(stats.by_outcome["success"], 1);
        assert_eq!(stats.by_outcome["upstream_error"], 1);
        assert_eq!(stats.last_error, Some(failure("upstream_error")));
        let json = serde_json::to_value(&stats).unwrap();
        assert_eq!(json["lastError"]["at"], "2023-11-14T22:13:20.123Z");
        assert_eq!(json["lastError"]["upstreamStatus"], 404);
        assert_eq!(json["byOutcome"]["timeout"], 0);
    }
}
