//! The queues that take reservations, each with its calendar compiled once at load: time zone,
//! open hours, capacity, longest slot and booking horizon.
//!
//! # When a slot is inside the open hours
//! Open hours are wall-clock times in the queue's IANA time zone. A slot `[start, end)` is
//! inside the open hours when **every wall-clock reading during the slot lies within one entry's
//! window on one day**: for some day `d` whose weekday the entry lists, every local time shown
//! by a clock in the zone from `start` up to `end` is between `d` at the entry's opening time and
//! `d` at its closing time (closing `24:00` being the next day's `00:00`).
//!
//! Consequences:
//! - A slot across local midnight is never inside one entry (overnight opening is two entries,
//!   and a slot cannot span both).
//! - A slot ending exactly at the next day's `00:00` local is inside an entry closing at `24:00`.
//! - Daylight saving time is handled from the zone's rules: on the spring-forward day in
//!   America/New_York, a slot 01:30–03:30 local is one real hour long and reads 01:30 to 03:30
//!   on the wall, so it needs open hours covering 01:30–03:30. On the fall-back day, a slot from
//!   01:30 EDT to 01:30 EST reads 01:30…02:00, then 01:00…01:30: it needs open hours covering
//!   01:00–02:00.
//!
//! Length, the booking horizon and "in the future" are about real elapsed time, never about
//! wall-clock differences (see [`super::validate`]).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::reservation::Slot;
use crate::config::{CallbacksSettings, OpenHours, Problem};

/// Every configured queue's calendar, looked up by Genesys queue id. Built once from
/// `[callbacks]`; cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct CallbackQueues {
    queues: Vec<CallbackQueue>,
    by_id: HashMap<String, usize>,
}

/// One queue that takes reservations (`[[callbacks.queues]]`), compiled.
#[derive(Debug, Clone)]
pub struct CallbackQueue {
    id: String,
    name: String,
    timezone: Tz,
    open_hours: Vec<OpenHours>,
    open_hours_text: String,
    slot_capacity: u32,
    max_slot: TimeDelta,
    booking_horizon: TimeDelta,
}

impl CallbackQueues {
    /// Compiles every `[[callbacks.queues]]` entry.
    ///
    /// # Errors
    /// Every problem found, with its key path (`callbacks.queues[1].timezone`,
    /// `callbacks.queues[0].open_hours[2]`...): an empty or repeated id, a time zone that is not
    /// IANA, no or malformed open hours, `slot_capacity` outside 1..=50, a `max_slot_minutes` or
    /// `booking_horizon_days` of 0. (The configuration loader checks the same rules with the same
    /// paths and messages; this keeps settings made in code from compiling into a broken
    /// calendar.)
    pub fn from_settings(settings: &CallbacksSettings) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut queues = Vec::with_capacity(settings.queues.len());
        let mut by_id = HashMap::with_capacity(settings.queues.len());
        for (i, q) in settings.queues.iter().enumerate() {
            let at = |key: &str| format!("callbacks.queues[{i}].{key}");
            let before = problems.len();
            if q.id.is_empty() {
                problems.push(Problem::new(at("id"), "must not be empty"));
            } else if by_id.contains_key(&q.id) {
                problems.push(Problem::new(at("id"), format!("`{}` is used twice", q.id)));
            }
            let timezone = q.timezone.parse::<Tz>().ok();
            if timezone.is_none() {
                problems.push(Problem::new(
                    at("timezone"),
                    format!("`{}` is not an IANA time zone", q.timezone),
                ));
            }
            if q.open_hours.is_empty() {
                problems.push(Problem::new(
                    at("open_hours"),
                    "must list at least one entry",
                ));
            }
            let mut open_hours = Vec::with_capacity(q.open_hours.len());
            for (j, entry) in q.open_hours.iter().enumerate() {
                match OpenHours::parse(entry) {
                    Ok(hours) => open_hours.push(hours),
                    Err(message) => problems.push(Problem::new(
                        format!("callbacks.queues[{i}].open_hours[{j}]"),
                        message,
                    )),
                }
            }
            if !(1..=50).contains(&q.slot_capacity) {
                problems.push(Problem::new(
                    at("slot_capacity"),
                    "must be between 1 and 50",
                ));
            }
            if q.max_slot_minutes == 0 {
                problems.push(Problem::new(
                    at("max_slot_minutes"),
                    "must be greater than 0",
                ));
            }
            if q.booking_horizon_days == 0 {
                problems.push(Problem::new(
                    at("booking_horizon_days"),
                    "must be greater than 0",
                ));
            }
            if let (true, Some(timezone)) = (problems.len() == before, timezone) {
                by_id.insert(q.id.clone(), queues.len());
                queues.push(CallbackQueue {
                    id: q.id.clone(),
                    name: q.name.clone(),
                    timezone,
                    open_hours,
                    open_hours_text: q.open_hours.join(", "),
                    slot_capacity: q.slot_capacity,
                    max_slot: TimeDelta::minutes(q.max_slot_minutes.into()),
                    booking_horizon: TimeDelta::days(q.booking_horizon_days.into()),
                });
            }
        }
        if problems.is_empty() {
            Ok(Self { queues, by_id })
        } else {
            Err(problems)
        }
    }

    /// The queue with this Genesys queue id, if it is configured.
    pub fn get(&self, queue_id: &str) -> Option<&CallbackQueue> {
        self.by_id.get(queue_id).map(|&i| &self.queues[i])
    }

    /// Every queue, in configuration order (e.g. to subscribe to each one's notifications).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &CallbackQueue> {
        self.queues.iter()
    }

    /// How many queues are configured.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether no queue is configured (then no reservation can be made).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }
}

