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

/// (year, month, day) in the proleptic Gregorian calendar -> days since 1970-01-01
/// (Howard Hinnant's `days_from_civil`); `None` before 1970.
pub fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// `unix_secs` as RFC 3339 in UTC, to the second: `2026-11-30T15:04:05Z` (the
/// `meshstack.io/expires-at` tag).
pub fn rfc3339(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc_parts(unix_secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// An RFC 3339 timestamp (`2026-11-30T15:04:05Z`, with optional fractional seconds and a
/// `+hh:mm`/`-hh:mm` offset) as unix seconds; `None` if it is not one (or before 1970).
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = text.trim();
    let (date, time) = t.split_once(['T', 't', ' '])?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<u64>().ok());
    let (y, mo, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    if date.len() != 10 || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    // The offset: Z, or +hh:mm / -hh:mm after the seconds.
    let (clock, offset_secs): (&str, i64) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        let (oh, om): (i64, i64) = (oh.parse().ok()?, om.parse().ok()?);
        (c, sign * (oh * 3600 + om * 60))
    };
    let clock = clock.split('.').next()?;
    let mut hms = clock.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let local = days_from_civil(y, mo, d)? * 86_400 + h * 3600 + mi * 60 + s;
    u64::try_from(i64::try_from(local).ok()? - offset_secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_reads_offsets() {
        for secs in [0, 951_782_400, 1_704_164_645, 1_795_887_600, 4_102_444_799] {
            assert_eq!(parse_rfc3339(&rfc3339(secs)), Some(secs), "{secs}");
        }
        assert_eq!(rfc3339(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(
            parse_rfc3339("2024-01-02T03:04:05.123Z"),
            Some(1_704_164_645)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T05:04:05+02:00"),
            Some(1_704_164_645)
        );
        assert_eq!(
            parse_rfc3339("2024-01-02T01:04:05-02:00"),
            Some(1_704_164_645)
        );
        for bad in [
            "",
            "2024-01-02",
            "2024-13-02T00:00:00Z",
            "x",
            "2024-01-02T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

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
