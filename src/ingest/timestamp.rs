//! An event's `timestamp`: when the business event happened, as the legacy system wrote it.
//!
//! Accepted forms, and nothing else (an unreadable timestamp is an error, never "now"):
//! - an RFC 3339 string with any offset (`2024-05-01T12:30:00+02:00`, `...Z`, lowercase `t`/`z`
//!   and a space separator included), converted to UTC; its UTC year must lie in 0000–9999;
//! - epoch **seconds** or **milliseconds** as a JSON integer or a string of ASCII digits: values
//!   below 10^11 are seconds, from 10^11 on milliseconds. The largest accepted is
//!   253402300799999 ms (9999-12-31T23:59:59.999Z). Negative values are refused (no legacy clock
//!   is set before 1970, and a negative number is a bug such as a signed overflow), as are
//!   fractions and exponents (`1700000000.5`, `1.7e9`): an epoch time is a whole number.
//!
//! Times are kept to the millisecond (sub-millisecond digits are truncated), so the instant
//! stored and the `eventTime` delivered ([`format_event_time`]) are the same.

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Utc};

/// Epoch values from this one on are milliseconds, below it seconds.
pub const MILLIS_FROM: u64 = 100_000_000_000;

/// The last accepted epoch value (milliseconds): 9999-12-31T23:59:59.999Z.
pub const MAX_EPOCH_MILLIS: u64 = 253_402_300_799_999;

/// Why a timestamp was refused: the `errorCode` and message of its `details` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampError {
    /// Not one of the accepted forms (`errorCode` `format`).
    Format(&'static str),
    /// An accepted form, but outside the range of times (`errorCode` `range`).
    Range(&'static str),
    /// Neither a string nor a number (`errorCode` `type`).
    Type,
}

impl TimestampError {
    /// The `errorCode` of the detail.
    pub fn code(self) -> &'static str {
        match self {
            Self::Format(_) => "format",
            Self::Range(_) => "range",
            Self::Type => "type",
        }
    }

    /// The message of the detail (never quotes the value).
    pub fn message(self) -> &'static str {
        match self {
            Self::Format(m) | Self::Range(m) => m,
            Self::Type => "timestamp must be a string or an integer",
        }
    }
}

const NOT_A_TIME: &str = "timestamp must be an RFC 3339 date-time with an offset, or epoch \
                          seconds or milliseconds";
const NOT_WHOLE: &str = "an epoch timestamp must be a whole number, without fraction or exponent";
const NEGATIVE: &str = "an epoch timestamp must not be negative";
const TOO_LATE: &str = "timestamp is after 9999-12-31T23:59:59.999Z";
const YEAR_RANGE: &str = "timestamp must fall in the years 0000 to 9999 (UTC)";

/// Reads a timestamp from the raw JSON text of its value (a string literal or a number, as
/// written in the request).
///
/// # Errors
/// See [`TimestampError`].
pub fn parse_timestamp(json: &str) -> Result<DateTime<Utc>, TimestampError> {
    match json.as_bytes().first() {
        Some(b'"') => {
            let text: String = serde_json::from_str(json).map_err(|_| TimestampError::Type)?;
            parse_text(&text)
        }
        Some(b'-' | b'0'..=b'9') => parse_number(json),
        _ => Err(TimestampError::Type),
    }
}

/// A timestamp given as a string: digits are epoch time, anything else must be RFC 3339.
fn parse_text(text: &str) -> Result<DateTime<Utc>, TimestampError> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return from_epoch_digits(text);
    }
    let parsed =
        DateTime::parse_from_rfc3339(text).map_err(|_| TimestampError::Format(NOT_A_TIME))?;
    let utc = parsed.with_timezone(&Utc);
    if !(0..=9999).contains(&utc.year()) {
        return Err(TimestampError::Range(YEAR_RANGE));
    }
    Ok(utc.trunc_subsecs(3))
}

/// A JSON number (its text as written).
fn parse_number(text: &str) -> Result<DateTime<Utc>, TimestampError> {
    if text.contains(['.', 'e', 'E']) {
        return Err(TimestampError::Format(NOT_WHOLE));
    }
    match text.strip_prefix('-') {
        Some(digits) if digits.bytes().all(|b| b == b'0') => from_epoch_digits("0"),
        Some(_) => Err(TimestampError::Range(NEGATIVE)),
        None => from_epoch_digits(text),
    }
}

/// ASCII digits (at least one) as epoch seconds or milliseconds.
fn from_epoch_digits(digits: &str) -> Result<DateTime<Utc>, TimestampError> {
    let n: u64 = digits
        .parse()
        .map_err(|_| TimestampError::Range(TOO_LATE))?;
    let time = if n < MILLIS_FROM {
        DateTime::from_timestamp(n as i64, 0)
    } else if n <= MAX_EPOCH_MILLIS {
        DateTime::from_timestamp_millis(n as i64)
    } else {
        None
    };
    time.ok_or(TimestampError::Range(TOO_LATE))
}

