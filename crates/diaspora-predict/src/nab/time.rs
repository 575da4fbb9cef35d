//! NAB timestamps as microseconds since the Unix epoch.
//!
//! NAB's CSVs write `YYYY-MM-DD HH:MM:SS` and its windows file
//! `YYYY-MM-DD HH:MM:SS.ffffff` (`nab/util.py` `strf`). Both are naive
//! timestamps; we read them as UTC on the proleptic Gregorian calendar, which
//! keeps equal strings equal and order intact, all that scoring needs.

use crate::PredictError;

const US_PER_S: i64 = 1_000_000;
const S_PER_DAY: i64 = 86_400;
const FRACTION_DIGITS_MAX: usize = 6;

/// Parses `YYYY-MM-DD HH:MM:SS` with an optional `.f` to `.ffffff` fraction
/// into microseconds since 1970-01-01 00:00:00 UTC.
///
/// The format is strict: four-digit year, two-digit fields, a single space,
/// no time zone, no leap second.
///
/// ```
/// use diaspora_predict::nab::parse_timestamp_us;
/// assert_eq!(parse_timestamp_us("1970-01-01 00:00:01.5").unwrap(), 1_500_000);
/// assert_eq!(
///     parse_timestamp_us("2014-04-10 07:15:00.000000").unwrap(),
///     parse_timestamp_us("2014-04-10 07:15:00").unwrap(),
/// );
/// assert!(parse_timestamp_us("2014-02-30 00:00:00").is_err());
/// ```
pub fn parse_timestamp_us(text: &str) -> Result<i64, PredictError> {
    parse_timestamp(text)
        .map_err(|reason| PredictError::Data(format!("timestamp `{text}`: {reason}")))
}

/// Formats microseconds since the epoch as NAB's `strf` does:
/// `YYYY-MM-DD HH:MM:SS.ffffff`. Years outside 0..=9999 print with a sign or
/// more digits and will not parse back.
///
/// ```
/// use diaspora_predict::nab::format_timestamp_us;
/// assert_eq!(format_timestamp_us(1_500_000), "1970-01-01 00:00:01.500000");
/// ```
pub fn format_timestamp_us(time_us: i64) -> String {
    let days = time_us.div_euclid(S_PER_DAY * US_PER_S);
    let in_day_us = time_us.rem_euclid(S_PER_DAY * US_PER_S);
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day_us / US_PER_S;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        in_day_us % US_PER_S
    )
}

/// The parser behind [`parse_timestamp_us`], returning only the reason so
/// that callers can add the file and line.
pub(crate) fn parse_timestamp(text: &str) -> Result<i64, String> {
    let bytes = text.as_bytes();
    if bytes.len() < 19 {
        return Err("expected `YYYY-MM-DD HH:MM:SS[.ffffff]`".to_string());
    }
    for (at, want) in [(4, b'-'), (7, b'-'), (10, b' '), (13, b':'), (16, b':')] {
        if bytes[at] != want {
            return Err(format!(
                "expected `{}` at byte {at} (format `YYYY-MM-DD HH:MM:SS[.ffffff]`)",
                want as char
            ));
        }
    }
    let year = digits(bytes, 0, 4)?;
    let month = digits(bytes, 5, 2)?;
    let day = digits(bytes, 8, 2)?;
    let hour = digits(bytes, 11, 2)?;
    let minute = digits(bytes, 14, 2)?;
    let second = digits(bytes, 17, 2)?;
    if !(1..=12).contains(&month) {
        return Err(format!("month {month} is not in 1..=12"));
    }
    let days_in_month = days_in_month(year, month);
    if day < 1 || day > days_in_month {
        return Err(format!(
            "day {day} is not in 1..={days_in_month} for {year:04}-{month:02}"
        ));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!(
            "time {hour:02}:{minute:02}:{second:02} is out of range"
        ));
    }
    let mut fraction_us = 0;
    if bytes.len() > 19 {
        let fraction = &bytes[20.min(bytes.len())..];
        if bytes[19] != b'.' || fraction.is_empty() || fraction.len() > FRACTION_DIGITS_MAX {
            return Err("expected nothing or `.` and 1 to 6 digits after the seconds".to_string());
        }
        fraction_us = digits(bytes, 20, fraction.len())?;
        for _ in fraction.len()..FRACTION_DIGITS_MAX {
            fraction_us *= 10;
        }
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * S_PER_DAY + hour * 3600 + minute * 60 + second;
    Ok(seconds * US_PER_S + fraction_us)
}

/// Reads `count` ASCII digits starting at `at`.
fn digits(bytes: &[u8], at: usize, count: usize) -> Result<i64, String> {
    let mut value = 0i64;
    for (offset, &byte) in bytes[at..at + count].iter().enumerate() {
        if !byte.is_ascii_digit() {
            return Err(format!("expected a digit at byte {}", at + offset));
        }
        value = value * 10 + i64::from(byte - b'0');
    }
    Ok(value)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`, <https://howardhinnant.github.io/date_algorithms.html>).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`] (Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Ok(0));
        // `date -u -d '2014-04-01 00:00:00' +%s` = 1396310400
        assert_eq!(
            parse_timestamp("2014-04-01 00:00:00"),
            Ok(1_396_310_400 * US_PER_S)
        );
        assert_eq!(
            parse_timestamp("2000-02-29 23:59:59.000001"),
            Ok(951_868_799 * US_PER_S + 1)
        );
        assert_eq!(parse_timestamp("1969-12-31 23:59:59.9"), Ok(-100_000));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2014-04-01",
            "2014-04-01T00:00:00",
            "2014-13-01 00:00:00",
            "2014-00-01 00:00:00",
            "2013-02-29 00:00:00",
            "2014-04-31 00:00:00",
            "2014-04-01 24:00:00",
            "2014-04-01 00:60:00",
            "2014-04-01 00:00:60",
            "2014-04-01 00:00:00.",
            "2014-04-01 00:00:00.1234567",
            "2014-04-01 00:00:00Z",
            "2014-04-01 00:00:0a",
            "+014-04-01 00:00:00",
        ] {
            assert!(parse_timestamp(bad).is_err(), "accepted `{bad}`");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(
            time_us in -62_167_219_200_000_000i64..253_402_300_800_000_000i64,
        ) {
            // 0000-01-01 .. 9999-12-31 inclusive.
            let text = format_timestamp_us(time_us);
            prop_assert_eq!(parse_timestamp(&text), Ok(time_us), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse_timestamp(&text);
        }
    }
}
