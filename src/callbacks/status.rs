//! The life of a reservation: its statuses, which changes between them are allowed, and how the
//! state of a Genesys callback participant maps onto them.
//!
//! ```text
//! pending ──► scheduled ◄──► in_progress ──► completed
//!    │            │               │
//!    │            └───────────────┴────────► canceled
//!    └──► failed   (pending may also go straight to in_progress, completed or canceled)
//! ```
//!
//! - `pending` exists only while the creating request is calling Genesys; nothing ever goes back
//!   to it, and it is never streamed nor sent to webhook subscribers.
//! - `failed` is reached only from `pending` (Genesys refused the callback or stayed unavailable).
//! - `in_progress` may go back to `scheduled` (an agent rescheduled the callback in Genesys).
//! - `completed`, `canceled` and `failed` are final: they never change again.
//! - A status "changing" to itself is no change (no new version, no event).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The status of a reservation, `snake_case` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReservationStatus {
    /// The place is taken and the gateway is creating the callback in Genesys.
    Pending,
    /// Genesys holds the callback, waiting for its time.
    Scheduled,
    /// Genesys is calling the customer or the call is connected.
    InProgress,
    /// The callback ended after the customer was connected.
    Completed,
    /// The reservation was canceled (by the caller, or in Genesys before it ever connected).
    Canceled,
    /// Genesys refused the callback or stayed unavailable; the place was released.
    Failed,
}

impl ReservationStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [Self; 6] = [
        Self::Pending,
        Self::Scheduled,
        Self::InProgress,
        Self::Completed,
        Self::Canceled,
        Self::Failed,
    ];

    /// The wire name (`in_progress`...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scheduled => "scheduled",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Canceled => "canceled",
            Self::Failed => "failed",
        }
    }

    /// Whether a reservation in this status holds a place: `pending`, `scheduled` and
    /// `in_progress` count against the slot's capacity.
    pub const fn is_live(self) -> bool {
        matches!(self, Self::Pending | Self::Scheduled | Self::InProgress)
    }

    /// Whether this status never changes again: `completed`, `canceled`, `failed`.
    pub const fn is_final(self) -> bool {
        !self.is_live()
    }

    /// Whether a reservation in this status is visible to stream consumers and webhook
    /// subscribers (every status but `pending`).
    pub const fn is_published(self) -> bool {
        !matches!(self, Self::Pending)
    }

    /// Whether a reservation may change from `self` to `next` (see the module docs). A status
    /// never "changes" to itself.
    pub const fn can_become(self, next: Self) -> bool {
        use ReservationStatus::{Canceled, Completed, Failed, InProgress, Pending, Scheduled};
        match self {
            Pending => matches!(next, Scheduled | InProgress | Completed | Canceled | Failed),
            Scheduled => matches!(next, InProgress | Completed | Canceled),
            InProgress => matches!(next, Scheduled | Completed | Canceled),
            Completed | Canceled | Failed => false,
        }
    }

    /// Moves to `next` if the life cycle allows it.
    ///
    /// `Ok(None)` when `next` is the current status (nothing changes), `Ok(Some(next))` for an
    /// allowed change.
    ///
    /// # Errors
    /// [`TransitionRefused`] when the change is not allowed (always the case from a final
    /// status).
    pub fn transition(self, next: Self) -> Result<Option<Self>, TransitionRefused> {
        if self == next {
            Ok(None)
        } else if self.can_become(next) {
            Ok(Some(next))
        } else {
            Err(TransitionRefused {
                from: self,
                to: next,
            })
        }
    }

    /// The status a reservation in `self` takes after Genesys reports its callback participant
    /// in `state`: `None` when nothing changes — the state is unknown, maps to the current
    /// status, or the change is not allowed (a final reservation stays final).
    pub fn after_participant_state(self, state: &str, history: ConnectionHistory) -> Option<Self> {
        let next = status_for_participant_state(state, history)?;
        self.transition(next).ok().flatten()
    }
}