impl CallbackQueue {
    /// The Genesys queue id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone the open hours are in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The open-hours entries, in configuration order.
    pub fn open_hours(&self) -> &[OpenHours] {
        &self.open_hours
    }

    /// The open hours as configured, for messages (`mon-fri 08:00-20:00, sat 09:00-13:00`).
    pub fn open_hours_text(&self) -> &str {
        &self.open_hours_text
    }

    /// How many live reservations may overlap any instant (1..=50).
    pub fn slot_capacity(&self) -> u32 {
        self.slot_capacity
    }

    /// The longest slot, in real elapsed time.
    pub fn max_slot(&self) -> TimeDelta {
        self.max_slot
    }

    /// How far ahead of now a slot may start, in real elapsed time (whole days of 24 hours).
    pub fn booking_horizon(&self) -> TimeDelta {
        self.booking_horizon
    }

    /// Whether the slot lies inside one open-hours entry on one day (the rule is in the module
    /// docs).
    pub fn is_open_during(&self, slot: &Slot) -> bool {
        if slot.duration() > LONGEST_DAY {
            // No day's window lasts this long, whatever the zone does: refuse without walking it.
            return false;
        }
        let (lowest, highest) = wall_clock_span(self.timezone, slot.start(), slot.end());
        let day = lowest.date();
        self.open_hours.iter().any(|hours| {
            let opens = day.and_time(hours.start);
            let closes = match hours.end {
                Some(end) => day.and_time(end),
                None => day.and_time(chrono::NaiveTime::MIN) + TimeDelta::days(1),
            };
            hours.includes(day.weekday()) && opens <= lowest && highest <= closes
        })
    }
}

/// Comfortably longer than any one local day lasts in real time (24 h plus a backward clock
/// change), which bounds the work for an absurdly long slot.
const LONGEST_DAY: TimeDelta = TimeDelta::hours(48);

/// A slot is examined in pieces this long. Under the present and future rules of every zone in
/// the tz database an offset changes at most once within a piece this long (transitions are
/// months apart), so comparing the offsets at a piece's two ends finds each transition.
const PIECE: TimeDelta = TimeDelta::hours(6);

