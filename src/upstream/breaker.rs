//! The circuit breaker of one upstream, shared by every server thread.
//!
//! It counts consecutive failed *attempts* (connection error, timeout, 429, 5xx — never another
//! 4xx), opens at the threshold, rejects at once while open, lets exactly one probe through once
//! the open period is over (half-open; everyone else is still rejected), closes when the probe
//! succeeds and re-opens when it fails.
//!
//! The state lives in three atomics, so the closed-state fast path of an attempt is one load to
//! get a permit and (after a success with no failure streak) one more load: no lock, no
//! allocation. State *transitions* (open, half-open, close: rare) take a small mutex and set the
//! `gateway_circuit_breaker_state` gauge inside it, so the gauge's last write is always the
//! state's last write — racing transitions cannot leave it stale. Time is passed in
//! (`tokio::time::Instant`), which keeps the state machine testable with explicit instants and
//! with `tokio::time::pause()`.

use super::classify::BreakerEffect;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus::IntGauge;
use tokio::time::Instant;

use crate::config::CircuitBreakerSettings;

/// The state of a breaker, with the values of the `gateway_circuit_breaker_state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Calls pass.
    Closed = 0,
    /// One probe is in flight; other calls are rejected.
    HalfOpen = 1,
    /// Calls are rejected until the open period is over.
    Open = 2,
}

impl BreakerState {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Closed,
            1 => Self::HalfOpen,
            _ => Self::Open,
        }
    }
}

/// A circuit breaker; see the module docs.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// End of the open period, in nanoseconds since `epoch`.
    open_until: AtomicU64,
    epoch: Instant,
    threshold: u32,
    open_for: Duration,
    gauge: Option<IntGauge>,
    /// Held while the state changes (never on the closed fast path).
    transition: Mutex<()>,
}

/// Why an attempt may not be made: the breaker is open (or half-open with its probe in flight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until a probe will be let through (zero while a probe is in flight).
    pub remaining: Duration,
}

impl CircuitBreaker {
    /// A closed breaker with these settings, reporting its state on `gauge` (if given).
    pub fn new(settings: &CircuitBreakerSettings, gauge: Option<IntGauge>) -> Self {
        if let Some(g) = &gauge {
            g.set(BreakerState::Closed as i64);
        }
        Self {
            state: AtomicU8::new(BreakerState::Closed as u8),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            epoch: Instant::now(),
            threshold: settings.failure_threshold.max(1),
            open_for: Duration::from_millis(settings.open_ms),
            gauge,
            transition: Mutex::new(()),
        }
    }

    /// The current state (an open breaker whose period is over still reads `Open` until a
    /// caller takes the probe).
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Asks to make one attempt at `now`.
    ///
    /// # Errors
    /// [`Rejected`] while open, or while half-open with the probe in flight.
    pub fn try_acquire(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        loop {
            match BreakerState::from_u8(self.state.load(Ordering::Acquire)) {
                BreakerState::Closed => {
                    return Ok(Permit {
                        breaker: self,
                        kind: PermitKind::Normal,
                    });
                }
                BreakerState::HalfOpen => {
                    return Err(Rejected {
                        remaining: Duration::ZERO,
                    });
                }
                BreakerState::Open => {
                    let remaining = self.remaining(now);
                    if !remaining.is_zero() {
                        return Err(Rejected { remaining });
                    }
                    let _transition = self.lock();
                    if self.state() == BreakerState::Open && self.remaining(now).is_zero() {
                        self.set_state(BreakerState::HalfOpen);
                        return Ok(Permit {
                            breaker: self,
                            kind: PermitKind::Probe,
                        });
                    }
                    // Someone else changed the state meanwhile: look again.
                }
            }
        }
    }

    /// When the breaker is open at `now`, how long it stays open; `None` when closed or
    /// half-open (or open with its period over).
    pub fn open_remaining(&self, now: Instant) -> Option<Duration> {
        if self.state() != BreakerState::Open {
            return None;
        }
        let remaining = self.remaining(now);
        (!remaining.is_zero()).then_some(remaining)
    }

