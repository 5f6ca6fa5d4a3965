//! Unix socket permissions as the config writes them: an octal string such as `"0660"`
//! (TOML has no octal literal with a leading zero, and `660` as a decimal number would be wrong).

/// Largest accepted mode: permission bits only (setuid/setgid/sticky mean nothing on a socket).
pub const MAX_MODE: u32 = 0o777;

/// Parse `"0660"`, `"660"` or `"0o660"`; the error says what is accepted.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let valid = !digits.is_empty()
        && digits.len() <= 4
        && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let value = if valid {
        u32::from_str_radix(digits, 8).ok()
    } else {
        None
    };
    match value {
        Some(mode) if mode <= MAX_MODE => Ok(mode),
        Some(_) => Err(format!(
            "mode {text:?} is above 0777 (only permission bits apply to a socket)"
        )),
        None => Err(format!(
            "invalid mode {text:?}: expected an octal string such as \"0660\""
        )),
    }
}

/// The config spelling of a mode: four octal digits.
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}