/// The lowest and the highest wall-clock reading in `tz` during `[start, end)` — the highest
/// being the reading the clock approaches at `end`, or just before a transition that sets the
/// clock back. `start < end`.
fn wall_clock_span(
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> (NaiveDateTime, NaiveDateTime) {
    let offset = |at: DateTime<Utc>| tz.offset_from_utc_datetime(&at.naive_utc()).fix();
    let wall = |at: DateTime<Utc>, off: chrono::FixedOffset| at.naive_utc() + off;
    let mut lowest = wall(start, offset(start));
    let mut highest = lowest;
    let mut piece_start = start;
    while piece_start < end {
        let piece_end = (piece_start + PIECE).min(end);
        let (before, after) = (offset(piece_start), offset(piece_end));
        if before != after {
            let change = transition_in(piece_start, piece_end, before, &offset);
            highest = highest.max(wall(change, before));
            lowest = lowest.min(wall(change, after));
        }
        highest = highest.max(wall(piece_end, after));
        lowest = lowest.min(wall(piece_end, after));
        piece_start = piece_end;
    }
    (lowest, highest)
}

/// The first whole second in `(from, to]` whose offset is not `before`, given that `from` has
/// offset `before` and `to` does not (transitions happen on whole seconds).
fn transition_in(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    before: chrono::FixedOffset,
    offset: &impl Fn(DateTime<Utc>) -> chrono::FixedOffset,
) -> DateTime<Utc> {
    let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or(to);
    // `lo` has the old offset, `hi` the new one; a transition at a whole second T means every
    // instant in [floor(from), T) has the old offset.
    let (mut lo, mut hi) = (from.timestamp(), to.timestamp());
    if offset(at(hi)) == before {
        // Cannot happen while transitions fall on whole seconds (a transition at or before `to`
        // is at or before its whole second); keeps the search sound if one ever does not.
        hi += 1;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset(at(mid)) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CallbackQueueSettings;

    fn settings(queues: Vec<CallbackQueueSettings>) -> CallbacksSettings {
        CallbacksSettings {
            queues,
            ..CallbacksSettings::default()
        }
    }

    fn queue(id: &str, timezone: &str, open_hours: &[&str]) -> CallbackQueueSettings {
        CallbackQueueSettings {
            id: id.to_owned(),
            name: format!("queue {id}"),
            timezone: timezone.to_owned(),
            open_hours: open_hours.iter().map(|s| (*s).to_owned()).collect(),
            slot_capacity: 10,
            max_slot_minutes: 60,
            booking_horizon_days: 30,
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn slot(start: &str, end: &str) -> Slot {
        Slot::new(utc(start), utc(end)).unwrap()
    }

    fn compiled(timezone: &str, open_hours: &[&str]) -> CallbackQueue {
        let queues =
            CallbackQueues::from_settings(&settings(vec![queue("q", timezone, open_hours)]))
                .unwrap();
        queues.get("q").unwrap().clone()
    }

    #[test]
    fn compiles_and_looks_up_by_id() {
        let queues = CallbackQueues::from_settings(&settings(vec![
            queue(
                "a",
                "America/New_York",
                &["mon-fri 08:00-20:00", "sat 09:00-13:00"],
            ),
            queue("b", "Asia/Kolkata", &["mon-sun 00:00-24:00"]),
        ]))
        .unwrap();
        assert_eq!(queues.len(), 2);
        let a = queues.get("a").unwrap();
        assert_eq!(a.name(), "queue a");
        assert_eq!(a.timezone(), chrono_tz::America::New_York);
        assert_eq!(a.open_hours().len(), 2);
        assert_eq!(a.max_slot(), TimeDelta::hours(1));
        assert_eq!(a.booking_horizon(), TimeDelta::days(30));
        assert_eq!(a.slot_capacity(), 10);
        assert!(queues.get("c").is_none());
        let ids: Vec<_> = queues.iter().map(CallbackQueue::id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let mut bad = queue(
            "a",
            "America/Nowhere",
            &["mon-fri 08:00-20:00", "fri-mon 08:00-09:00"],
        );
        bad.slot_capacity = 51;
        bad.max_slot_minutes = 0;
        bad.booking_horizon_days = 0;
        let problems = CallbackQueues::from_settings(&settings(vec![
            queue("a", "UTC", &["mon 08:00-09:00"]),
            bad,
            queue("", "UTC", &[]),
        ]))
        .unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "callbacks.queues[1].id",
                "callbacks.queues[1].timezone",
                "callbacks.queues[1].open_hours[1]",
                "callbacks.queues[1].slot_capacity",
                "callbacks.queues[1].max_slot_minutes",
                "callbacks.queues[1].booking_horizon_days",
                "callbacks.queues[2].id",
                "callbacks.queues[2].open_hours",
            ]
        );
        assert!(problems[1].message.contains("America/Nowhere"));
    }

    #[test]
    fn plain_days() {
        let q = compiled("America/New_York", &["mon-fri 08:00-20:00"]);
        // Monday 2027-03-15, EDT (UTC-4).
        assert!(q.is_open_during(&slot(
            "2027-03-15T08:00:00-04:00",
            "2027-03-15T09:00:00-04:00"
        )));
        assert!(q.is_open_during(&slot(
            "2027-03-15T19:00:00-04:00",
            "2027-03-15T20:00:00-04:00"
        )));
        assert!(!q.is_open_during(&slot(
            "2027-03-15T07:59:00-04:00",
            "2027-03-15T08:30:00-04:00"
        )));
        assert!(!q.is_open_during(&slot(
            "2027-03-15T19:30:00-04:00",
            "2027-03-15T20:00:01-04:00"
        )));
        // Saturday.
        assert!(!q.is_open_during(&slot(
            "2027-03-20T10:00:00-04:00",
            "2027-03-20T11:00:00-04:00"
        )));
    }

    #[test]
    fn a_slot_must_fit_one_entry() {
        // Two adjacent entries on one day: a slot across the seam is not inside one entry.
        let q = compiled("UTC", &["mon 08:00-12:00", "mon 12:00-16:00"]);
        assert!(q.is_open_during(&slot("2027-03-15T11:00:00Z", "2027-03-15T12:00:00Z")));
        assert!(q.is_open_during(&slot("2027-03-15T12:00:00Z", "2027-03-15T13:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-03-15T11:30:00Z", "2027-03-15T12:30:00Z")));
    }

    #[test]
    fn midnight() {
        let q = compiled("UTC", &["mon 20:00-24:00", "tue 00:00-04:00"]);
        assert!(q.is_open_during(&slot("2027-03-15T23:00:00Z", "2027-03-16T00:00:00Z")));
        assert!(q.is_open_during(&slot("2027-03-16T00:00:00Z", "2027-03-16T01:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-03-15T23:30:00Z", "2027-03-16T00:30:00Z")));
    }

    #[test]
    fn spring_forward_is_read_on_the_wall_clock() {
        // 2027-03-14 (Sunday), America/New_York: 02:00 EST becomes 03:00 EDT.
        // The slot 06:30Z-07:30Z reads 01:30 EST .. 03:30 EDT.
        let s = slot("2027-03-14T06:30:00Z", "2027-03-14T07:30:00Z");
        assert_eq!(s.duration(), TimeDelta::hours(1));
        assert!(compiled("America/New_York", &["sun 01:00-04:00"]).is_open_during(&s));
        assert!(compiled("America/New_York", &["sun 01:30-03:30"]).is_open_during(&s));
        assert!(!compiled("America/New_York", &["sun 00:00-03:00"]).is_open_during(&s));
        assert!(!compiled("America/New_York", &["sun 02:00-04:00"]).is_open_during(&s));
    }

    #[test]
    fn fall_back_is_read_on_the_wall_clock() {
        // 2027-11-07 (Sunday), America/New_York: 02:00 EDT becomes 01:00 EST.
        // 05:30Z-06:30Z reads 01:30 EDT .. 02:00, then 01:00 EST .. 01:30.
        let s = slot("2027-11-07T05:30:00Z", "2027-11-07T06:30:00Z");
        assert!(compiled("America/New_York", &["sun 01:00-02:00"]).is_open_during(&s));
        assert!(!compiled("America/New_York", &["sun 01:30-02:00"]).is_open_during(&s));
        assert!(!compiled("America/New_York", &["sun 01:00-01:45"]).is_open_during(&s));
        // After the change, ordinary hours.
        let q = compiled("America/New_York", &["sun 08:00-20:00"]);
        assert!(q.is_open_during(&slot("2027-11-07T13:00:00Z", "2027-11-07T14:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-11-07T12:30:00Z", "2027-11-07T13:30:00Z")));
    }

    #[test]
    fn a_slot_longer_than_any_day_is_never_open() {
        let q = compiled("UTC", &["mon-sun 00:00-24:00"]);
        assert!(q.is_open_during(&slot("2027-03-15T00:00:00Z", "2027-03-16T00:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-03-15T00:00:00Z", "2127-03-16T00:00:00Z")));
    }

    #[test]
    fn half_hour_offsets() {
        // Asia/Kolkata is UTC+05:30 all year.
        let q = compiled("Asia/Kolkata", &["mon-fri 09:00-17:30"]);
        assert!(q.is_open_during(&slot("2027-03-15T03:30:00Z", "2027-03-15T04:30:00Z")));
        assert!(q.is_open_during(&slot("2027-03-15T11:00:00Z", "2027-03-15T12:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-03-15T03:00:00Z", "2027-03-15T04:00:00Z")));
        assert!(!q.is_open_during(&slot("2027-03-15T11:30:00Z", "2027-03-15T12:30:00Z")));
    }

    #[test]
    fn wall_clock_span_across_transitions() {
        let ny = chrono_tz::America::New_York;
        let local = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            wall_clock_span(ny, utc("2027-03-14T06:30:00Z"), utc("2027-03-14T07:30:00Z")),
            (local("2027-03-14 01:30:00"), local("2027-03-14 03:30:00"))
        );
        assert_eq!(
            wall_clock_span(ny, utc("2027-11-07T05:30:00Z"), utc("2027-11-07T06:30:00Z")),
            (local("2027-11-07 01:00:00"), local("2027-11-07 02:00:00"))
        );
        // A fractional end just past the transition second.
        assert_eq!(
            wall_clock_span(
                ny,
                utc("2027-11-07T05:30:00Z"),
                utc("2027-11-07T06:00:00.5Z")
            ),
            (local("2027-11-07 01:00:00"), local("2027-11-07 02:00:00"))
        );
        // A long slot crossing the transition in its second piece.
        assert_eq!(
            wall_clock_span(ny, utc("2027-11-06T20:00:00Z"), utc("2027-11-07T12:00:00Z")),
            (local("2027-11-06 16:00:00"), local("2027-11-07 07:00:00"))
        );
    }
}
