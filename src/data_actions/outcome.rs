//! How an execution ended, and the metric handles that count it.
//!
//! The handles are resolved once per action when the action set is built
//! (`with_label_values` never runs on the hot path); executions that name no known action share
//! the handles of the fixed label [`UNKNOWN_ACTION`], so a URL can never mint a label.

use prometheus::{Histogram, IntCounter};

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
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Self; 9] = [
        Self::Success,
        Self::InvalidInput,
        Self::Unauthorized,
        Self::NotFound,
        Self::OutputInvalid,
        Self::UpstreamError,
        Self::UpstreamUnavailable,
        Self::CircuitOpen,
        Self::Timeout,
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
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The metric handles of one action label.
#[derive(Debug, Clone)]
pub struct ActionMetrics {
    executions: [IntCounter; 9],
    duration: Histogram,
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
        }
    }

    /// Counts one execution and its duration.
    pub fn observe(&self, outcome: Outcome, seconds: f64) {
        self.executions[outcome.index()].inc();
        self.duration.observe(seconds);
    }
}
