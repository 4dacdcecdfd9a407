//! `/metrics`: Prometheus/OpenMetrics text built from the snapshot at
//! scrape time through a prometheus-client collector.

use std::sync::Arc;

use chrono::Utc;
use hyper::header::{HeaderValue, VARY};
use hyper::{Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::exposition::Format;
use super::response::{Body, respond};
use super::server::{Refusal, RefusedConnections};
use crate::core::health::Status;
use crate::core::ids::JobName;
use crate::state::{Phase, Shared};

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(shared: Arc<Shared>, refused: Arc<RefusedConnections>) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SnapshotCollector { shared }));
        registry.register_collector(Box::new(RefusedCollector { refused }));
        Metrics { registry }
    }

    /// The registry in `format` (see [`Format::negotiate`]).
    pub fn render(&self, format: Format) -> Response<Body> {
        let mut text = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            return failed("metrics encoding failed".into());
        }
        let text = match format {
            Format::OpenMetrics => text,
            Format::Classic => match super::exposition::to_classic(&text) {
                Ok(classic) => classic,
                Err(e) => return failed(format!("metrics encoding failed: {e}")),
            },
        };
        let mut response = respond(StatusCode::OK, format.content_type(), text);
        // The body depends on Accept: caches must not serve one for the other.
        response
            .headers_mut()
            .insert(VARY, HeaderValue::from_static("Accept"));
        response
    }
}

fn failed(message: String) -> Response<Body> {
    tracing::error!(%message, "/metrics");
    respond(
        StatusCode::INTERNAL_SERVER_ERROR,
        super::response::TEXT,
        format!("{message}\n"),
    )
}

/// `vigil_admin_connections_refused_total{reason}`, from the accept loop's counters.
#[derive(Debug)]
struct RefusedCollector {
    refused: Arc<RefusedConnections>,
}

