//! php-fpm's text/HTML date format (`%d/%b/%Y:%H:%M:%S %z`, the access-log style), from Unix
//! seconds.
//!
//! Written in UTC with offset `+0000`: the instant is exact and every reader that parses the
//! offset gets it right, and it spares a time-zone database dependency for one line of the
//! status page (php-fpm prints local time; on a UTC host the two are identical).

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `24/Nov/2026:21:26:22 +0000` for the given Unix seconds.
pub fn php_fpm_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs_of_day = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) of a day count since 1970-01-01,
/// using the 400-year era arithmetic (eras of 146097 days, years starting in March).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153; // 0 = March
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let table = [
            (0, "01/Jan/1970:00:00:00 +0000"),
            // Seen from php-fpm 8.2 on this machine: "start time": 1795555582.
            (1_795_555_582, "24/Nov/2026:21:26:22 +0000"),
            (951_782_400, "29/Feb/2000:00:00:00 +0000"),
            // Checked with `date -u -d @N`; 2100 is not a leap year.
            (4_107_542_399, "28/Feb/2100:23:59:59 +0000"),
            (4_133_980_799, "31/Dec/2100:23:59:59 +0000"),
            (1_709_164_800, "29/Feb/2024:00:00:00 +0000"),
        ];
        for (secs, want) in table {
            assert_eq!(php_fpm_date(secs), want, "{secs}");
        }
    }
}
