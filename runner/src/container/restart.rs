//! `--restart`: docker's restart policies, and when the supervisor starts a container's
//! process again after it exits.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A restart policy, as `docker run --restart` spells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Never restarted (docker's `no`).
    #[default]
    No,
    /// Restarted whenever it exits, unless `stop` or `kill` ended it.
    Always,
    /// As `always` (berth has no daemon whose restart would tell them apart).
    UnlessStopped,
    /// Restarted when it exits with a code other than 0, at most `max` times (0: no limit).
    OnFailure {
        /// docker's `MaximumRetryCount`.
        max: u32,
    },
}

impl std::str::FromStr for Policy {
    type Err = String;

    fn from_str(s: &str) -> Result<Policy, String> {
        let (name, count) = match s.split_once(':') {
            Some((n, c)) => (n, Some(c)),
            None => (s, None),
        };
        let policy = match name {
            "no" | "" => Policy::No,
            "always" => Policy::Always,
            "unless-stopped" => Policy::UnlessStopped,
            "on-failure" => {
                let max = match count {
                    None => 0,
                    Some(c) => c
                        .parse::<u32>()
                        .map_err(|_| format!("invalid restart policy {s:?}: bad maximum retry count {c:?}"))?,
                };
                return Ok(Policy::OnFailure { max });
            }
            _ => return Err(format!("invalid restart policy {s:?}: no, always, unless-stopped or on-failure[:N]")),
        };
        match count {
            Some(_) => Err(format!("maximum retry count cannot be used with restart policy '{name}'")),
            None => Ok(policy),
        }
    }
}

impl Policy {
    /// docker's `HostConfig.RestartPolicy.Name`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::No => "no",
            Policy::Always => "always",
            Policy::UnlessStopped => "unless-stopped",
            Policy::OnFailure { .. } => "on-failure",
        }
    }

    /// docker's `HostConfig.RestartPolicy.MaximumRetryCount`.
    pub fn max_retries(self) -> u32 {
        match self {
            Policy::OnFailure { max } => max,
            _ => 0,
        }
    }

    /// Whether a process that exited with `code` is started again, after `restarts`
    /// restarts, unless a user's `stop` or `kill` ended it.
    pub fn restarts(self, code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        !stopped_by_user
            && match self {
                Policy::No => false,
                Policy::Always | Policy::UnlessStopped => true,
                Policy::OnFailure { max } => code != 0 && (max == 0 || restarts < max),
            }
    }
}

/// docker's back-off between restarts: 100 ms, doubled each time up to a minute, and back
/// to 100 ms after a run of at least 10 seconds.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { delay: FIRST }
    }
}

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(60);
const LONG_RUN: Duration = Duration::from_secs(10);

impl Backoff {
    /// The wait before the next start, after a run that lasted `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= LONG_RUN {
            self.delay = FIRST;
        }
        let wait = self.delay;
        self.delay = (self.delay * 2).min(MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_policies_parse_and_bad_ones_are_refused() {
        assert_eq!("no".parse(), Ok(Policy::No));
        assert_eq!("always".parse(), Ok(Policy::Always));
        assert_eq!("unless-stopped".parse(), Ok(Policy::UnlessStopped));
        assert_eq!("on-failure".parse(), Ok(Policy::OnFailure { max: 0 }));
        assert_eq!("on-failure:3".parse(), Ok(Policy::OnFailure { max: 3 }));
        for bad in ["sometimes", "always:2", "on-failure:x", "on-failure:-1"] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_policy_restarts_what_docker_restarts() {
        let on3 = Policy::OnFailure { max: 3 };
        assert!(on3.restarts(1, 2, false) && !on3.restarts(1, 3, false) && !on3.restarts(0, 0, false));
        assert!(Policy::Always.restarts(0, 100, false) && !Policy::Always.restarts(0, 0, true));
        assert!(!Policy::No.restarts(1, 0, false));
        assert!(Policy::OnFailure { max: 0 }.restarts(2, 1000, false), "0 is no limit");
    }

    #[test]
    fn the_backoff_doubles_to_a_minute_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let short = Duration::from_millis(5);
        let waits: Vec<u128> = (0..4).map(|_| b.next(short).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800]);
        for _ in 0..20 {
            b.next(short);
        }
        assert_eq!(b.next(short), MAX);
        assert_eq!(b.next(Duration::from_secs(11)), FIRST);
    }
}