impl Collector for RefusedCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut metric = enc.encode_descriptor(
            "vigil_admin_connections_refused",
            "Admin connections closed unserved (past the limits, and not a probe request), by reason: per_client (the address held max_connections_per_client), pool (max_connections taken).",
            None,
            MetricType::Counter,
        )?;
        for why in Refusal::ALL {
            let labels: Labels = vec![("reason", why.as_str().to_owned())];
            metric
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, f64>(&self.refused.count(why), None)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SnapshotCollector {
    shared: Arc<Shared>,
}

pub(super) type Labels = Vec<(&'static str, String)>;

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

pub(super) fn gauges<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> std::fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// `name` without `_total`: the encoder appends it.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, f64>(&value, None)
}

fn state_set(status: Status) -> impl Iterator<Item = (&'static str, i64)> {
    Status::ALL
        .into_iter()
        .map(move |s| (s.as_str(), i64::from(s == status)))
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let now = Utc::now();
        let shared = &self.shared;
        let snapshot = shared.snapshot();
        let e = &mut enc;

        enc_build_info(e)?;
        let overall = if shared.phase() == Phase::Ready && snapshot.published_at.is_some() {
            snapshot.overall(now)
        } else {
            Status::Fail
        };
        gauges(
            e,
            "vigil_health_status",
            "Overall status as a state set: 1 for the current status.",
            state_set(overall).map(|(s, v)| (vec![("status", s.to_owned())], v)),
        )?;
        gauge(
            e,
            "vigil_ready",
            "1 once start-up is complete and until shutdown begins.",
            i64::from(shared.phase() == Phase::Ready),
        )?;
        gauges(
            e,
            "vigil_health_check_status",
            "Status of each check as a state set (stale results count as fail).",
            snapshot.checks.iter().flat_map(|c| {
                let status = c.status_at(now);
                state_set(status).map(move |(s, v)| {
                    (
                        vec![("check", c.spec.key.clone()), ("status", s.to_owned())],
                        v,
                    )
                })
            }),
        )?;
        gauges(
            e,
            "vigil_health_check_observed_value",
            "Each check's last observed value, in its unit (`observedUnit`).",
            snapshot.checks.iter().filter_map(|c| {
                let value = c.observation.value?;
                let unit = c.observation.unit.unwrap_or("");
                Some((
                    vec![("check", c.spec.key.clone()), ("unit", unit.to_owned())],
                    value,
                ))
            }),
        )?;
        gauges(
            e,
            "vigil_health_check_last_observed_timestamp_seconds",
            "When each check last reported.",
            snapshot.checks.iter().map(|c| {
                (
                    vec![("check", c.spec.key.clone())],
                    c.observed_at.timestamp_millis() as f64 / 1000.0,
                )
            }),
        )?;
        gauges(
            e,
            "vigil_health_check_duration_seconds",
            "How long each check's last run took.",
            snapshot.checks.iter().filter(|c| c.spec.periodic).map(|c| {
                (
                    vec![("check", c.spec.key.clone())],
                    c.duration.as_secs_f64(),
                )
            }),
        )?;
        gauges(
            e,
            "vigil_health_check_consecutive_failures",
            "Consecutive failed runs of each check (drives its back-off).",
            snapshot.checks.iter().map(|c| {
                (
                    vec![("check", c.spec.key.clone())],
                    i64::from(c.consecutive_failures),
                )
            }),
        )?;
        if let Some(pool) = snapshot.pool {
            gauge(
                e,
                "vigil_catalog_pool_max_connections",
                "Configured catalog pool size.",
                pool.max_size,
            )?;
            gauges(
                e,
                "vigil_catalog_pool_connections",
                "Catalog connections by state.",
                [
                    (vec![("state", "idle".to_owned())], pool.available),
                    (
                        vec![("state", "in_use".to_owned())],
                        pool.size.saturating_sub(pool.available),
                    ),
                ],
            )?;
            gauge(
                e,
                "vigil_catalog_pool_waiting",
                "Tasks waiting for a catalog connection.",
                pool.waiting,
            )?;
        }
        gauge(
            e,
            "vigil_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded successfully.",
            shared.last_reload_ok(),
        )?;
        counter(
            e,
            "vigil_config_reload_failures",
            "Config reloads refused (the old config stayed).",
            shared.reload_failures(),
        )?;
        counter(
            e,
            "vigil_log_dropped_lines",
            "Log lines the file writer dropped because its queue was full.",
            shared.log_dropped_lines(),
        )?;

        encode_jobs(&mut enc, shared)?;
        super::metrics_wal::encode(&mut enc, shared)?;
        super::metrics_drill::encode(&mut enc, shared)?;
        super::metrics_verify::encode(&mut enc, shared)?;
        encode_audit(&mut enc, shared)?;
        super::metrics_notify::encode(&mut enc, shared)?;

        let p = &snapshot.process;
        enc.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent.",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, f64>(&p.cpu_seconds, None)?;
        let e = &mut enc;
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size.",
            p.resident_bytes,
        )?;
        gauge(
            e,
            "process_virtual_memory_bytes",
            "Virtual memory size.",
            p.virtual_bytes,
        )?;
        gauge(e, "process_open_fds", "Open file descriptors.", p.open_fds)?;
        gauge(e, "process_max_fds", "File descriptor limit.", p.max_fds)?;
        gauge(e, "process_threads", "OS threads.", p.threads)?;
        // Recorded at start-up: /proc/stat (boot time) is hidden under ProcSubset=pid.
        gauge(
            e,
            "process_start_time_seconds",
            "Start time since the epoch.",
            shared.started_at.timestamp_millis() as f64 / 1000.0,
        )?;
        Ok(())
    }
}

/// The audit journal: appends, failures, losses, queue and shipping lag.
fn encode_audit(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    use std::sync::atomic::Ordering::Relaxed;
    let a = &shared.audit;
    counter(
        enc,
        "vigil_audit_events",
        "Events written to the audit journal.",
        a.appended.load(Relaxed),
    )?;
    counter(
        enc,
        "vigil_audit_write_failures",
        "Failed attempts to write the audit journal (destructive operations are refused meanwhile).",
        a.write_failures.load(Relaxed),
    )?;
    gauge(
        enc,
        "vigil_audit_queued_events",
        "Events waiting to be written (held while the journal cannot be written).",
        a.held.load(Relaxed),
    )?;
    gauge(
        enc,
        "vigil_audit_head_seq",
        "Sequence number of the journal's last record.",
        a.head_seq.load(Relaxed),
    )?;
    let head = a.head_seq.load(Relaxed);
    let mut sinks = vec![("catalog", a.shipped_catalog.load(Relaxed))];
    if a.loki_enabled.load(Relaxed) {
        sinks.push(("loki", a.shipped_loki.load(Relaxed)));
    }
    gauges(
        enc,
        "vigil_audit_ship_lag_events",
        "Journal records not yet shipped to the sink.",
        sinks.into_iter().map(|(sink, shipped)| {
            (
                vec![("sink", sink.to_owned())],
                head.saturating_sub(shipped) as i64,
            )
        }),
    )
}

