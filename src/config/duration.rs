//! Durations as the config writes them: `"500ms"`, `"30s"`, `"2m"`, `"1h"`, `"0s"` (or `"0"`).
//! Parsing and formatting are inverses, so `fastpm check` output loads back unchanged.

use std::time::Duration;

/// Units accepted after the number, with their length in milliseconds. Longest suffix first so
/// `"ms"` is not read as `"m"` + garbage.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

/// Parse a duration string; the error message says what was wrong and what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a whole number followed by ms, s, m or h, e.g. \"500ms\" or \"30s\"";
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("invalid duration {text:?}: {expected}"));
    }
    if unit.is_empty() {
        return Err(format!(
            "invalid duration {text:?}: missing unit; {expected}"
        ));
    }
    let Some((_, unit_ms)) = UNITS.iter().find(|(suffix, _)| *suffix == unit) else {
        return Err(format!(
            "invalid duration {text:?}: unknown unit {unit:?}; {expected}"
        ));
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(*unit_ms))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid duration {text:?}: too large"))
}

/// The shortest config spelling of `duration` (whole milliseconds; finer parts are dropped,
/// which the config cannot express anyway).
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    for (suffix, unit_ms) in UNITS.iter().rev() {
        let unit_ms = u128::from(*unit_ms);
        if ms.is_multiple_of(unit_ms) {
            return format!("{}{suffix}", ms / unit_ms);
        }
    }
    format!("{ms}ms")
}
