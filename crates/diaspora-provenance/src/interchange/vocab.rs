//! The terms both directions share: the namespaces, record IRIs, tag-key
//! encoding, xsd literals (`xsd:double`, `xsd:dateTime`) and the shortening
//! of names quoted in messages.

use crate::model::RecordId;
use std::fmt::Write as _;

/// The diaspora vocabulary's namespace (`dsp:`).
pub const DSP_NS: &str = "https://diaspora.invalid/ns#";
/// The W3C PROV namespace (`prov:`).
pub const PROV_NS: &str = "http://www.w3.org/ns/prov#";
/// The XML Schema datatypes namespace (`xsd:`).
pub const XSD_NS: &str = "http://www.w3.org/2001/XMLSchema#";

/// The IRI prefix of a store's records: `urn:diaspora:<namespace>:`.
pub fn store_iri_prefix(namespace: &str) -> String {
    format!("urn:diaspora:{namespace}:")
}

/// The IRI of record `id` of the store with `namespace`.
pub fn record_iri(namespace: &str, id: RecordId) -> String {
    format!("urn:diaspora:{namespace}:{id}")
}

/// xsd:double text of a float (`INF`, `-INF`, `NaN` for the specials).
pub(super) fn xsd_double(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x.is_infinite() {
        if x > 0.0 { "INF" } else { "-INF" }.into()
    } else {
        format!("{x:?}")
    }
}

/// Percent-encodes a tag key for a `dsp:tag_` attribute name.
pub(super) fn encode_tag_key(k: &str) -> String {
    let mut out = String::with_capacity(k.len());
    for b in k.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Reverses [`encode_tag_key`]; text that is not valid percent-encoded
/// UTF-8 is kept as it is.
pub(super) fn decode_tag_key(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_or_else(|_| s.to_string(), |d| d.into_owned())
}

// ---------------------------------------------------------------------------
// xsd:dateTime
// ---------------------------------------------------------------------------

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a (proleptic Gregorian) date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2024-01-02T03:04:05.123456Z`; `None` outside years 1..=9999.
pub fn xsd_datetime(time_us: i64) -> Option<String> {
    let secs = time_us.div_euclid(1_000_000);
    let frac = time_us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (1..=9999).contains(&y).then(|| {
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
            sod / 3600,
            sod % 3600 / 60,
            sod % 60
        )
    })
}

/// Parses an xsd:dateTime (`YYYY-MM-DDThh:mm:ss[.f][Z|±hh:mm]`, no zone
/// read as UTC) to µs since the Unix epoch.
pub fn parse_xsd_datetime(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    let mut i = 0;
    let num = |i: &mut usize, min: usize, max: usize| -> Option<i64> {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() && *i - start < max {
            *i += 1;
        }
        if *i - start < min {
            return None;
        }
        std::str::from_utf8(&b[start..*i]).ok()?.parse().ok()
    };
    let expect = |i: &mut usize, c: u8| -> Option<()> { (b.get(*i) == Some(&c)).then(|| *i += 1) };
    let neg = b.first() == Some(&b'-');
    if neg {
        i += 1;
    }
    let year = num(&mut i, 4, 9)?;
    let year = if neg { -year } else { year };
    expect(&mut i, b'-')?;
    let month = num(&mut i, 2, 2)?;
    expect(&mut i, b'-')?;
    let day = num(&mut i, 2, 2)?;
    expect(&mut i, b'T')?;
    let hour = num(&mut i, 2, 2)?;
    expect(&mut i, b':')?;
    let min = num(&mut i, 2, 2)?;
    expect(&mut i, b':')?;
    let sec = num(&mut i, 2, 2)?;
    let mut us = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 6 {
                us = us * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            us *= 10;
        }
    }
    let mut offset_s = 0i64;
    match b.get(i) {
        None => {}
        Some(b'Z') => i += 1,
        Some(&c @ (b'+' | b'-')) => {
            i += 1;
            let oh = num(&mut i, 2, 2)?;
            expect(&mut i, b':')?;
            let om = num(&mut i, 2, 2)?;
            if oh > 14 || om > 59 {
                return None;
            }
            offset_s = (oh * 3600 + om * 60) * if c == b'-' { -1 } else { 1 };
        }
        Some(_) => return None,
    }
    if i != b.len()
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 24
        || min > 59
        || sec > 60
    {
        return None;
    }
    if hour == 24 && (min, sec, us) != (0, 0, 0) {
        return None;
    }
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + min * 60 + sec)?
        .checked_sub(offset_s)?;
    secs.checked_mul(1_000_000)?.checked_add(us)
}

/// Whether a name is a blank node (`_:x`).
pub(super) fn is_blank(iri: &str) -> bool {
    iri.starts_with("_:")
}

/// `s` cut to 80 bytes (and `…`), for quoting in a message.
pub(super) fn short(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut cut = MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xsd_datetimes() {
        for t in [
            0,
            1,
            -1,
            1_700_000_000_123_456,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
            951_782_400_000_000,
        ] {
            let s = xsd_datetime(t).unwrap();
            assert_eq!(parse_xsd_datetime(&s), Some(t), "{s}");
        }
        assert_eq!(xsd_datetime(0).unwrap(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            xsd_datetime(951_782_400_000_000).unwrap(),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(xsd_datetime(-62_135_596_800_000_001), None);
        assert_eq!(
            parse_xsd_datetime("2012-03-02T10:30:00+01:00"),
            Some(1_330_680_600_000_000)
        );
        assert_eq!(
            parse_xsd_datetime("2012-03-02T10:30:00.5"),
            Some(1_330_684_200_500_000)
        );
        assert_eq!(
            parse_xsd_datetime("2012-03-02T10:30:00.1234567-00:30"),
            Some(1_330_686_000_123_456)
        );
        assert_eq!(
            parse_xsd_datetime("2012-03-02T24:00:00Z"),
            Some(1_330_732_800_000_000)
        );
        for bad in [
            "",
            "2012-03-02",
            "2012-13-02T00:00:00Z",
            "2012-03-02T10:30:00.Z",
            "2012-03-02T10:30:00Zx",
            "९९९९-03-02T10:30:00Z",
            "-999999999-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_xsd_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn tag_keys_encode_reversibly() {
        for k in ["a", "my key:x/y%", "é∂", "%41", "%", "a%2", "_-"] {
            let e = encode_tag_key(k);
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-%".contains(&b)),
                "{e}"
            );
            assert_eq!(decode_tag_key(&e), k);
        }
        assert_eq!(decode_tag_key("%ZZ%4"), "%ZZ%4");
        assert_eq!(decode_tag_key("%C3"), "%C3", "not UTF-8: kept as written");
    }
}