/// Per-job series, labelled `backup_job`, present for every configured job.
fn encode_jobs(enc: &mut DescriptorEncoder, shared: &Shared) -> std::fmt::Result {
    let jobs = shared.jobs.snapshot();
    let label = |name: &JobName| vec![("backup_job", name.to_string())];
    let ts =
        |t: Option<chrono::DateTime<Utc>>| t.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
    let counter_family = |enc: &mut DescriptorEncoder,
                          name: &str,
                          help: &str,
                          value: &dyn Fn(&crate::state::JobState) -> u64| {
        let mut metric = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (job, state) in jobs.iter() {
            metric
                .encode_family(&label(job))?
                .encode_counter::<NoLabelSet, _, f64>(&value(state), None)?;
        }
        Ok::<(), std::fmt::Error>(())
    };
    counter_family(
        enc,
        "vigil_backup_runs",
        "Backup runs that started (skips excluded).",
        &|s| s.runs_total,
    )?;
    counter_family(
        enc,
        "vigil_backup_failures",
        "Backup runs that failed.",
        &|s| s.failures_total,
    )?;
    counter_family(
        enc,
        "vigil_prune_deleted_backups",
        "Backups deleted by retention.",
        &|s| s.prune.deleted_total,
    )?;
    counter_family(
        enc,
        "vigil_prune_freed_bytes",
        "Stored bytes freed by retention.",
        &|s| s.prune.freed_bytes_total,
    )?;
    gauges(
        enc,
        "vigil_prune_last_success_timestamp_seconds",
        "When retention last ran successfully (0: never).",
        jobs.iter()
            .map(|(j, s)| (label(j), ts(s.prune.last_success))),
    )?;
    gauges(
        enc,
        "vigil_backup_last_success_timestamp_seconds",
        "Finish time of the newest committed backup (0: none).",
        jobs.iter().map(|(j, s)| (label(j), ts(s.last_success))),
    )?;
    gauges(
        enc,
        "vigil_backup_max_age_seconds",
        "Freshness threshold (warn): max_age, or derived from the schedule; 0 before the job is armed.",
        jobs.iter().map(|(j, s)| {
            (
                label(j),
                s.freshness.map_or(0.0, |f| f.warn_after.as_secs_f64()),
            )
        }),
    )?;
    gauges(
        enc,
        "vigil_backup_consecutive_failures",
        "Failed runs since the last success.",
        jobs.iter()
            .map(|(j, s)| (label(j), f64::from(s.consecutive_failures))),
    )?;
    gauges(
        enc,
        "vigil_backup_last_duration_seconds",
        "Duration of the newest committed backup.",
        jobs.iter()
            .map(|(j, s)| (label(j), s.last_duration_seconds.unwrap_or(0.0))),
    )?;
    gauges(
        enc,
        "vigil_backup_last_stored_bytes",
        "Stored (compressed, encrypted) bytes of the newest backup.",
        jobs.iter()
            .map(|(j, s)| (label(j), s.last_stored_bytes.unwrap_or(0))),
    )?;
    gauges(
        enc,
        "vigil_backup_last_source_bytes",
        "Bytes pg_dump produced for the newest backup.",
        jobs.iter()
            .map(|(j, s)| (label(j), s.last_source_bytes.unwrap_or(0))),
    )?;
    gauges(
        enc,
        "vigil_backup_in_progress",
        "1 while a backup of the job runs.",
        jobs.iter()
            .map(|(j, s)| (label(j), i64::from(s.running.is_some()))),
    )?;
    gauges(
        enc,
        "vigil_backup_next_run_timestamp_seconds",
        "Next scheduled run.",
        jobs.iter().map(|(j, s)| (label(j), ts(s.next_run))),
    )?;
    gauges(
        enc,
        "vigil_backups",
        "Committed backups in the repository.",
        jobs.iter().map(|(j, s)| (label(j), s.backups)),
    )?;
    gauges(
        enc,
        "vigil_backup_damaged_manifests",
        "Backup directories whose manifest is unreadable or contradicts its path or the clock (not counted as backups).",
        jobs.iter().map(|(j, s)| (label(j), s.damaged.len() as u64)),
    )?;
    gauges(
        enc,
        "vigil_backup_oldest_timestamp_seconds",
        "Finish time of the oldest committed backup (0: none).",
        jobs.iter().map(|(j, s)| (label(j), ts(s.oldest))),
    )?;
    Ok(())
}

