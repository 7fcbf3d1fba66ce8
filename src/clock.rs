//! UTC calendar arithmetic for the timestamps meshstack writes (lock files, journal, EKS token
//! expiry): enough of a date library to print UTC, without one.

/// `unix_secs` as (year, month, day, hour, minute, second) in UTC.
pub fn utc_parts(unix_secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let (y, m, d) = civil_from_days(unix_secs / 86_400);
    let s = unix_secs % 86_400;
    (y, m, d, s / 3600, s % 3600 / 60, s % 60)
}

/// Days since 1970-01-01 -> (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        for (secs, want) in [
            (0, (1970, 1, 1, 0, 0, 0)),
            (951_782_400, (2000, 2, 29, 0, 0, 0)),
            (1_704_164_645, (2024, 1, 2, 3, 4, 5)),
            (4_102_444_799, (2099, 12, 31, 23, 59, 59)),
        ] {
            assert_eq!(utc_parts(secs), want, "{secs}");
        }
    }
}
