//! `/metrics` in the Prometheus text exposition format (version 0.0.4).
//!
//! Series (all prefixed `sspr_fleet_`):
//! - `rollouts{state}`, `rollout_tenants{state}` (tenants of running, paused and rolling-back
//!   rollouts), `tenants{status}`: gauges read from the database, so every replica reports
//!   the same values;
//! - `jobs{kind,state}`: the durable queue's depth, from the database;
//! - `job_attempts_total{kind,outcome}`, `job_wait_seconds{kind}` (from due to claimed) and
//!   `job_run_seconds{kind}`: counters and histograms of the attempts this process ran;
//! - `graph_requests_total{endpoint}`, `graph_errors_total`, `graph_throttled_total` (429s),
//!   `graph_retries_total`, `graph_request_duration_seconds` (histogram) and
//!   `graph_token_requests_total`: this process's Microsoft Graph traffic, by endpoint
//!   template (never by tenant, to keep the series count bounded);
//! - `webhook_deliveries{state}`: the delivery log, from the database;
//! - `sspr_users{figure}` and `readiness_reports{status}`: the fleet's SSPR readiness from
//!   the stored reports (`users`, `sspr_enabled`, `sspr_registered`, `sspr_capable`,
//!   `capable_without_phone`, `phone_dependent`), from the database.
//!
//! A key restricted to some tenants gets only the rollout, tenant and readiness gauges,
//! counted within its tenants:
//! the process-wide series describe every customer's traffic.

use std::{collections::BTreeMap, fmt::Write};

use sspr_graph::{LATENCY_BUCKETS_MS, MetricsSnapshot};
use sspr_queue::metrics::{Histogram, KindStats, LATENCY_BUCKETS_SECS, Outcome};

/// Everything `/metrics` shows.
#[derive(Debug, Clone, Default)]
pub struct MetricsInput {
    /// Rollouts per state.
    pub rollouts: BTreeMap<String, u64>,
    /// Tenants of active rollouts per state.
    pub rollout_tenants: BTreeMap<String, u64>,
    /// Registered tenants per status.
    pub tenants: BTreeMap<String, u64>,
    /// Fleet SSPR readiness from the stored reports: users per figure (`users`,
    /// `sspr_enabled`, `sspr_registered`, `sspr_capable`, `capable_without_phone`,
    /// `phone_dependent`) and tenants per report status.
    pub readiness: Option<(BTreeMap<String, u64>, BTreeMap<String, u64>)>,
    /// Process-wide series; `None` for restricted keys.
    pub process: Option<ProcessMetrics>,
}

/// The series that describe the whole process.
#[derive(Debug, Clone, Default)]
pub struct ProcessMetrics {
    /// Jobs per (kind, state).
    pub jobs: BTreeMap<(String, String), u64>,
    /// This process's job attempts, by kind (`None` when it runs no jobs).
    pub attempts: Option<BTreeMap<String, KindStats>>,
    /// This process's Graph traffic.
    pub graph: MetricsSnapshot,
    /// Webhook deliveries per state.
    pub webhook_deliveries: BTreeMap<String, u64>,
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP sspr_fleet_{name} {help}");
    let _ = writeln!(out, "# TYPE sspr_fleet_{name} {kind}");
}

fn gauge_by(out: &mut String, name: &str, help: &str, label: &str, values: &BTreeMap<String, u64>) {
    head(out, name, "gauge", help);
    for (k, v) in values {
        let _ = writeln!(out, "sspr_fleet_{name}{{{label}=\"{}\"}} {v}", escape(k));
    }
}

fn le(bound: f64) -> String {
    if bound.is_infinite() { "+Inf".into() } else { format!("{bound}") }
}

/// Writes one histogram's series (`_bucket` cumulative, `_sum`, `_count`) for `labels`.
fn histogram(
    out: &mut String,
    name: &str,
    labels: &str,
    bounds: &[f64],
    buckets: &[u64],
    sum: f64,
    count: u64,
) {
    let mut running = 0;
    for (b, n) in bounds.iter().zip(buckets) {
        running += n;
        let _ = writeln!(out, "sspr_fleet_{name}_bucket{{{labels},le=\"{}\"}} {running}", le(*b));
    }
    let _ = writeln!(out, "sspr_fleet_{name}_sum{{{labels}}} {sum}");
    let _ = writeln!(out, "sspr_fleet_{name}_count{{{labels}}} {count}");
}