fn enc_build_info(enc: &mut DescriptorEncoder) -> std::fmt::Result {
    let labels: Labels = vec![("version", env!("CARGO_PKG_VERSION").to_owned())];
    enc.encode_descriptor("vigil_build", "Build information.", None, MetricType::Info)?
        .encode_info(&labels)
}

/// The classic exposition of `shared`'s metrics, for the families' unit tests.
#[cfg(test)]
pub(super) fn classic_text_for_tests(shared: std::sync::Arc<crate::state::Shared>) -> String {
    use http_body_util::BodyExt;
    let r = Metrics::new(shared, Default::default()).render(super::exposition::Format::Classic);
    let bytes = futures::executor::block_on(r.into_body().collect())
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::core::health::tests::state;
    use crate::state::StatusSnapshot;

    fn body(r: Response<Body>) -> String {
        let bytes = futures::executor::block_on(r.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// A ready daemon with one check and one job that has backed up and
    /// pruned, so every family vigil exports has samples.
    fn busy_shared() -> Arc<Shared> {
        let now = Utc::now();
        let shared = Shared::new("t".into(), None);
        shared.publish(StatusSnapshot {
            checks: vec![state("catalog:responseTime", Status::Warn, true, now)],
            published_at: Some(now),
            pool: Some(crate::state::PoolStats {
                max_size: 4,
                size: 2,
                available: 1,
                waiting: 0,
            }),
            ..Default::default()
        });
        shared.set_phase(Phase::Ready);
        shared.jobs.update("orders", |s| {
            s.runs_total = 2;
            s.failures_total = 1;
            s.last_success = Some(now);
            s.prune.deleted_total = 1;
        });
        shared
    }

    #[test]
    fn classic_text_names_every_family_by_its_samples() {
        let metrics = Metrics::new(busy_shared(), Default::default());
        let r = metrics.render(Format::Classic);
        assert_eq!(
            r.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(r.headers()["vary"], "Accept");
        let text = body(r);
        let mut typed = std::collections::HashMap::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(
                    ["counter", "gauge"].contains(&kind),
                    "{line}: 0.0.4 has no `{kind}` here"
                );
                assert!(
                    typed.insert(name.to_owned(), kind).is_none(),
                    "{name} twice"
                );
                current = name.to_owned();
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                assert!(!rest.contains('"'), "{line}");
            } else {
                assert!(!line.starts_with('#'), "{line}: not a 0.0.4 line");
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample outside its family: {line}");
            }
        }
        for (name, kind) in [
            ("vigil_build_info", "gauge"),
            ("vigil_backup_runs_total", "counter"),
            ("vigil_config_reload_failures_total", "counter"),
            ("process_cpu_seconds_total", "counter"),
            ("vigil_backup_last_success_timestamp_seconds", "gauge"),
            ("vigil_catalog_pool_connections", "gauge"),
        ] {
            assert_eq!(typed.get(name), Some(&kind), "{name} in\n{text}");
        }
        assert!(text.contains("vigil_backup_runs_total{backup_job=\"orders\"} 2\n"));
        assert!(!text.contains("_created"), "{text}");
    }

    #[test]
    fn renders_state_sets_and_no_job_label() {
        let now = Utc::now();
        let shared = Shared::new("t".into(), None);
        shared.publish(StatusSnapshot {
            checks: vec![state("catalog:responseTime", Status::Warn, true, now)],
            published_at: Some(now),
            ..Default::default()
        });
        shared.set_phase(Phase::Ready);
        let metrics = Metrics::new(Arc::clone(&shared), Default::default());
        let text = body(metrics.render(Format::OpenMetrics));
        assert!(text.contains("vigil_build_info{version=\""), "{text}");
        assert!(
            text.contains("vigil_health_status{status=\"warn\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("vigil_health_status{status=\"pass\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "vigil_health_check_status{check=\"catalog:responseTime\",status=\"warn\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("vigil_config_reload_failures_total 0"),
            "{text}"
        );
        assert!(text.contains("vigil_log_dropped_lines_total 0"), "{text}");
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        assert!(!text.contains("job="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
