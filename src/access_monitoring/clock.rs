//! Times of day and weekdays, read and computed as Teleport's Go code does.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use winnow::combinator::{eof, terminated};
use winnow::prelude::*;
use winnow::token::take_while;

/// Go's zero `time.Time` (0001-01-01T00:00:00Z): what Teleport's plugin sees for a time the
/// request does not carry.
pub fn go_zero_time() -> DateTime<Utc> {
    DateTime::from_timestamp(-62_135_596_800, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Reads `HH:MM` the way Go's `time.Parse("15:04", …)` does: one or two digits of hour
/// (0–23), a colon, exactly two digits of minute (00–59), nothing else.
pub fn parse_clock(text: &str) -> Option<NaiveTime> {
    let digits = |c: char| c.is_ascii_digit();
    let mut input = text;
    let parsed: winnow::Result<(&str, &str)> = (
        terminated(take_while(1..=2, digits), ':'),
        terminated(take_while(2, digits), eof),
    )
        .parse_next(&mut input);
    let (hour, minute) = parsed.ok()?;
    let hour: u32 = hour.parse().ok()?;
    let minute: u32 = minute.parse().ok()?;
    NaiveTime::from_hms_opt(hour, minute, 0).filter(|_| hour < 24 && minute < 60)
}

/// Go's `time.Weekday.String()`.
pub fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

/// `day(t)`: the weekday of `t` in `timezone`.
pub fn day(t: DateTime<Utc>, timezone: Tz) -> &'static str {
    weekday_name(t.with_timezone(&timezone).weekday())
}

/// `clock_between(t, start, end)`: Teleport sets `start` and `end` on the same local date as
/// `t` and asks whether `t` is strictly after the one and strictly before the other. So a
/// window with `start` not before `end` (across midnight) never matches. The comparison is
/// made on the local wall clock, which is what the Go code means everywhere but inside a
/// daylight-saving jump.
pub fn clock_between(t: DateTime<Utc>, start: NaiveTime, end: NaiveTime, timezone: Tz) -> bool {
    let local = t.with_timezone(&timezone).naive_local();
    let date = local.date();
    local > date.and_time(start) && local < date.and_time(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_go_15_04() {
        assert_eq!(parse_clock("09:30"), NaiveTime::from_hms_opt(9, 30, 0));
        assert_eq!(parse_clock("9:30"), NaiveTime::from_hms_opt(9, 30, 0));
        assert_eq!(parse_clock("23:59"), NaiveTime::from_hms_opt(23, 59, 0));
        for bad in [
            "24:00", "9:5", "09:60", "0930", "09:30:00", " 09:30", "123:00", "", "ab:cd",
        ] {
            assert_eq!(parse_clock(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn go_zero_time_is_year_one() {
        assert_eq!(go_zero_time().year(), 1);
        assert_eq!(day(go_zero_time(), Tz::UTC), "Monday");
    }
}
