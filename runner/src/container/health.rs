//! Health checks: the image's HEALTHCHECK or docker's `--health-*` flags, run by the
//! supervisor inside the container (see [`super::exec`]) on docker's schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A health check in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// The probe: the program and its arguments (a shell form is `/bin/sh -c CMD`).
    pub command: Vec<String>,
    /// Time between probes.
    pub interval: Duration,
    /// Time a probe may take.
    pub timeout: Duration,
    /// Time after the start during which failures do not count.
    pub start_period: Duration,
    /// Time between probes during the start period (docker 25's `--start-interval`).
    pub start_interval: Duration,
    /// Failures in a row that make the container unhealthy.
    pub retries: u32,
}

/// docker's defaults.
const INTERVAL: Duration = Duration::from_secs(30);
const TIMEOUT: Duration = Duration::from_secs(30);
const START_INTERVAL: Duration = Duration::from_secs(5);
const RETRIES: u32 = 3;

/// The `--health-*` flags of `berth run`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthFlags {
    /// `--health-cmd` (a shell command).
    pub cmd: Option<String>,
    /// `--health-interval`.
    pub interval: Option<Duration>,
    /// `--health-timeout`.
    pub timeout: Option<Duration>,
    /// `--health-start-period`.
    pub start_period: Option<Duration>,
    /// `--health-start-interval`.
    pub start_interval: Option<Duration>,
    /// `--health-retries`.
    pub retries: Option<u32>,
    /// `--no-healthcheck`.
    pub disable: bool,
}

impl HealthConfig {
    /// The check in docker's config form (`Test` with `CMD`, durations in nanoseconds), as
    /// `inspect` shows it and `commit` writes it.
    pub fn docker_json(&self) -> serde_json::Value {
        serde_json::json!({
            "Test": std::iter::once("CMD".to_owned()).chain(self.command.iter().cloned()).collect::<Vec<_>>(),
            "Interval": self.interval.as_nanos() as u64,
            "Timeout": self.timeout.as_nanos() as u64,
            "StartPeriod": self.start_period.as_nanos() as u64,
            "StartInterval": self.start_interval.as_nanos() as u64,
            "Retries": self.retries,
        })
    }

    /// The check in force: the image's `Healthcheck` (docker's config JSON: Test, Interval,
    /// Timeout, StartPeriod, StartInterval in nanoseconds, Retries) overridden field by
    /// field by the flags; `None` without a test, with `NONE`, or with `--no-healthcheck`.
    pub fn resolve(image: Option<&serde_json::Value>, flags: &HealthFlags) -> Result<Option<HealthConfig>, String> {
        if flags.disable {
            return Ok(None);
        }
        let field = |k: &str| image.and_then(|h| h.get(k));
        let nanos = |k: &str| field(k).and_then(serde_json::Value::as_u64).filter(|&n| n > 0).map(Duration::from_nanos);
        let test: Vec<String> = match &flags.cmd {
            Some(cmd) => vec!["CMD-SHELL".into(), cmd.clone()],
            None => field("Test").and_then(|t| serde_json::from_value(t.clone()).ok()).unwrap_or_default(),
        };
        let command = match test.split_first() {
            None => return Ok(None),
            Some((kind, _)) if kind == "NONE" => return Ok(None),
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, [cmd])) if kind == "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
            // docker's older form: the test without a kind is a shell command.
            _ if test.len() == 1 => vec!["/bin/sh".into(), "-c".into(), test[0].clone()],
            _ => return Err(format!("the image's health check {test:?} is not CMD, CMD-SHELL or NONE")),
        };
        let retries = flags.retries.or_else(|| field("Retries").and_then(|r| r.as_u64()).map(|r| r as u32));
        // As docker: 0 means the default, for the flags as for the image.
        let set = |d: Option<Duration>| d.filter(|d| !d.is_zero());
        Ok(Some(HealthConfig {
            command,
            interval: set(flags.interval).or_else(|| nanos("Interval")).unwrap_or(INTERVAL),
            timeout: set(flags.timeout).or_else(|| nanos("Timeout")).unwrap_or(TIMEOUT),
            start_period: set(flags.start_period).or_else(|| nanos("StartPeriod")).unwrap_or_default(),
            start_interval: set(flags.start_interval).or_else(|| nanos("StartInterval")).unwrap_or(START_INTERVAL),
            retries: retries.filter(|&r| r > 0).unwrap_or(RETRIES),
        }))
    }

    /// How long to wait for the next probe, `elapsed` after the start: the start interval
    /// during the start period, else the interval.
    pub fn next_probe(&self, elapsed: Duration) -> Duration {
        if elapsed < self.start_period {
            self.start_interval
        } else {
            self.interval
        }
    }
}

/// Parses docker's durations: `30s`, `1m30s`, `500ms`, `1h`, `2.5s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (try 30s, 1m30s, 500ms)");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_images_check_is_used_and_flags_override_it() {
        let image = json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 2_000_000_000u64, "Retries": 5});
        let h = HealthConfig::resolve(Some(&image), &HealthFlags::default()).unwrap().unwrap();
        assert_eq!(h.command, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!((h.interval, h.timeout, h.retries), (Duration::from_secs(2), TIMEOUT, 5));
        let flags = HealthFlags { cmd: Some("true".into()), retries: Some(1), ..Default::default() };
        let h = HealthConfig::resolve(Some(&image), &flags).unwrap().unwrap();
        assert_eq!((h.command[2].as_str(), h.interval, h.retries), ("true", Duration::from_secs(2), 1));
        let zero = HealthFlags { interval: Some(Duration::ZERO), timeout: Some(Duration::ZERO), ..Default::default() };
        let h = HealthConfig::resolve(Some(&image), &zero).unwrap().unwrap();
        assert_eq!((h.interval, h.timeout), (Duration::from_secs(2), TIMEOUT), "0 means the default, as docker's");
        let exec = json!({"Test": ["CMD", "/bin/check", "-q"]});
        assert_eq!(
            HealthConfig::resolve(Some(&exec), &HealthFlags::default()).unwrap().unwrap().command,
            ["/bin/check", "-q"]
        );
    }

    #[test]
    fn none_and_no_healthcheck_turn_it_off() {
        let none = json!({"Test": ["NONE"]});
        assert_eq!(HealthConfig::resolve(Some(&none), &HealthFlags::default()).unwrap(), None);
        let image = json!({"Test": ["CMD", "true"]});
        let off = HealthFlags { disable: true, ..Default::default() };
        assert_eq!(HealthConfig::resolve(Some(&image), &off).unwrap(), None);
        assert_eq!(HealthConfig::resolve(None, &HealthFlags::default()).unwrap(), None);
        assert!(HealthConfig::resolve(Some(&json!({"Test": ["BOGUS", "x", "y"]})), &HealthFlags::default()).is_err());
    }

    #[test]
    fn probes_come_at_the_start_interval_during_the_start_period() {
        let h = HealthConfig {
            command: vec!["true".into()],
            interval: Duration::from_secs(30),
            timeout: TIMEOUT,
            start_period: Duration::from_secs(10),
            start_interval: Duration::from_millis(100),
            retries: 3,
        };
        assert_eq!(h.next_probe(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(h.next_probe(Duration::from_secs(11)), Duration::from_secs(30));
    }

    #[test]
    fn durations_parse_as_docker_writes_them() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "5x", "s", "1m30"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
