//! Wall-clock time as text in the local time zone: `strftime(3)` over `localtime_r(3)`, the
//! pair php-fpm's access log uses, so a `%{...}t` format in `access_format` means exactly what
//! it means in php-fpm's `access.format` (glibc's conversions, `TZ` and `/etc/localtime`).

use std::ffi::CStr;
use std::mem::MaybeUninit;

/// Longest text one time field may produce; php-fpm's buffer is 129 bytes.
pub const MAX_TIME_TEXT: usize = 128;

/// Append `epoch_secs` formatted with `format` (a strftime format) to `out`. Appends nothing
/// when the time cannot be converted or the text would not fit in [`MAX_TIME_TEXT`] bytes
/// (strftime's only ways to fail).
pub fn format_local(epoch_secs: i64, format: &CStr, out: &mut Vec<u8>) {
    let time = epoch_secs as libc::time_t;
    let mut tm = MaybeUninit::<libc::tm>::zeroed();
    // SAFETY: `time` and `tm` are valid for the call; localtime_r writes only into `tm` and is
    // thread-safe (unlike localtime). A null result means nothing usable was written.
    let converted = unsafe { libc::localtime_r(&time, tm.as_mut_ptr()) };
    if converted.is_null() {
        return;
    }
    let mut buf = [0u8; MAX_TIME_TEXT + 1];
    // SAFETY: `buf` is writable for `buf.len()` bytes, `format` is NUL-terminated, and `tm` was
    // filled by localtime_r above (it started zeroed: every field is a plain integer or a
    // pointer localtime_r set). strftime writes at most `buf.len()` bytes including the NUL and
    // returns how many it wrote before it (0 when it did not fit).
    let written = unsafe {
        libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            format.as_ptr(),
            tm.as_ptr(),
        )
    };
    out.extend_from_slice(&buf[..written.min(MAX_TIME_TEXT)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_do_not_depend_on_the_zone() {
        // `%s` (a glibc conversion) is the epoch back: the round trip proves the conversion
        // ran, whatever the machine's time zone.
        let mut out = Vec::new();
        format_local(1_700_000_000, c"%s", &mut out);
        assert_eq!(out, b"1700000000");
    }

    #[test]
    fn too_long_appends_nothing() {
        let mut out = b"x".to_vec();
        let long = std::ffi::CString::new("%Y".repeat(100)).unwrap();
        format_local(0, &long, &mut out);
        assert_eq!(out, b"x");
    }
}
