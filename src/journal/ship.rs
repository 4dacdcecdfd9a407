//! Projects the journal into the catalog's `audit_log` and, optionally,
//! Loki: from a cursor, idempotently (`(journal, seq)` is unique), so a
//! catalog outage only delays rows and a restart never doubles them.
//! Segments past `journal.retention` are removed only once shipped.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Pool, PoolError};
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::handle::Journal;
use super::tail::{Tail, segment_first_seqs};
use crate::core::journal_record::Record;

const BATCH: usize = 500;
const IDLE_POLL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Retention looks at the segments this often, not at every idle poll.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Why shipping to the catalog (or reading its pin) failed; the shippers
/// retry every one of them, so the kinds only shape the message.
#[derive(Debug, Error)]
pub enum ShipError {
    /// No catalog connection from the pool.
    #[error("{}", crate::catalog::describe(.0))]
    Connect(#[source] PoolError),
    /// A statement on the catalog failed (the server's cause included).
    #[error("{}", crate::core::redact::error_chain(.0))]
    Query(#[source] tokio_postgres::Error),
    /// The pin insert went through, yet no pin row reads back.
    #[error("the catalog kept no journal pin for instance `{instance}`")]
    NoPin { instance: String },
    /// The journal files could not be read from the catalog's cursor on.
    #[error("{0}")]
    Read(#[source] std::io::Error),
}

/// The highest `seq` of this journal the catalog holds.
pub async fn catalog_cursor(pool: &Pool, journal: &str) -> Result<u64, ShipError> {
    let client = pool.get().await.map_err(ShipError::Connect)?;
    let row = client
        .query_one(
            "SELECT coalesce(max(seq), 0) FROM vigil.audit_log WHERE journal = $1::text::uuid",
            &[&journal],
        )
        .await
        .map_err(ShipError::Query)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Pins `journal` as `instance`'s journal unless a pin exists; returns the
/// pinned id (another one means this journal replaced the pinned one).
pub async fn pin(pool: &Pool, instance: &str, journal: &str) -> Result<String, ShipError> {
    let client = pool.get().await.map_err(ShipError::Connect)?;
    client
        .execute(
            "INSERT INTO vigil.journal_pin (instance, journal) VALUES ($1, $2::text::uuid) \
             ON CONFLICT (instance) DO NOTHING",
            &[&instance, &journal],
        )
        .await
        .map_err(ShipError::Query)?;
    pinned(&client, instance)
        .await?
        .ok_or_else(|| ShipError::NoPin {
            instance: instance.to_owned(),
        })
}

/// The journal id the catalog pins for `instance`, if any.
pub async fn pinned(
    client: &deadpool_postgres::Client,
    instance: &str,
) -> Result<Option<String>, ShipError> {
    let row = client
        .query_opt(
            "SELECT journal::text FROM vigil.journal_pin WHERE instance = $1",
            &[&instance],
        )
        .await
        .map_err(ShipError::Query)?;
    Ok(row.map(|r| r.get::<_, String>(0)))
}

/// Pins the journal once per shipper; a pin naming another journal is
/// logged as an error every time the shipper starts (verify fails on it).
async fn ensure_pin(pool: &Pool, instance: &str, journal: &str) -> Result<(), ShipError> {
    let pinned = pin(pool, instance, journal).await?;
    if pinned != journal {
        tracing::error!(
            instance,
            pinned = %pinned,
            journal,
            "the catalog pins this instance to another audit journal: this journal replaced it; `vigil audit verify` fails until an operator removes the old pin (DELETE FROM vigil.journal_pin WHERE instance = ...)"
        );
    }
    Ok(())
}

/// Ships everything durable that the catalog lacks, once; the count shipped.
/// Used at shutdown so the last records (`daemon.stopping`) reach the catalog.
pub async fn ship_pending(journal: &Journal, pool: &Pool) -> Result<u64, ShipError> {
    let cursor = catalog_cursor(pool, journal.id()).await?;
    let mut tail = Tail::after(journal.dir(), cursor).map_err(ShipError::Read)?;
    let durable = journal.stats().head_seq.load(Ordering::Relaxed);
    let mut shipped = 0;
    loop {
        let batch = tail.read_upto(BATCH, durable).map_err(ShipError::Read)?;
        let Some((last, _)) = batch.last() else {
            return Ok(shipped);
        };
        let last = last.seq;
        insert(pool, &batch).await?;
        shipped += batch.len() as u64;
        journal
            .stats()
            .shipped_catalog
            .store(last, Ordering::Relaxed);
    }
}

/// Inserts records (with their exact lines); existing ones are left alone.
pub async fn insert(pool: &Pool, batch: &[(Record, String)]) -> Result<u64, ShipError> {
    let mut cols: [Vec<Option<String>>; 13] = Default::default();
    let mut seqs = Vec::with_capacity(batch.len());
    let mut stamps = Vec::with_capacity(batch.len());
    for (r, _) in batch {
        seqs.push(r.seq as i64);
        stamps.push(r.ts);
        let field = |k: &str| r.data.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let ip = field("ip").filter(|ip| ip.parse::<std::net::IpAddr>().is_ok());
        let (resource_type, resource_id) = match field("job") {
            Some(job) => (Some("job".to_owned()), Some(job)),
            None => (None, None),
        };
        let values = [
            Some(r.journal.clone()),
            Some(format!("{}:{}", r.actor.kind, r.actor.name)),
            r.actor.role.clone(),
            Some(r.event.clone()),
            r.request_id.clone(),
            ip,
            field("user_agent"),
            resource_type,
            resource_id,
            Some(r.data.to_string()),
            r.data.get("diff").map(|d| d.to_string()),
            Some(r.prev.clone()),
            Some(r.hash.clone()),
        ];
        for (col, v) in cols.iter_mut().zip(values) {
            col.push(v);
        }
    }
    let lines: Vec<&str> = batch.iter().map(|(_, l)| l.as_str()).collect();
    let client = pool.get().await.map_err(ShipError::Connect)?;
    let [
        journal,
        actor,
        role,
        action,
        request_id,
        ip,
        agent,
        rtype,
        rid,
        data,
        diff,
        prev,
        hash,
    ] = &cols;
    client
        .execute(
            "INSERT INTO vigil.audit_log (journal, seq, ts, actor, role, action, request_id, ip, \
             user_agent, resource_type, resource_id, new_values, diff, prev_hash, hash, record) \
             SELECT j::uuid, s, t, a, r, e, q, i::inet, u, rt, ri, d::jsonb, df::jsonb, p, h, rec \
             FROM unnest($1::text[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::text[], $13::text[], $14::text[], $15::text[], $16::text[]) \
             AS x(j, s, t, a, r, e, q, i, u, rt, ri, d, df, p, h, rec) \
             ON CONFLICT (journal, seq) DO NOTHING",
            &[
                journal, &seqs, &stamps, actor, role, action, request_id, ip, agent, rtype, rid,
                data, diff, prev, hash, &lines,
            ],
        )
        .await
        .map_err(ShipError::Query)
}

/// The catalog shipper's loop until `cancel`.
pub async fn ship_to_catalog(
    journal: Journal,
    pool: Pool,
    instance: String,
    retention: Duration,
    cancel: CancellationToken,
) {
    let mut pinned = false;
    let mut heads = journal.heads();
    let mut backoff = Duration::from_secs(1);
    let mut failing = false;
    let stats = std::sync::Arc::clone(journal.stats());
    let mut retention_due = std::time::Instant::now();
    'outer: while !cancel.is_cancelled() {
        let cursor = match catalog_cursor(&pool, journal.id()).await {
            Ok(c) => c,
            Err(e) => {
                if catalog_retry(&e, &mut failing, &mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
        };
        if !pinned {
            if let Err(e) = ensure_pin(&pool, &instance, journal.id()).await {
                if catalog_retry(&e, &mut failing, &mut backoff, &cancel).await {
                    return;
                }
                continue;
            }
            pinned = true;
        }
        stats.shipped_catalog.store(cursor, Ordering::Relaxed);
        let mut tail = match Tail::after(journal.dir(), cursor) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit journal to ship it");
                if sleep_or_cancel(backoff, &cancel).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let durable = stats.head_seq.load(Ordering::Relaxed);
            let batch = match tail.read_upto(BATCH, durable) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the audit journal to ship it");
                    if sleep_or_cancel(MAX_BACKOFF, &cancel).await {
                        return;
                    }
                    continue 'outer;
                }
            };
            if batch.is_empty() {
                if std::time::Instant::now() >= retention_due {
                    retention_due = std::time::Instant::now() + RETENTION_EVERY;
                    // Retention waits for the slowest sink.
                    let mut shipped = stats.shipped_catalog.load(Ordering::Relaxed);
                    if stats.loki_enabled.load(Ordering::Relaxed) {
                        shipped = shipped.min(stats.shipped_loki.load(Ordering::Relaxed));
                    }
                    let dir = journal.dir().to_owned();
                    let _ = tokio::task::spawn_blocking(move || {
                        remove_expired(&dir, shipped, retention)
                    })
                    .await;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = heads.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
                continue;
            }
            match insert(&pool, &batch).await {
                Ok(_) => {
                    if failing {
                        tracing::info!("shipping the audit journal to the catalog again");
                        failing = false;
                    }
                    backoff = Duration::from_secs(1);
                    if let Some((last, _)) = batch.last() {
                        stats.shipped_catalog.store(last.seq, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    if catalog_retry(&e, &mut failing, &mut backoff, &cancel).await {
                        return;
                    }
                    continue 'outer;
                }
            }
        }
    }
}

/// Removes closed segments older than `retention` whose records are all
/// in the catalog. The newest segment is never removed.
pub fn remove_expired(dir: &Path, shipped: u64, retention: Duration) {
    let Ok(segments) = segment_first_seqs(dir) else {
        return;
    };
    for pair in segments.windows(2) {
        let ((_, path, _), (_, _, next_first)) = (&pair[0], &pair[1]);
        let all_shipped = next_first.is_some_and(|f| f.saturating_sub(1) <= shipped);
        let old = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > retention);
        if all_shipped && old {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(segment = %path.display(), "journal segment past retention removed (it is in the catalog)")
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot remove an expired journal segment")
                }
            }
        }
    }
}

/// Loki's push API, from a cursor kept in `<journal dir>/loki.cursor`.
pub async fn ship_to_loki(
    journal: Journal,
    base_url: String,
    labels: std::collections::BTreeMap<String, String>,
    cancel: CancellationToken,
) {
    let url = format!("{}/loki/api/v1/push", base_url.trim_end_matches('/'));
    let cursor_path: PathBuf = journal.dir().join("loki.cursor");
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Loki client; not shipping to Loki");
            return;
        }
    };
    let stats = std::sync::Arc::clone(journal.stats());
    stats.loki_enabled.store(true, Ordering::Relaxed);
    let mut heads = journal.heads();
    let mut backoff = Duration::from_secs(1);
    // A first start ships from the current head: Loki refuses old entries
    // (`reject_old_samples`), and the catalog holds the history.
    let cursor = std::fs::read_to_string(&cursor_path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| journal.head().map_or(0, |h| h.seq));
    stats.shipped_loki.store(cursor, Ordering::Relaxed);
    let mut tail = loop {
        match Tail::after(journal.dir(), cursor) {
            Ok(t) => break t,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the audit journal for Loki");
                if sleep_or_cancel(MAX_BACKOFF, &cancel).await {
                    return;
                }
            }
        }
    };
    let mut batch = Vec::new();
    while !cancel.is_cancelled() {
        if batch.is_empty() {
            let durable = stats.head_seq.load(Ordering::Relaxed);
            batch = tail.read_upto(BATCH, durable).unwrap_or_default();
        }
        if batch.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = heads.changed() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        let mut stream = labels.clone();
        stream.entry("job".into()).or_insert_with(|| "vigil".into());
        let values: Vec<[String; 2]> = batch
            .iter()
            .map(|(r, line)| {
                let ns = r.ts.timestamp_nanos_opt().unwrap_or_default();
                [ns.to_string(), line.clone()]
            })
            .collect();
        let body = serde_json::json!({ "streams": [{ "stream": stream, "values": values }] });
        let sent = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match sent.map(|r| r.status()) {
            // Anything but 429 in 4xx will not succeed on retry (too old,
            // too large, bad labels): log it and move on, or shipping stops for good.
            Ok(status)
                if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                let (first, last) = (batch[0].0.seq, batch[batch.len() - 1].0.seq);
                tracing::error!(%status, first, last, "Loki refused these journal records; skipped (they stay in the journal and the catalog)");
                stats.shipped_loki.store(last, Ordering::Relaxed);
                let _ = std::fs::write(&cursor_path, format!("{last}\n"));
                batch.clear();
            }
            Ok(status) if status.is_success() => {
                let last = batch.last().map_or(0, |(r, _)| r.seq);
                stats.shipped_loki.store(last, Ordering::Relaxed);
                let _ = std::fs::write(&cursor_path, format!("{last}\n"));
                batch.clear();
                backoff = Duration::from_secs(1);
            }
            outcome => {
                let why = match outcome {
                    Ok(status) => format!("Loki answered {status}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(error = %why, retry_in = ?backoff, "cannot push the audit journal to Loki; retrying");
                if sleep_or_cancel(backoff, &cancel).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Logs the first of a run of catalog failures and backs off; true when cancelled.
async fn catalog_retry(
    error: &ShipError,
    failing: &mut bool,
    backoff: &mut Duration,
    cancel: &CancellationToken,
) -> bool {
    if !*failing {
        tracing::warn!(%error, "cannot ship the audit journal to the catalog; retrying (nothing is lost: it ships from the journal files)");
        *failing = true;
    }
    if sleep_or_cancel(*backoff, cancel).await {
        return true;
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    false
}

/// True when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{CatalogConfig, Secret};

    #[tokio::test]
    async fn a_catalog_that_refuses_connections_is_a_connect_error_with_the_cause() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let config = CatalogConfig {
            url: Secret::new("postgres://vigil@127.0.0.1:1/vigil"),
            password: None,
            password_file: None,
            pool_size: 1,
            connect_timeout: Duration::from_secs(5),
            query_timeout: Duration::from_secs(5),
        };
        let pool = crate::catalog::pool(&config).unwrap();
        let e = catalog_cursor(&pool, "00000000-0000-0000-0000-000000000001")
            .await
            .unwrap_err();
        assert!(matches!(e, ShipError::Connect(_)), "{e:?}");
        assert!(e.to_string().to_lowercase().contains("refused"), "{e}");
    }
}