    fn remaining(&self, now: Instant) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        let now = self.nanos(now);
        Duration::from_nanos(until.saturating_sub(now))
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The transition lock; every state write happens under it.
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.transition
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the state and the gauge. Only under [`CircuitBreaker::lock`].
    fn set_state(&self, state: BreakerState) {
        self.state.store(state as u8, Ordering::Release);
        if let Some(g) = &self.gauge {
            g.set(state as i64);
        }
    }

    /// Opens for a full period from `now`. Only under [`CircuitBreaker::lock`].
    fn open_locked(&self, now: Instant) {
        let until = self
            .nanos(now)
            .saturating_add(u64::try_from(self.open_for.as_nanos()).unwrap_or(u64::MAX));
        self.open_until.store(until, Ordering::Release);
        self.set_state(BreakerState::Open);
    }

    fn on_success(&self, kind: PermitKind) {
        match kind {
            PermitKind::Probe => {
                let _transition = self.lock();
                self.consecutive_failures.store(0, Ordering::Release);
                if self.state() == BreakerState::HalfOpen {
                    self.set_state(BreakerState::Closed);
                }
            }
            PermitKind::Normal => {
                // Avoid dirtying the shared cache line when there is no streak to reset.
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Release);
                }
            }
        }
    }

    fn on_failure(&self, kind: PermitKind, now: Instant) {
        match kind {
            PermitKind::Probe => {
                let _transition = self.lock();
                if self.state() == BreakerState::HalfOpen {
                    self.open_locked(now);
                }
            }
            PermitKind::Normal => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
                if failures >= self.threshold && self.state() == BreakerState::Closed {
                    let _transition = self.lock();
                    if self.state() == BreakerState::Closed {
                        self.open_locked(now);
                        tracing::warn!(failures, "circuit breaker opened");
                    }
                }
            }
        }
    }

    /// A probe ended without an outcome (its call was dropped, or the caller's deadline cut
    /// it): let the next caller probe.
    fn on_abandoned_probe(&self, now: Instant) {
        let _transition = self.lock();
        if self.state() == BreakerState::HalfOpen {
            self.open_until.store(self.nanos(now), Ordering::Release);
            self.set_state(BreakerState::Open);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Normal,
    Probe,
}

/// Permission for one attempt. Report its outcome with [`Permit::success`] or
/// [`Permit::failure`]; dropping it reports nothing — the attempt is neutral, e.g. when the
/// caller's deadline cut it (a dropped probe lets the next caller probe).
#[derive(Debug)]
#[must_use = "report the attempt's outcome"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    kind: PermitKind,
}

