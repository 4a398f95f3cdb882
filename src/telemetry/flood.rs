//! The flood rule for logs: a line that repeats — same key (same route, same reason, same
//! target) — is written at most once per [`FloodGate::WINDOW`], and the next one written says
//! how many were suppressed since. A flood of rejected calls grows the log by a line per second
//! per key, not a line per call.
//!
//! Keys are hashed; the table is bounded ([`FloodGate::MAX_KEYS`]): when it is full, keys not
//! seen for a window are dropped first, and a key that finds no room is treated as new (it is
//! written), so an attacker minting keys cannot silence a real one — keys come from bounded
//! values (route templates, codes, configured names), never from request data.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Admits repeated log lines at most once per window per key (see the module docs).
#[derive(Debug, Default)]
pub struct FloodGate {
    slots: Mutex<HashMap<u64, Slot>>,
    hasher: std::hash::RandomState,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// When the last admitted line was written.
    written: Instant,
    /// Lines suppressed since.
    suppressed: u64,
}

impl FloodGate {
    /// At most one line per key per this long.
    pub const WINDOW: Duration = Duration::from_secs(1);
    /// Keys remembered at most.
    pub const MAX_KEYS: usize = 4096;

    /// A gate with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a line with `key` is written now: `Some(suppressed)` — the lines with this key
    /// suppressed since the last one written — or `None` to suppress it (and count it).
    pub fn admit(&self, key: &impl Hash) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    /// [`Self::admit`] at `now` (tests pass their own clock).
    pub fn admit_at(&self, key: &impl Hash, now: Instant) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(slot) = slots.get_mut(&hash) {
            if now.saturating_duration_since(slot.written) < Self::WINDOW {
                slot.suppressed += 1;
                return None;
            }
            let suppressed = slot.suppressed;
            *slot = Slot {
                written: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if slots.len() >= Self::MAX_KEYS {
            slots.retain(|_, slot| now.saturating_duration_since(slot.written) < Self::WINDOW);
            if slots.len() >= Self::MAX_KEYS {
                return Some(0);
            }
        }
        slots.insert(
            hash,
            Slot {
                written: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_per_window_with_the_count_suppressed() {
        let gate = FloodGate::new();
        let t0 = Instant::now();
        assert_eq!(gate.admit_at(&"a", t0), Some(0));
        for i in 1..=99 {
            assert_eq!(gate.admit_at(&"a", t0 + Duration::from_millis(i * 9)), None);
        }
        assert_eq!(gate.admit_at(&"b", t0), Some(0), "another key is its own");
        assert_eq!(
            gate.admit_at(&"a", t0 + Duration::from_millis(1000)),
            Some(99),
            "the next line says how many were suppressed"
        );
        assert_eq!(gate.admit_at(&"a", t0 + Duration::from_millis(1001)), None);
        assert_eq!(
            gate.admit_at(&"a", t0 + Duration::from_secs(5)),
            Some(1),
            "the count restarts after each line written"
        );
    }

    #[test]
    fn a_full_table_drops_stale_keys_and_never_silences_a_new_one() {
        let gate = FloodGate::new();
        let t0 = Instant::now();
        for key in 0..FloodGate::MAX_KEYS {
            assert_eq!(gate.admit_at(&key, t0), Some(0));
        }
        // Full, all fresh: a new key is written (not remembered).
        assert_eq!(gate.admit_at(&"new", t0), Some(0));
        assert_eq!(gate.admit_at(&"new", t0), Some(0));
        // A window later the stale keys make room.
        let later = t0 + FloodGate::WINDOW;
        assert_eq!(gate.admit_at(&"new", later), Some(0));
        assert_eq!(gate.admit_at(&"new", later), None);
    }
}
