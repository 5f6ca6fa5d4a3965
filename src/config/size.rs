//! Sizes as the config writes them, php.ini style: `"128M"`, `"512K"`, `"1G"`, or a plain number
//! of bytes (`"1048576"`). K, M and G are powers of 1024, as in php's `post_max_size`.
//! Parsing and formatting are inverses, so `fastpm check` output loads back unchanged.

const UNITS: &[(char, u64)] = &[('K', 1 << 10), ('M', 1 << 20), ('G', 1 << 30)];

/// Parse a size; the error message says what was wrong and what is accepted.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected = "expected a whole number of bytes, or one followed by K, M or G, e.g. \"128M\"";
    let (digits, multiplier) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let upper = c.to_ascii_uppercase();
            let Some((_, m)) = UNITS.iter().find(|(u, _)| *u == upper) else {
                return Err(format!(
                    "invalid size {text:?}: unknown unit {c:?}; {expected}"
                ));
            };
            (&text[..text.len() - 1], *m)
        }
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("invalid size {text:?}: {expected}"));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("invalid size {text:?}: too large"))
}

/// The shortest exact spelling of `bytes` (`134217728` → `"128M"`).
pub fn format_size(bytes: u64) -> String {
    for (unit, m) in UNITS.iter().rev() {
        if bytes > 0 && bytes.is_multiple_of(*m) {
            return format!("{}{unit}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_format_back() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("512K", Ok(512 << 10)),
            ("128M", Ok(128 << 20)),
            ("128m", Ok(128 << 20)),
            ("2G", Ok(2 << 30)),
            ("", Err("invalid size")),
            ("M", Err("invalid size")),
            ("12T", Err("unknown unit")),
            ("1.5M", Err("invalid size")),
            ("-1", Err("invalid size")),
            ("99999999999999999999", Err("too large")),
        ];
        for (text, want) in table {
            match (parse_size(text), want) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, *want, "{text}");
                    assert_eq!(parse_size(&format_size(got)), Ok(got), "{text} round trip");
                }
                (Err(e), Err(want)) => assert!(e.contains(want), "{text}: {e}"),
                (got, want) => panic!("{text}: {got:?}, wanted {want:?}"),
            }
        }
        assert_eq!(format_size(128 << 20), "128M");
        assert_eq!(format_size(1000), "1000");
    }
}
