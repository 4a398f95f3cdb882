//! The one retry schedule of the process: how long to wait before retry number *n*.
//!
//! Every place that waits between attempts takes its waits from a [`Backoff`]: the upstream
//! stack between attempts of one call, the notifications client between reconnections, the
//! store's group committer after a failed commit, and the delivery engine when it schedules a
//! durable retry. A schedule is data — a [`Growth`] (exponential or linear), a first step, a
//! cap and a [`Jitter`] — so that a caller only says *which* schedule, never re-derives the
//! arithmetic.
//!
//! Retry numbers start at 1 (the wait before the first retry, after the first attempt failed).
//! The ceiling of retry *n* is `base × 2^(n-1)` (exponential) or `base × n` (linear), capped at
//! `cap`; the jitter then picks the actual wait from the ceiling.

use std::time::Duration;

use rand::Rng;

/// How the ceiling grows from one retry to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Growth {
    /// `base × 2^(n-1)`.
    Exponential,
    /// `base × n`.
    Linear,
}

/// How the actual wait is picked from the ceiling `c` of a retry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// Exactly `c`.
    None,
    /// Uniform in `0 ..= c` ("full jitter": many clients retrying at once spread out most).
    Full,
    /// Uniform in `c/2 ..= c` (never much shorter than planned, still spread).
    Half,
    /// Uniform in `c × (1 - f) ..= c × (1 + f)` (e.g. ±20 % with `f = 0.2`); may exceed the
    /// cap by the same fraction.
    Proportional(f64),
}

/// A retry schedule (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// How the ceiling grows.
    pub growth: Growth,
    /// The ceiling of the first retry.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    /// How the wait is picked from the ceiling.
    pub jitter: Jitter,
}

impl Backoff {
    /// An exponential schedule from `base`, capped at `cap`, with `jitter`.
    pub const fn exponential(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self {
            growth: Growth::Exponential,
            base,
            cap,
            jitter,
        }
    }

    /// A linear schedule from `base`, capped at `cap`, with `jitter`.
    pub const fn linear(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self {
            growth: Growth::Linear,
            base,
            cap,
            jitter,
        }
    }

    /// The ceiling of retry `retry` (1 = the first retry), before jitter: `base × 2^(retry-1)`
    /// or `base × retry`, at most `cap`. Retry 0 counts as 1.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let retry = retry.max(1);
        let grown = match self.growth {
            Growth::Exponential => {
                let factor = 1u32.checked_shl(retry - 1).unwrap_or(u32::MAX);
                self.base.checked_mul(factor)
            }
            Growth::Linear => self.base.checked_mul(retry),
        };
        grown.unwrap_or(Duration::MAX).min(self.cap)
    }

    /// The wait before retry `retry` (1 = the first retry): the jitter applied to
    /// [`Self::ceiling`].
    pub fn delay(&self, retry: u32) -> Duration {
        self.delay_with(retry, &mut rand::rng())
    }

    /// [`Self::delay`] drawing from `rng` (tests pass a seeded one).
    pub fn delay_with(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        let picked = match self.jitter {
            Jitter::None => nanos,
            Jitter::Full => rng.random_range(0..=nanos),
            Jitter::Half => rng.random_range(nanos / 2..=nanos),
            Jitter::Proportional(fraction) => {
                let fraction = fraction.clamp(0.0, 1.0);
                let factor = 1.0 + fraction * (2.0 * rng.random::<f64>() - 1.0);
                // Saturating float-to-int conversion: at most u64::MAX.
                (nanos as f64 * factor) as u64
            }
        };
        Duration::from_nanos(picked)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn exponential_ceilings_double_up_to_the_cap() {
        let b = Backoff::exponential(100 * MS, 1000 * MS, Jitter::None);
        let ceilings: Vec<_> = (1..=6).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(b.ceiling(0), 100 * MS, "retry 0 counts as the first");
        assert_eq!(b.ceiling(u32::MAX), 1000 * MS, "no overflow");
        assert_eq!(b.delay(3), 400 * MS, "no jitter: the ceiling itself");
    }

    #[test]
    fn linear_ceilings_grow_by_the_base_up_to_the_cap() {
        let b = Backoff::linear(2000 * MS, 7000 * MS, Jitter::None);
        let ceilings: Vec<_> = (1..=5).map(|n| b.ceiling(n)).collect();
        assert_eq!(
            ceilings,
            [2000 * MS, 4000 * MS, 6000 * MS, 7000 * MS, 7000 * MS]
        );
        assert_eq!(b.ceiling(u32::MAX), 7000 * MS, "no overflow");
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_ceiling_and_varies() {
        let b = Backoff::exponential(100 * MS, 1000 * MS, Jitter::Full);
        let mut rng = StdRng::seed_from_u64(7);
        let waits: Vec<_> = (0..500).map(|_| b.delay_with(3, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= 400 * MS));
        assert!(waits.iter().any(|w| *w < 100 * MS), "reaches low values");
        assert!(waits.iter().any(|w| *w > 300 * MS), "reaches high values");
    }

    #[test]
    fn half_jitter_stays_between_half_and_all_of_the_ceiling() {
        let b = Backoff::exponential(1000 * MS, 30_000 * MS, Jitter::Half);
        let mut rng = StdRng::seed_from_u64(11);
        let waits: Vec<_> = (0..500).map(|_| b.delay_with(2, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w >= 1000 * MS && *w <= 2000 * MS));
        let spread: std::collections::HashSet<_> = waits.iter().collect();
        assert!(spread.len() > 100, "jitter varies the wait");
    }

    #[test]
    fn proportional_jitter_stays_within_the_fraction() {
        let b = Backoff::exponential(
            Duration::from_secs(2),
            Duration::from_secs(3600),
            Jitter::Proportional(0.2),
        );
        let mut rng = StdRng::seed_from_u64(3);
        let waits: Vec<_> = (0..1000).map(|_| b.delay_with(3, &mut rng)).collect();
        // Ceiling of retry 3: 8 s; ±20 %: 6.4 s ..= 9.6 s.
        assert!(
            waits
                .iter()
                .all(|w| *w >= 6400 * MS && *w <= 9600 * MS + MS)
        );
        assert!(waits.iter().any(|w| *w < 7000 * MS));
        assert!(waits.iter().any(|w| *w > 9000 * MS));
        // The cap applies to the ceiling; the jitter may go above it by the fraction.
        let capped = b.delay_with(40, &mut rng);
        assert!(capped <= Duration::from_secs(4320) && capped >= Duration::from_secs(2880));
    }

    #[test]
    fn a_zero_schedule_never_waits() {
        let b = Backoff::exponential(Duration::ZERO, Duration::ZERO, Jitter::Full);
        assert_eq!(b.delay(5), Duration::ZERO);
    }
}
