//! RFC 3339 UTC timestamps without a date-time dependency, and durations as records write them.

/// A duration in nanoseconds as milliseconds to the microsecond, the precision of every
/// `*_ms` field.
pub fn millis(ns: i64) -> f64 {
    (ns as f64 / 1000.0).round() / 1000.0
}

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

/// Writes `value` into `out` as decimal digits, zero-padded on the left to `out`'s length
/// (`value` must fit: every caller passes a value below 10^len).
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS` into the first 19 bytes of `out`. Written digit by digit rather than
/// with `format!`: two of these go into every connection record, and `format!` with its
/// padded integers was a twentieth of a handshake-heavy replay.
fn put_date_time(out: &mut [u8], (y, mo, d, h, mi, s): (i64, u32, u32, i64, i64, i64)) {
    // `parts` keeps the year in 0..=9999, so every field fits its width.
    put_digits(&mut out[0..4], y as u64);
    put_digits(&mut out[5..7], u64::from(mo));
    put_digits(&mut out[8..10], u64::from(d));
    put_digits(&mut out[11..13], h as u64);
    put_digits(&mut out[14..16], mi as u64);
    put_digits(&mut out[17..19], s as u64);
}

fn ascii(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("digits and separators are ASCII")
}

/// `2026-11-24T06:54:43.123456Z` from nanoseconds since the epoch.
pub fn rfc3339_micros(ts_ns: i64) -> String {
    let secs = ts_ns.div_euclid(1_000_000_000);
    let micros = ts_ns.rem_euclid(1_000_000_000) / 1000;
    match parts(secs) {
        Some(p) => {
            let mut out = *b"0000-00-00T00:00:00.000000Z";
            put_date_time(&mut out, p);
            put_digits(&mut out[20..26], micros as u64);
            ascii(&out)
        }
        None => "1970-01-01T00:00:00.000000Z".to_string(),
    }
}

/// `2026-11-24T06:54:43Z`, or `None` outside years 0..=9999.
pub fn rfc3339_secs(secs: i64) -> Option<String> {
    parts(secs).map(|p| {
        let mut out = *b"0000-00-00T00:00:00Z";
        put_date_time(&mut out, p);
        ascii(&out)
    })
}

/// Days since 1970-01-01 of a civil date, proleptic Gregorian (the inverse of
/// `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds since the epoch of a UTC timestamp in the form this crate writes
/// (`2026-11-24T06:54:43.123456Z`, fraction optional, up to 9 digits). `None` for anything
/// else: the timestamps read back come from files, so they are not trusted to be well formed.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 30 || b[b.len() - 1] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let frac = &s[19..s.len() - 1];
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(digits) if (1..=9).contains(&digits.len()) => {
            num(20..20 + digits.len())? * 10i64.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    (days * 86_400 + h * 3600 + mi * 60 + sec)
        .checked_mul(1_000_000_000)?
        .checked_add(nanos)
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

    /// The digit-by-digit writer says what `format!` said, across the whole range it covers.
    #[test]
    fn same_as_format() {
        let old = |ts_ns: i64| {
            let secs = ts_ns.div_euclid(1_000_000_000);
            let micros = ts_ns.rem_euclid(1_000_000_000) / 1000;
            let (y, mo, d, h, mi, s) = parts(secs).unwrap();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}Z")
        };
        let lo = -62_167_219_200i64; // 0000-01-01T00:00:00Z
        let hi = 253_402_300_799i64; // 9999-12-31T23:59:59Z
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = match i {
                0 => lo,
                1 => hi,
                _ => lo + (x % (hi - lo + 1) as u64) as i64,
            };
            // Nanoseconds in an i64 span 1677..2262.
            let ns = (x as i64).wrapping_mul(31);
            assert_eq!(rfc3339_micros(ns), old(ns), "{ns}");
            let (y, mo, d, h, mi, s) = parts(secs).unwrap();
            assert_eq!(
                rfc3339_secs(secs).unwrap(),
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
            );
        }
        assert_eq!(rfc3339_secs(hi + 1), None);
        assert_eq!(rfc3339_secs(lo - 1), None);
        for ns in [i64::MIN, i64::MAX, -1, 0, 999] {
            assert_eq!(rfc3339_micros(ns), old(ns), "{ns}");
        }
    }

    #[test]
    fn parses_what_it_writes() {
        for ns in [0, 1_764_000_000_123_456_000, 951_782_400_000_000_000] {
            assert_eq!(parse_rfc3339_ns(&rfc3339_micros(ns)), Some(ns));
        }
        assert_eq!(
            parse_rfc3339_ns("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            "",
            "2000-02-29",
            "2000-13-01T00:00:00Z",
            "2000-02-29T00:00:00.Z",
            "x000-02-29T00:00:00Z",
            "2000-02-29T00:00:00.+1Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }
}