/// An event time as delivered: RFC 3339 in UTC with milliseconds (`2024-05-01T10:30:00.000Z`),
/// fixed width so that the texts sort like the instants.
pub fn format_event_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(json: &str) -> String {
        format_event_time(parse_timestamp(json).unwrap_or_else(|e| panic!("{json}: {e:?}")))
    }

    fn err(json: &str) -> TimestampError {
        parse_timestamp(json).expect_err(json)
    }

    #[test]
    fn rfc3339_with_any_offset_becomes_utc() {
        assert_eq!(ok(r#""2024-05-01T12:30:00Z""#), "2024-05-01T12:30:00.000Z");
        assert_eq!(
            ok(r#""2024-05-01T12:30:00+02:00""#),
            "2024-05-01T10:30:00.000Z"
        );
        assert_eq!(
            ok(r#""2024-05-01T00:30:00-05:30""#),
            "2024-05-01T06:00:00.000Z"
        );
        assert_eq!(
            ok(r#""2024-12-31T23:30:00-01:00""#),
            "2025-01-01T00:30:00.000Z"
        );
        assert_eq!(
            ok(r#""2024-05-01t12:30:00.5z""#),
            "2024-05-01T12:30:00.500Z"
        );
        assert_eq!(ok(r#""2024-05-01 12:30:00Z""#), "2024-05-01T12:30:00.000Z");
        // Sub-millisecond digits are truncated, not rounded.
        assert_eq!(
            ok(r#""2024-05-01T12:30:00.123999999Z""#),
            "2024-05-01T12:30:00.123Z"
        );
        // Escapes in the string are read like any JSON string.
        assert_eq!(
            ok(r#""2024-05-01T12:30:00\u005a""#),
            "2024-05-01T12:30:00.000Z"
        );
        assert_eq!(ok(r#""1960-01-01T00:00:00Z""#), "1960-01-01T00:00:00.000Z");
    }

    #[test]
    fn epoch_seconds_and_milliseconds_as_integers_or_digit_strings() {
        assert_eq!(ok("1714566600"), "2024-05-01T12:30:00.000Z");
        assert_eq!(ok(r#""1714566600""#), "2024-05-01T12:30:00.000Z");
        assert_eq!(ok("1714566600123"), "2024-05-01T12:30:00.123Z");
        assert_eq!(ok(r#""1714566600123""#), "2024-05-01T12:30:00.123Z");
        assert_eq!(ok("0"), "1970-01-01T00:00:00.000Z");
        assert_eq!(ok("-0"), "1970-01-01T00:00:00.000Z");
        assert_eq!(ok(r#""0001714566600""#), "2024-05-01T12:30:00.000Z");
    }

    #[test]
    fn ten_to_the_eleventh_is_the_first_millisecond_value() {
        // 10^11 - 1 seconds is in the year 5138; 10^11 milliseconds is in 1973.
        assert_eq!(ok("99999999999"), "5138-11-16T09:46:39.000Z");
        assert_eq!(ok("100000000000"), "1973-03-03T09:46:40.000Z");
        assert_eq!(ok(r#""100000000000""#), "1973-03-03T09:46:40.000Z");
    }

    #[test]
    fn garbage_is_a_format_error() {
        for json in [
            r#""""#,
            r#""yesterday""#,
            r#""2024-05-01""#,
            r#""2024-05-01T12:30:00""#,
            r#""2024-13-01T12:30:00Z""#,
            r#""2024-05-01T12:30:00+25:00""#,
            r#"" 1714566600""#,
            r#""1714566600 ""#,
            r#""+1714566600""#,
            r#""-1714566600""#,
            r#""1714566600.5""#,
            r#""0x10""#,
        ] {
            assert!(matches!(err(json), TimestampError::Format(_)), "{json}");
            assert_eq!(err(json).code(), "format");
        }
    }

    #[test]
    fn fractions_and_exponents_are_not_epoch_times() {
        for json in ["1714566600.5", "1714566600.0", "1.7145666e9", "17E8"] {
            assert_eq!(err(json), TimestampError::Format(NOT_WHOLE), "{json}");
        }
    }

    #[test]
    fn negative_and_huge_values_are_range_errors() {
        for json in [
            "-1",
            "-1714566600",
            "253402300800000",
            r#""253402300800000""#,
            "18446744073709551616",
            r#""99999999999999999999999999""#,
            r#""-0001-01-01T00:00:00Z""#,
        ] {
            let e = parse_timestamp(json).expect_err(json);
            // `-0001` is not RFC 3339 at all: a format error; the others are out of range.
            if json.contains("-0001") {
                assert_eq!(e.code(), "format");
            } else {
                assert_eq!(e.code(), "range", "{json}");
            }
        }
        assert_eq!(ok("253402300799999"), "9999-12-31T23:59:59.999Z");
        assert_eq!(err(r#""9999-12-31T23:30:00-01:00""#).code(), "range");
        assert_eq!(err(r#""0000-01-01T00:30:00+01:00""#).code(), "range");
        assert_eq!(ok(r#""0000-01-01T00:30:00Z""#), "0000-01-01T00:30:00.000Z");
    }

    #[test]
    fn other_json_types_are_type_errors() {
        for json in ["true", "null", "[]", "{}"] {
            assert_eq!(err(json), TimestampError::Type, "{json}");
            assert_eq!(err(json).code(), "type");
        }
    }
}