impl Permit<'_> {
    /// Whether this attempt is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.kind == PermitKind::Probe
    }

    /// The attempt got an answer that is not a failure (2xx, or a 4xx other than 429).
    pub fn success(self) {
        let this = std::mem::ManuallyDrop::new(self);
        this.breaker.on_success(this.kind);
    }

    /// The attempt failed (connection error, timeout, 429, 5xx) at `now`.
    pub fn failure(self, now: Instant) {
        let this = std::mem::ManuallyDrop::new(self);
        this.breaker.on_failure(this.kind, now);
    }

    /// Reports what an attempt's classification says (see [`super::classify_answer`]);
    /// [`BreakerEffect::Neutral`] is the same as dropping the permit.
    pub fn report(self, effect: BreakerEffect, now: Instant) {
        match effect {
            BreakerEffect::Success => self.success(),
            BreakerEffect::Failure => self.failure(now),
            BreakerEffect::Neutral => drop(self),
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.kind == PermitKind::Probe {
            self.breaker.on_abandoned_probe(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            &CircuitBreakerSettings {
                failure_threshold: threshold,
                open_ms,
            },
            None,
        )
    }

    #[test]
    fn opens_at_threshold_and_rejects_with_remaining_time() {
        let b = breaker(3, 1000);
        let t0 = Instant::now();
        for _ in 0..2 {
            b.try_acquire(t0).unwrap().failure(t0);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire(t0).unwrap().failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
        let rejected = b.try_acquire(t0 + Duration::from_millis(400)).unwrap_err();
        assert_eq!(rejected.remaining, Duration::from_millis(600));
        assert_eq!(
            b.open_remaining(t0 + Duration::from_millis(400)),
            Some(Duration::from_millis(600))
        );
    }

    #[test]
    fn success_resets_the_streak_and_4xx_style_successes_count_as_success() {
        let b = breaker(2, 1000);
        let t0 = Instant::now();
        b.try_acquire(t0).unwrap().failure(t0);
        b.try_acquire(t0).unwrap().success();
        b.try_acquire(t0).unwrap().failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
        b.try_acquire(t0).unwrap().failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_and_closes_on_success() {
        let b = breaker(1, 1000);
        let t0 = Instant::now();
        b.try_acquire(t0).unwrap().failure(t0);
        let later = t0 + Duration::from_millis(1000);
        let probe = b.try_acquire(later).unwrap();
        assert!(probe.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        for _ in 0..10 {
            assert_eq!(b.try_acquire(later).unwrap_err().remaining, Duration::ZERO);
        }
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.try_acquire(later).unwrap().is_probe());
    }

    #[test]
    fn failed_probe_reopens_for_a_full_period() {
        let b = breaker(1, 1000);
        let t0 = Instant::now();
        b.try_acquire(t0).unwrap().failure(t0);
        let t1 = t0 + Duration::from_millis(1500);
        b.try_acquire(t1).unwrap().failure(t1);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            b.try_acquire(t1 + Duration::from_millis(1))
                .unwrap_err()
                .remaining,
            Duration::from_millis(999)
        );
    }

    #[test]
    fn dropped_probe_lets_the_next_caller_probe() {
        let b = breaker(1, 1000);
        let t0 = Instant::now();
        b.try_acquire(t0).unwrap().failure(t0);
        let t1 = t0 + Duration::from_millis(1000);
        drop(b.try_acquire(t1).unwrap());
        assert!(b.try_acquire(Instant::now().max(t1)).unwrap().is_probe());
    }

    #[test]
    fn the_gauge_always_shows_the_state_under_racing_transitions() {
        use std::sync::{Arc, Barrier};
        let gauge = IntGauge::new("breaker_state_test", "test").unwrap();
        // Threshold 1 and no open period: every failure opens, the next caller probes, and
        // opening and closing race all the time.
        let b = Arc::new(CircuitBreaker::new(
            &CircuitBreakerSettings {
                failure_threshold: 1,
                open_ms: 0,
            },
            Some(gauge.clone()),
        ));
        const ROUNDS: usize = 20_000;
        let barrier = Arc::new(Barrier::new(3));
        let workers: Vec<_> = (0..2)
            .map(|w| {
                let b = b.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    for round in 0..ROUNDS {
                        barrier.wait();
                        for op in 0..4 {
                            let now = Instant::now();
                            if let Ok(permit) = b.try_acquire(now) {
                                if (w + op + round) % 2 == 0 {
                                    permit.success();
                                } else {
                                    permit.failure(now);
                                }
                            }
                        }
                        barrier.wait();
                    }
                })
            })
            .collect();
        let mut stale = 0;
        for _ in 0..ROUNDS {
            barrier.wait();
            barrier.wait();
            if gauge.get() != b.state() as i64 {
                stale += 1;
            }
        }
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(stale, 0, "rounds that ended with a stale gauge");
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicUsize;
        let b = Arc::new(breaker(1, 10));
        let t0 = Instant::now();
        b.try_acquire(t0).unwrap().failure(t0);
        let later = t0 + Duration::from_millis(10);
        let probes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                let probes = probes.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(permit) = b.try_acquire(later) {
                            probes.fetch_add(1, Ordering::SeqCst);
                            std::mem::forget(permit);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1);
    }
}
