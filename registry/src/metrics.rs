//! Prometheus metrics: requests by route, method and status, bytes in and out, upload durations.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Where `/metrics` is served: the `[metrics]` table of the config.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics` (and `/health`) without auth on this `HOST:PORT` only, and not on the
    /// registry's address; when unset, `/metrics` is on the registry's address, behind its auth.
    pub addr: Option<String>,
}

/// Counters the request middleware feeds and `/metrics` renders.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    bytes_in: BTreeMap<&'static str, u64>,
    bytes_out: BTreeMap<&'static str, u64>,
    upload_buckets: [u64; BUCKETS.len()],
    upload_count: u64,
    upload_sum: f64,
}

impl Metrics {
    /// Counts one request and the body bytes it brought (`bytes_in`, as read, whether or not a
    /// `Content-Length` announced them).
    pub fn record(&self, route: &'static str, method: &str, status: u16, bytes_in: u64, _took: Duration) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *m.requests.entry((route, method.to_owned(), status)).or_default() += 1;
        *m.bytes_in.entry(route).or_default() += bytes_in;
        m.bytes_out.entry(route).or_default(); // every route has its series, at 0 at first
    }

    /// Counts response body bytes of `route` as they go out.
    pub fn add_sent(&self, route: &'static str, n: u64) {
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *m.bytes_out.entry(route).or_default() += n;
    }

    /// Records how long a finished blob upload's last request took.
    pub fn record_upload(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                m.upload_buckets[i] += 1;
            }
        }
        m.upload_count += 1;
        m.upload_sum += secs;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let m = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let _ = writeln!(out, "# HELP berth_registry_requests_total HTTP requests by route, method and status.");
        let _ = writeln!(out, "# TYPE berth_registry_requests_total counter");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "berth_registry_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
            );
        }
        for (name, help, map) in [
            ("berth_registry_bytes_received_total", "Request body bytes by route.", &m.bytes_in),
            ("berth_registry_bytes_sent_total", "Response body bytes by route.", &m.bytes_out),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (route, n) in map {
                let _ = writeln!(out, "{name}{{route=\"{route}\"}} {n}");
            }
        }
        let name = "berth_registry_upload_finish_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Duration of the request that completes a blob upload.\n# TYPE {name} histogram"
        );
        for (b, n) in BUCKETS.iter().zip(m.upload_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", m.upload_count);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", m.upload_sum, m.upload_count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.record("blob", "GET", 200, 0, Duration::ZERO);
        m.record("blob", "GET", 200, 0, Duration::ZERO);
        m.add_sent("blob", 1234);
        m.add_sent("blob", 6);
        m.record_upload(Duration::from_millis(70));
        let text = m.render();
        assert!(
            text.contains("berth_registry_requests_total{route=\"blob\",method=\"GET\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("berth_registry_bytes_sent_total{route=\"blob\"} 1240"));
        assert!(text.contains("berth_registry_upload_finish_seconds_bucket{le=\"0.05\"} 0"));
        assert!(text.contains("berth_registry_upload_finish_seconds_bucket{le=\"0.1\"} 1"));
    }
}
