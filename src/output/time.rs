//! RFC 3339 UTC timestamps without a date-time dependency.

/// Days since 1970-01-01 to a civil (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn parts(secs: i64) -> Option<(i64, u32, u32, i64, i64, i64)> {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    if !(0..=9999).contains(&y) {
        return None;
    }
    let s = secs.rem_euclid(86_400);
    Some((y, mo, d, s / 3600, (s / 60) % 60, s % 60))
}

/// `2026-11-24T06:54:43.123456Z` from nanoseconds since the epoch.
pub fn rfc3339_micros(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let micros = ts_ns.rem_euclid(1_000_000_000) / 1000;
    match parts(secs) {
        Some((y, mo, d, h, mi, s)) => {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z")
        }
        None => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// `2026-11-24T06:54:43Z`, or `None` outside years 0..=9999.
pub fn rfc3339_secs(secs: i64) -> Option<String> {
    parts(secs).map(|(y, mo, d, h, mi, s)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(1_764_000_000_123_456_789),
            "2025-11-24T16:00:00.123456Z"
        );
        assert_eq!(rfc3339_secs(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_secs(-86_400).unwrap(), "1969-12-31T00:00:00Z");
    }
}