fn job_histogram(out: &mut String, name: &str, kind: &str, h: &Histogram) {
    let labels = format!("kind=\"{}\"", escape(kind));
    histogram(out, name, &labels, &LATENCY_BUCKETS_SECS, &h.buckets, h.sum_secs, h.count);
}

/// Reads one counter of an endpoint's stats.
type StatOf = fn(&sspr_graph::EndpointStats) -> u64;

/// Renders the exposition.
pub fn render(m: &MetricsInput) -> String {
    let mut out = String::new();
    gauge_by(&mut out, "rollouts", "Rollouts by state.", "state", &m.rollouts);
    gauge_by(
        &mut out,
        "rollout_tenants",
        "Tenants of running, paused and rolling-back rollouts by state.",
        "state",
        &m.rollout_tenants,
    );
    gauge_by(&mut out, "tenants", "Registered tenants by status.", "status", &m.tenants);
    if let Some((users, reports)) = &m.readiness {
        gauge_by(
            &mut out,
            "sspr_users",
            "Users across the fleet's last readiness reports, by figure.",
            "figure",
            users,
        );
        gauge_by(
            &mut out,
            "readiness_reports",
            "Tenants by the status of their last readiness report refresh.",
            "status",
            reports,
        );
    }
    let Some(p) = &m.process else { return out };

    head(&mut out, "jobs", "gauge", "Jobs in the durable queue by kind and state.");
    for ((kind, state), n) in &p.jobs {
        let _ = writeln!(
            out,
            "sspr_fleet_jobs{{kind=\"{}\",state=\"{}\"}} {n}",
            escape(kind),
            escape(state)
        );
    }
    if let Some(attempts) = &p.attempts {
        head(&mut out, "job_attempts_total", "counter", "Job attempts run by this process.");
        for (kind, s) in attempts {
            for o in Outcome::ALL {
                let n = s.outcomes.get(&o).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "sspr_fleet_job_attempts_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
                    escape(kind),
                    o.as_str()
                );
            }
        }
        head(
            &mut out,
            "job_wait_seconds",
            "histogram",
            "Time from a job's due time until this process claimed it.",
        );
        for (kind, s) in attempts {
            job_histogram(&mut out, "job_wait_seconds", kind, &s.wait);
        }
        head(&mut out, "job_run_seconds", "histogram", "Time a job attempt ran.");
        for (kind, s) in attempts {
            job_histogram(&mut out, "job_run_seconds", kind, &s.run);
        }
    }

    let by_endpoint = p.graph.by_endpoint.clone();
    let counters: [(&str, &str, StatOf); 4] = [
        ("graph_requests_total", "Microsoft Graph requests sent, by endpoint.", |s| s.calls),
        ("graph_errors_total", "Graph requests that failed or answered 4xx/5xx.", |s| s.errors),
        ("graph_throttled_total", "Graph requests answered 429.", |s| s.throttled),
        ("graph_retries_total", "Graph requests that were retries.", |s| s.retries),
    ];
    for (name, help, get) in counters {
        head(&mut out, name, "counter", help);
        for (endpoint, s) in &by_endpoint {
            let _ =
                writeln!(out, "sspr_fleet_{name}{{endpoint=\"{}\"}} {}", escape(endpoint), get(s));
        }
    }
    head(
        &mut out,
        "graph_request_duration_seconds",
        "histogram",
        "Graph request latency, by endpoint.",
    );
    let bounds: Vec<f64> = LATENCY_BUCKETS_MS.iter().map(|ms| ms / 1000.0).collect();
    for (endpoint, s) in &by_endpoint {
        let labels = format!("endpoint=\"{}\"", escape(endpoint));
        histogram(
            &mut out,
            "graph_request_duration_seconds",
            &labels,
            &bounds,
            &s.latency_buckets,
            s.latency_ms_sum / 1000.0,
            s.calls,
        );
    }
    head(&mut out, "graph_token_requests_total", "counter", "Token requests sent.");
    let tokens: u64 = p.graph.token_requests.values().sum();
    let _ = writeln!(out, "sspr_fleet_graph_token_requests_total {tokens}");
    gauge_by(
        &mut out,
        "webhook_deliveries",
        "Webhook deliveries by state.",
        "state",
        &p.webhook_deliveries,
    );
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sspr_queue::QueueMetrics;

    use super::*;

    fn sample() -> MetricsInput {
        let q = QueueMetrics::default();
        q.record(
            "rollout.step",
            Duration::from_millis(20),
            Duration::from_secs(3),
            Outcome::Succeeded,
        );
        q.record(
            "rollout.step",
            Duration::from_millis(20),
            Duration::from_millis(1),
            Outcome::Retried,
        );
        let mut graph = MetricsSnapshot::default();
        let mut s = sspr_graph::EndpointStats {
            calls: 3,
            throttled: 1,
            retries: 1,
            errors: 1,
            ..Default::default()
        };
        s.latency_ms_sum = 160.0;
        s.latency_buckets[1] = 2; // <= 50 ms
        s.latency_buckets[2] = 1; // <= 100 ms
        // Two tenants' calls to one endpoint, summed as the client keeps them.
        let mut both = s.clone();
        both.add(&s);
        graph.by_endpoint.insert("GET /users", both);
        graph.token_requests.insert("t1".into(), 4);
        MetricsInput {
            rollouts: BTreeMap::from([("running".into(), 2)]),
            rollout_tenants: BTreeMap::from([("gate".into(), 5), ("completed".into(), 7)]),
            tenants: BTreeMap::from([("ready".into(), 9)]),
            readiness: Some((
                BTreeMap::from([
                    ("users".into(), 120),
                    ("sspr_registered".into(), 30),
                    ("phone_dependent".into(), 7),
                ]),
                BTreeMap::from([("ok".into(), 4)]),
            )),
            process: Some(ProcessMetrics {
                jobs: BTreeMap::from([(("rollout.step".into(), "queued".into()), 3)]),
                attempts: Some(q.snapshot()),
                graph,
                webhook_deliveries: BTreeMap::from([("failed".into(), 1)]),
            }),
        }
    }

    #[test]
    fn every_series_is_written_with_cumulative_buckets() {
        let text = render(&sample());
        for line in [
            "sspr_fleet_rollouts{state=\"running\"} 2",
            "sspr_fleet_rollout_tenants{state=\"gate\"} 5",
            "sspr_fleet_tenants{status=\"ready\"} 9",
            "sspr_fleet_jobs{kind=\"rollout.step\",state=\"queued\"} 3",
            "sspr_fleet_job_attempts_total{kind=\"rollout.step\",outcome=\"succeeded\"} 1",
            "sspr_fleet_job_attempts_total{kind=\"rollout.step\",outcome=\"retried\"} 1",
            "sspr_fleet_job_run_seconds_bucket{kind=\"rollout.step\",le=\"0.01\"} 1",
            "sspr_fleet_job_run_seconds_bucket{kind=\"rollout.step\",le=\"5\"} 2",
            "sspr_fleet_job_run_seconds_count{kind=\"rollout.step\"} 2",
            // Two tenants' traffic to one endpoint is summed, never labelled by tenant.
            "sspr_fleet_graph_requests_total{endpoint=\"GET /users\"} 6",
            "sspr_fleet_graph_throttled_total{endpoint=\"GET /users\"} 2",
            "sspr_fleet_graph_request_duration_seconds_bucket{endpoint=\"GET /users\",le=\"0.05\"} 4",
            "sspr_fleet_graph_request_duration_seconds_bucket{endpoint=\"GET /users\",le=\"0.1\"} 6",
            "sspr_fleet_graph_request_duration_seconds_bucket{endpoint=\"GET /users\",le=\"+Inf\"} 6",
            "sspr_fleet_graph_request_duration_seconds_sum{endpoint=\"GET /users\"} 0.32",
            "sspr_fleet_graph_token_requests_total 4",
            "sspr_fleet_webhook_deliveries{state=\"failed\"} 1",
            "sspr_fleet_sspr_users{figure=\"sspr_registered\"} 30",
            "sspr_fleet_sspr_users{figure=\"phone_dependent\"} 7",
            "sspr_fleet_readiness_reports{status=\"ok\"} 4",
            "# TYPE sspr_fleet_job_wait_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("t1"), "no tenant label");
    }

    #[test]
    fn restricted_output_has_only_the_scoped_gauges() {
        let mut m = sample();
        m.process = None;
        let text = render(&m);
        assert!(text.contains("sspr_fleet_rollout_tenants{state=\"completed\"} 7"));
        assert!(!text.contains("graph_") && !text.contains("jobs") && !text.contains("webhook"));
    }

    /// Every series the Grafana dashboard in `deploy/` queries is one `/metrics` writes.
    #[test]
    fn the_dashboard_queries_only_series_that_exist() {
        let path =
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/sspr-fleet-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let text = render(&sample());
        let written: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                for (i, _) in expr.match_indices("sspr_fleet_") {
                    let name: String = expr[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(written.contains(name.as_str()), "{name} in {expr:?} is not written");
                    queried += 1;
                }
            }
        }
        assert!(queried >= 12, "{queried}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
