//! Go-style durations (`"24h"`, `"1m30s"`, `"500ms"`, `"0s"`), the string form every OSM duration field
//! uses (Go's `time.ParseDuration` / `metav1.Duration`).
//!
//! [`GoDuration`] parses every string Go accepts, except negative durations, which no OSM field allows.
//! It prints the shortest Go-parseable form (`"24h"`, `"1h30m"`, `"1s500ms"`), so a value survives a
//! round trip through Go and through us. Its JSON schema is `type: string`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written the way Go writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

/// Why a duration string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    /// The string was empty.
    #[error(
        "invalid duration \"\": expected a number followed by a unit (ns, us, ms, s, m, h), e.g. \"1m30s\""
    )]
    Empty,
    /// A number without a unit, e.g. `"10"`.
    #[error("invalid duration {0:?}: missing unit (ns, us, ms, s, m, h), e.g. \"10s\"")]
    MissingUnit(String),
    /// A unit that is not one of ns, us, µs, ms, s, m, h.
    #[error("invalid duration {input:?}: unknown unit {unit:?} (expected ns, us, ms, s, m or h)")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The offending unit.
        unit: String,
    },
    /// Something that is not a number where a number was expected.
    #[error(
        "invalid duration {0:?}: expected a number followed by a unit (ns, us, ms, s, m, h), e.g. \"1m30s\""
    )]
    Invalid(String),
    /// A negative duration such as `"-5s"`.
    #[error("invalid duration {0:?}: must not be negative")]
    Negative(String),
    /// Larger than Go's limit (about 292 years).
    #[error("invalid duration {0:?}: out of range")]
    OutOfRange(String),
}

const NANOS_PER_MICRO: u128 = 1_000;
const NANOS_PER_MILLI: u128 = 1_000_000;
const NANOS_PER_SEC: u128 = 1_000_000_000;
const NANOS_PER_MIN: u128 = 60 * NANOS_PER_SEC;
const NANOS_PER_HOUR: u128 = 60 * NANOS_PER_MIN;
/// Go stores durations as i64 nanoseconds; anything larger cannot come from (or go back to) Go.
const MAX_NANOS: u128 = i64::MAX as u128;
/// Fraction digits past this cannot change the nanosecond result (the largest unit is 3.6e12 ns).
const MAX_FRACTION_DIGITS: u32 = 18;

impl GoDuration {
    /// The zero duration, printed as `"0s"`.
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        GoDuration(Duration::from_millis(millis))
    }

    /// The standard-library duration.
    pub const fn as_std(&self) -> Duration {
        self.0
    }

    /// True for `"0s"`.
    pub const fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => NANOS_PER_MICRO,
        "ms" => NANOS_PER_MILLI,
        "s" => NANOS_PER_SEC,
        "m" => NANOS_PER_MIN,
        "h" => NANOS_PER_HOUR,
        _ => return None,
    })
}