impl fmt::Display for ReservationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`ReservationStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown reservation status; one of pending, scheduled, in_progress, completed, canceled, failed"
)]
pub struct UnknownStatus;

impl FromStr for ReservationStatus {
    type Err = UnknownStatus;

    /// Parses a wire name (exact, lowercase), e.g. the `status` filter of the list endpoint.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(UnknownStatus)
    }
}

/// A status change the life cycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a reservation that is {from} cannot become {to}")]
pub struct TransitionRefused {
    /// The current status.
    pub from: ReservationStatus,
    /// The status asked for.
    pub to: ReservationStatus,
}

/// Whether the customer's callback participant was ever connected, which decides what the end
/// of a callback means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHistory {
    /// Genesys reported the participant `connected` at some point (or gives it a connected time).
    EverConnected,
    /// The participant was never connected.
    NeverConnected,
}

/// Maps the state of a Genesys callback participant (`Callback.state`, compared without regard
/// to ASCII case) onto a reservation status:
///
/// | Genesys state | status |
/// |---|---|
/// | `scheduled` | `scheduled` |
/// | `alerting`, `dialing`, `contacting`, `offering`, `connected` | `in_progress` |
/// | `disconnected`, `terminated` | `completed` if it ever connected, else `canceled` |
/// | anything else (`none`, a state added by Genesys later...) | `None`: no change |
///
/// This is the mapping alone; [`ReservationStatus::after_participant_state`] applies the life
/// cycle on top of it.
pub fn status_for_participant_state(
    state: &str,
    history: ConnectionHistory,
) -> Option<ReservationStatus> {
    const IN_PROGRESS: [&str; 5] = ["alerting", "dialing", "contacting", "offering", "connected"];
    let is = |name: &str| state.eq_ignore_ascii_case(name);
    if is("scheduled") {
        Some(ReservationStatus::Scheduled)
    } else if IN_PROGRESS.iter().any(|name| is(name)) {
        Some(ReservationStatus::InProgress)
    } else if is("disconnected") || is("terminated") {
        Some(match history {
            ConnectionHistory::EverConnected => ReservationStatus::Completed,
            ConnectionHistory::NeverConnected => ReservationStatus::Canceled,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionHistory::{EverConnected, NeverConnected};
    use super::ReservationStatus::{Canceled, Completed, Failed, InProgress, Pending, Scheduled};
    use super::*;

    #[test]
    fn participant_state_mapping_table() {
        let table = [
            ("scheduled", NeverConnected, Some(Scheduled)),
            ("scheduled", EverConnected, Some(Scheduled)),
            ("alerting", NeverConnected, Some(InProgress)),
            ("dialing", NeverConnected, Some(InProgress)),
            ("contacting", NeverConnected, Some(InProgress)),
            ("offering", NeverConnected, Some(InProgress)),
            ("connected", NeverConnected, Some(InProgress)),
            ("connected", EverConnected, Some(InProgress)),
            ("disconnected", EverConnected, Some(Completed)),
            ("disconnected", NeverConnected, Some(Canceled)),
            ("terminated", EverConnected, Some(Completed)),
            ("terminated", NeverConnected, Some(Canceled)),
            ("CONNECTED", NeverConnected, Some(InProgress)),
            ("Disconnected", EverConnected, Some(Completed)),
            ("none", NeverConnected, None),
            ("parked", EverConnected, None),
            ("", NeverConnected, None),
            (" connected", NeverConnected, None),
        ];
        for (state, history, expected) in table {
            assert_eq!(
                status_for_participant_state(state, history),
                expected,
                "{state:?} {history:?}"
            );
        }
    }

    #[test]
    fn live_and_final_partition_the_statuses() {
        let live: Vec<_> = ReservationStatus::ALL
            .into_iter()
            .filter(|s| s.is_live())
            .collect();
        assert_eq!(live, [Pending, Scheduled, InProgress]);
        for status in ReservationStatus::ALL {
            assert_ne!(status.is_live(), status.is_final(), "{status}");
        }
        assert!(!Pending.is_published());
        assert!(Scheduled.is_published() && Failed.is_published());
    }

    #[test]
    fn final_statuses_never_change() {
        for from in [Completed, Canceled, Failed] {
            for to in ReservationStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
            assert_eq!(from.transition(from), Ok(None));
            assert_eq!(
                from.transition(Scheduled),
                Err(TransitionRefused {
                    from,
                    to: Scheduled
                })
            );
            assert_eq!(
                from.after_participant_state("connected", EverConnected),
                None
            );
        }
    }

    #[test]
    fn nothing_goes_back_to_pending_and_failed_only_comes_from_pending() {
        for from in ReservationStatus::ALL {
            assert!(!from.can_become(Pending), "{from} -> pending");
            assert_eq!(from.can_become(Failed), from == Pending, "{from} -> failed");
        }
    }

    #[test]
    fn live_transitions() {
        assert_eq!(Pending.transition(Scheduled), Ok(Some(Scheduled)));
        assert_eq!(Scheduled.transition(InProgress), Ok(Some(InProgress)));
        assert_eq!(InProgress.transition(Scheduled), Ok(Some(Scheduled)));
        assert_eq!(InProgress.transition(Completed), Ok(Some(Completed)));
        assert_eq!(Scheduled.transition(Canceled), Ok(Some(Canceled)));
        assert_eq!(Scheduled.transition(Scheduled), Ok(None));
        assert!(Scheduled.transition(Failed).is_err());
    }

    #[test]
    fn participant_state_applies_the_life_cycle() {
        assert_eq!(
            Scheduled.after_participant_state("dialing", NeverConnected),
            Some(InProgress)
        );
        assert_eq!(
            InProgress.after_participant_state("connected", EverConnected),
            None
        );
        assert_eq!(
            InProgress.after_participant_state("disconnected", EverConnected),
            Some(Completed)
        );
        assert_eq!(
            Scheduled.after_participant_state("disconnected", NeverConnected),
            Some(Canceled)
        );
        assert_eq!(
            Scheduled.after_participant_state("none", NeverConnected),
            None
        );
    }

    #[test]
    fn wire_names_round_trip() {
        for status in ReservationStatus::ALL {
            assert_eq!(status.as_str().parse::<ReservationStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::Value::String(status.as_str().to_owned())
            );
        }
        assert_eq!(InProgress.to_string(), "in_progress");
        assert_eq!(
            "IN_PROGRESS".parse::<ReservationStatus>(),
            Err(UnknownStatus)
        );
        assert_eq!(
            "inProgress".parse::<ReservationStatus>(),
            Err(UnknownStatus)
        );
    }
}
