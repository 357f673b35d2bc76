//! Points in time as docker's CLI reads them (`logs --since/--until`, `prune --filter
//! until=`): Unix seconds, a Go duration before now, or a date and time.

use anyhow::Result;
use chrono::{DateTime, Duration, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// `value` as docker's `GetTimestamp` reads it: Unix seconds (`1733500000`, with a fraction
/// or not), a Go duration before now (`24h`, `1m30s`, `1.5s`; a negative one is after now),
/// an RFC 3339 time, or a date and time without a zone (`2026-12-06`, `2026-12-06T19:06`,
/// `2026-12-06T19:06:18.5`), which is local time.
pub fn point_in_time(value: &str) -> Result<DateTime<Utc>> {
    let bad = || {
        anyhow::anyhow!(
            "{value:?} is not Unix seconds, a duration (24h, 1m30s) or a date and time (2026-12-06T19:06:18Z)"
        )
    };
    if let Some((secs, nanos)) = unix_seconds(value) {
        return DateTime::from_timestamp(secs, nanos).ok_or_else(bad);
    }
    if let Some(d) = go_duration(value) {
        return Utc::now().checked_sub_signed(d).ok_or_else(bad);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.into());
    }
    let local = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(value, f).ok())
        .or_else(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok().and_then(|d| d.and_hms_opt(0, 0, 0)))
        .ok_or_else(bad)?;
    Local.from_local_datetime(&local).earliest().map(Into::into).ok_or_else(bad)
}

/// `SECONDS[.FRACTION]` as (seconds, nanoseconds).
fn unix_seconds(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if secs.is_empty() || !digits(secs) || !digits(frac) || frac.len() > 9 {
        return None;
    }
    let nanos = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    Some((secs.parse().ok()?, nanos))
}

/// A Go duration (`time.ParseDuration`), signed: `90m`, `1h30m`, `1.5s`, `-5s` (the
/// Dockerfile parser's reading of HEALTHCHECK durations, with a sign).
fn go_duration(v: &str) -> Option<Duration> {
    let (negative, rest) = match v.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, v.strip_prefix('+').unwrap_or(v)),
    };
    // "0" alone is Go's zero, and an empty string none (Unix seconds take "0" first).
    if rest.is_empty() || rest == "0" {
        return None;
    }
    let d = Duration::nanoseconds(i64::try_from(builder::dockerfile::parse_duration(rest)?).ok()?);
    Some(if negative { -d } else { d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse_as_go_reads_them() {
        assert_eq!(go_duration("90m"), Some(Duration::minutes(90)));
        assert_eq!(go_duration("1h30m"), Some(Duration::minutes(90)));
        assert_eq!(go_duration("1.5s"), Some(Duration::milliseconds(1500)));
        assert_eq!(go_duration("-5s"), Some(Duration::seconds(-5)));
        assert_eq!(go_duration("250ms"), Some(Duration::milliseconds(250)));
        for bad in ["", "5", "s", "5x", "1h-5m", "-", "1..5s"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_read_as_dockers_get_timestamp() {
        assert_eq!(point_in_time("1733500000.5").unwrap(), DateTime::from_timestamp(1733500000, 500_000_000).unwrap());
        assert_eq!(point_in_time("2026-12-06T19:06:18Z").unwrap().to_rfc3339(), "2026-12-06T19:06:18+00:00");
        let local =
            |s: &str| Local.from_local_datetime(&NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap());
        assert_eq!(point_in_time("2026-12-06").unwrap(), local("2026-12-06T00:00:00").earliest().unwrap());
        assert_eq!(point_in_time("2026-12-06T19:06").unwrap(), local("2026-12-06T19:06:00").earliest().unwrap());
        let before = Utc::now();
        let later = point_in_time("-10s").unwrap();
        assert!(later > before + Duration::seconds(9), "a negative duration is after now");
        assert!(point_in_time("soon").is_err());
    }
}
