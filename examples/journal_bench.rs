//! Audit journal throughput: appends per second with group commit
//! (`emit`, synced every `sync_interval`) and with a sync per event
//! (`commit`, as destructive actions use), and the catalog shipper's
//! insert rate into a throwaway PostgreSQL cluster. See bench/README.md.
//!
//!   cargo run --release --example journal_bench [-- EVENTS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil::core::journal_record::{Actor, Entry};
use vigil::journal::{Journal, JournalOptions, ship, tail::Tail};

fn options(dir: &std::path::Path) -> JournalOptions {
    JournalOptions {
        dir: dir.to_owned(),
        sync_interval: Duration::from_secs(1),
        segment_max_bytes: 64 * 1024 * 1024,
        segment_max_age: Duration::from_secs(86_400),
        queue_capacity: 10_000,
        checkpoint_interval: None,
        actor: Actor::daemon(),
        signer: None,
    }
}

/// A typical event: an API call's metadata.
fn event(i: usize) -> Entry {
    Entry::at(
        chrono::Utc::now(),
        "api.request",
        Actor::token("grafana", "viewer"),
        serde_json::json!({
            "method": "GET", "path": "/api/v1/jobs", "permission": "jobs:read",
            "outcome": "allowed", "status": 200, "ip": "10.1.2.3",
            "user_agent": "Grafana/11.2", "n": i,
        }),
    )
    .with_request_id(Some(format!("req-{i}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;

    // Group commit: emit never waits; the writer batches what is queued.
    let journal = Journal::open(options(dir.path()), Arc::default())?;
    let started = Instant::now();
    for i in 0..events {
        // A full queue counts a loss; wait instead, to measure the writer.
        while journal
            .stats()
            .held
            .load(std::sync::atomic::Ordering::Relaxed)
            > 9_000
        {
            tokio::task::yield_now().await;
        }
        journal.emit(event(i));
        if i % 5_000 == 4_999 {
            journal.flush().await;
        }
    }
    journal.flush().await;
    let grouped = started.elapsed();
    let lost = journal
        .stats()
        .dropped
        .load(std::sync::atomic::Ordering::Relaxed);
    journal.close().await;
    let bytes: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "append, group commit:   {events} events in {:.3} s = {:.0} events/s ({:.0} bytes/event, {lost} lost)",
        grouped.as_secs_f64(),
        events as f64 / grouped.as_secs_f64(),
        bytes as f64 / events as f64
    );

    // One fdatasync per event, each caller waiting for it.
    let synced_events = (events / 20).clamp(200, 5_000);
    let sync_dir = tempfile::tempdir()?;
    let journal = Journal::open(options(sync_dir.path()), Arc::default())?;
    let started = Instant::now();
    for i in 0..synced_events {
        journal.commit(event(i)).await?;
    }
    let synced = started.elapsed();
    journal.close().await;
    println!(
        "append, sync per event: {synced_events} events in {:.3} s = {:.0} events/s ({:.2} ms each)",
        synced.as_secs_f64(),
        synced_events as f64 / synced.as_secs_f64(),
        synced.as_secs_f64() * 1000.0 / synced_events as f64
    );

    // The floor: the same number of same-size lines, one `write` each on an
    // O_APPEND file, with no chain, no JSON, no lock (and with fdatasync each).
    let line = vec![b'x'; (bytes as usize / events).max(1)];
    let raw = |n: usize, sync: bool| -> anyhow::Result<Duration> {
        use std::io::Write;
        let path = dir.path().join(format!("raw-{sync}"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let started = Instant::now();
        for _ in 0..n {
            file.write_all(&line)?;
            if sync {
                file.sync_data()?;
            }
        }
        Ok(started.elapsed())
    };
    let raw_grouped = raw(events, false)?;
    let raw_synced = raw(synced_events, true)?;
    println!(
        "raw write, no sync:     {:.0} lines/s -> journal/raw = {:.2}",
        events as f64 / raw_grouped.as_secs_f64(),
        raw_grouped.as_secs_f64() / grouped.as_secs_f64()
    );
    println!(
        "raw write + fdatasync:  {:.0} lines/s -> journal/raw = {:.2}",
        synced_events as f64 / raw_synced.as_secs_f64(),
        raw_synced.as_secs_f64() / synced.as_secs_f64()
    );

    // Shipping the group-commit journal into a fresh catalog.
    let bins = vigil::cli::pgcluster::PgBinaries::discover()?;
    let pg = tempfile::tempdir()?;
    let mut cluster =
        vigil::cli::pgcluster::Cluster::create(&bins, &pg.path().join("pg"), "bench")?;
    cluster.start()?;
    cluster.psql("postgres", "CREATE DATABASE catalog")?;
    let config: vigil::config::CatalogConfig = toml::from_str(&format!(
        "url = \"{}\"\npassword = \"bench\"\n",
        cluster.url("catalog")
    ))?;
    let pool = vigil::catalog::pool(&config)?;
    vigil::catalog::migrate(&pool).await?;
    let mut tail = Tail::after(dir.path(), 0)?;
    let started = Instant::now();
    let mut shipped = 0;
    loop {
        let batch = tail.read(500)?;
        if batch.is_empty() {
            break;
        }
        shipped += batch.len();
        ship::insert(&pool, &batch)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    let shipping = started.elapsed();
    println!(
        "ship to catalog:        {shipped} records in {:.3} s = {:.0} records/s (batches of 500)",
        shipping.as_secs_f64(),
        shipped as f64 / shipping.as_secs_f64()
    );
    drop(pool);
    cluster.destroy();
    Ok(())
}