impl FromStr for GoDuration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let owned = || input.to_string();
        let (negative, mut rest) = match input.as_bytes().first() {
            None => return Err(DurationParseError::Empty),
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            Some(_) => (false, input),
        };
        if rest == "0" {
            return Ok(GoDuration::ZERO);
        }
        if rest.is_empty() {
            return Err(DurationParseError::Invalid(owned()));
        }
        let mut total: u128 = 0;
        while !rest.is_empty() {
            // Integer part.
            let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (int_digits, after_int) = rest.split_at(int_len);
            let mut int_value: u128 = 0;
            for d in int_digits.bytes() {
                int_value = int_value * 10 + u128::from(d - b'0');
                if int_value > MAX_NANOS {
                    return Err(DurationParseError::OutOfRange(owned()));
                }
            }
            // Optional fraction.
            let (frac_digits, after_num) = match after_int.strip_prefix('.') {
                Some(f) => {
                    let len = f.bytes().take_while(u8::is_ascii_digit).count();
                    f.split_at(len)
                }
                None => ("", after_int),
            };
            if int_digits.is_empty() && frac_digits.is_empty() {
                return Err(DurationParseError::Invalid(owned()));
            }
            // Unit: everything up to the next digit or '.'.
            let unit_len = after_num
                .char_indices()
                .find(|(_, c)| c.is_ascii_digit() || *c == '.')
                .map_or(after_num.len(), |(i, _)| i);
            let (unit, after_unit) = after_num.split_at(unit_len);
            if unit.is_empty() {
                return Err(DurationParseError::MissingUnit(owned()));
            }
            let scale = unit_nanos(unit).ok_or_else(|| DurationParseError::UnknownUnit {
                input: owned(),
                unit: unit.to_string(),
            })?;
            let mut value = int_value * scale;
            if !frac_digits.is_empty() {
                let mut frac: u128 = 0;
                let mut denom: u128 = 1;
                for d in frac_digits.bytes().take(MAX_FRACTION_DIGITS as usize) {
                    frac = frac * 10 + u128::from(d - b'0');
                    denom *= 10;
                }
                value += frac * scale / denom;
            }
            total += value;
            if total > MAX_NANOS {
                return Err(DurationParseError::OutOfRange(owned()));
            }
            rest = after_unit;
        }
        if negative && total > 0 {
            return Err(DurationParseError::Negative(owned()));
        }
        let secs = (total / NANOS_PER_SEC) as u64;
        let nanos = (total % NANOS_PER_SEC) as u32;
        Ok(GoDuration(Duration::new(secs, nanos)))
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (scale, unit) in [
            (NANOS_PER_HOUR, "h"),
            (NANOS_PER_MIN, "m"),
            (NANOS_PER_SEC, "s"),
            (NANOS_PER_MILLI, "ms"),
            (NANOS_PER_MICRO, "us"),
            (1, "ns"),
        ] {
            let count = nanos / scale;
            if count > 0 {
                write!(f, "{count}{unit}")?;
                nanos %= scale;
            }
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"24h\", \"1m30s\" or \"500ms\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> Cow<'static, str> {
        "GoDuration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Duration, DurationParseError> {
        s.parse::<GoDuration>().map(|d| d.0)
    }

    #[test]
    fn parses_go_forms() {
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(24 * 3600));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("-0").unwrap(), Duration::ZERO);
        assert_eq!(parse("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("+2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("3us").unwrap(), Duration::from_micros(3));
        assert_eq!(parse("3\u{b5}s").unwrap(), Duration::from_micros(3));
        assert_eq!(parse("3\u{3bc}s").unwrap(), Duration::from_micros(3));
        assert_eq!(parse("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(parse("1h1m1s1ms1us1ns").unwrap(), Duration::new(3661, 1_001_001));
    }

    #[test]
    fn refuses_bad_input_with_a_clear_error() {
        assert_eq!(parse(""), Err(DurationParseError::Empty));
        assert_eq!(parse("10"), Err(DurationParseError::MissingUnit("10".into())));
        assert_eq!(parse("-5s"), Err(DurationParseError::Negative("-5s".into())));
        assert!(matches!(parse("5d"), Err(DurationParseError::UnknownUnit { unit, .. }) if unit == "d"));
        assert!(matches!(parse("abc"), Err(DurationParseError::Invalid(_))));
        assert!(matches!(parse("."), Err(DurationParseError::Invalid(_))));
        assert!(matches!(parse("-"), Err(DurationParseError::Invalid(_))));
        assert!(matches!(
            parse("1s "),
            Err(DurationParseError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse("9999999999999999999h"),
            Err(DurationParseError::OutOfRange(_))
        ));
        assert!(matches!(
            parse("3000000h"),
            Err(DurationParseError::OutOfRange(_))
        ));
        let msg = parse("10").unwrap_err().to_string();
        assert!(msg.contains("missing unit"), "{msg}");
    }

    #[test]
    fn prints_shortest_go_form() {
        for (input, printed) in [
            ("24h", "24h"),
            ("90s", "1m30s"),
            ("1m30s", "1m30s"),
            ("500ms", "500ms"),
            ("0s", "0s"),
            ("1.5s", "1s500ms"),
            ("90m", "1h30m"),
            ("1h0m0s", "1h"),
        ] {
            let d: GoDuration = input.parse().unwrap();
            assert_eq!(d.to_string(), printed, "{input}");
            assert_eq!(printed.parse::<GoDuration>().unwrap(), d);
        }
    }

    #[test]
    fn serde_uses_strings() {
        let d: GoDuration = serde_json::from_str("\"1m\"").unwrap();
        assert_eq!(d, GoDuration::from_secs(60));
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1m\"");
        let err = serde_json::from_str::<GoDuration>("\"1x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown unit"), "{err}");
        assert!(serde_json::from_str::<GoDuration>("5").is_err());
    }
}
