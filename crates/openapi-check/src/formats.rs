//! String and number formats used by the Graph subset document: `date-time`, `uuid`, `time`,
//! `int32`, `int64`. Hand-written checks, no regex engine.

/// Checks an RFC 3339 `date-time` that also matches the `pattern` the document puts beside every
/// `format: date-time`:
/// `^[0-9]{4,}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]([.][0-9]{1,12})?(Z|[+-][0-9][0-9]:[0-9][0-9])$`.
///
/// That is the intersection of both: a four-digit year, a day that exists in its month (leap years
/// included), upper-case `T` and `Z`, seconds `00`-`59`, 1 to 12 fraction digits, an offset of
/// `Z` or `±hh:mm` with `hh` ≤ 23 and `mm` ≤ 59.
pub(crate) fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[10] != b'T' {
        return false;
    }
    if !is_full_date(&b[..10]) {
        return false;
    }
    // hh:mm:ss
    let t = &b[11..];
    if t.len() < 9 || !is_hms(&t[..8]) {
        return false;
    }
    let mut rest = &t[8..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 12 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest {
        [b'Z'] => true,
        [sign, h1, h2, b':', m1, m2] if *sign == b'+' || *sign == b'-' => {
            two_digits(*h1, *h2).is_some_and(|h| h <= 23)
                && two_digits(*m1, *m2).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// `YYYY-MM-DD` with a day that exists.
fn is_full_date(b: &[u8]) -> bool {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    if !b[..4].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let year = b[..4].iter().fold(0u32, |acc, c| acc * 10 + u32::from(c - b'0'));
    let (Some(month), Some(day)) = (two_digits(b[5], b[6]), two_digits(b[8], b[9])) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

/// `hh:mm:ss` with `hh` ≤ 23, `mm` ≤ 59, `ss` ≤ 59.
fn is_hms(b: &[u8]) -> bool {
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && two_digits(b[0], b[1]).is_some_and(|h| h <= 23)
        && two_digits(b[3], b[4]).is_some_and(|m| m <= 59)
        && two_digits(b[6], b[7]).is_some_and(|s| s <= 59)
}

fn two_digits(a: u8, b: u8) -> Option<u32> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// Checks the `uuid` pattern used by the document:
/// `^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`.
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) { *c == b'-' } else { c.is_ascii_hexdigit() }
        })
}

/// Checks an OData `TimeOfDay` (`format: time`), as Graph writes it: `hh:mm:ss` with an optional
/// fraction of 1 to 12 digits, e.g. `08:00:00.0000000`.
pub(crate) fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 8 || !is_hms(&b[..8]) {
        return false;
    }
    match &b[8..] {
        [] => true,
        [b'.', frac @ ..] => (1..=12).contains(&frac.len()) && frac.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_accepts_graph_shapes() {
        for ok in [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00.1234567Z",
            "2024-02-29T23:59:59+01:00",
            "2000-02-29T00:00:00-23:59",
            "0001-01-01T00:00:00Z",
        ] {
            assert!(is_date_time(ok), "{ok} should be a date-time");
        }
    }

    #[test]
    fn date_time_rejects_malformed() {
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24 10:00:00Z",
            "2026-11-24t10:00:00z",
            "2026-11-24T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:60:00Z",
            "2026-11-24T10:00:60Z",
            "2026-11-24T10:00:00.Z",
            "2026-11-24T10:00:00.1234567890123Z",
            "2026-11-24T10:00:00+0100",
            "2026-11-24T10:00:00+24:00",
            "26-11-24T10:00:00Z",
            "2026-1-24T10:00:00Z",
            "2026-11-24T10:00:00ZZ",
        ] {
            assert!(!is_date_time(bad), "{bad:?} should not be a date-time");
        }
    }

    #[test]
    fn uuid_pattern() {
        assert!(is_uuid("c7a0b4a6-3f8e-4b0b-9d6e-0123456789AB"));
        assert!(!is_uuid("c7a0b4a6-3f8e-4b0b-9d6e-0123456789A"));
        assert!(!is_uuid("c7a0b4a63f8e-4b0b-9d6e-0123456789ABC"));
        assert!(!is_uuid("g7a0b4a6-3f8e-4b0b-9d6e-0123456789ab"));
        assert!(!is_uuid("{c7a0b4a6-3f8e-4b0b-9d6e-0123456789}"));
    }

    #[test]
    fn time_of_day() {
        assert!(is_time("08:00:00"));
        assert!(is_time("17:30:00.0000000"));
        assert!(!is_time("8:00:00"));
        assert!(!is_time("08:00"));
        assert!(!is_time("24:00:00"));
        assert!(!is_time("08:00:00."));
        assert!(!is_time("08:00:00Z"));
    }
}
