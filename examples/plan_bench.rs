//! Times the retention planner over many backups (see bench/README.md).
//!
//!     cargo run --release --example plan_bench -- [COUNT]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use vigil::core::retention::{Candidate, JobFacts, RetentionPolicy, plan};

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let newest: DateTime<Utc> = "2026-11-23T02:30:00Z".parse().expect("valid time");
    // One backup an hour, newest first in time but shuffled in input order.
    let mut backups: Vec<Candidate> = (0..count)
        .map(|i| {
            let t = newest - chrono::Duration::hours(i as i64);
            Candidate {
                id: t.format("%Y%m%dT%H%M%SZ").to_string().into(),
                finished_at: t,
                stored_bytes: 1 << 20,
                pinned: i % 5000 == 0,
            }
        })
        .collect();
    backups.reverse();
    let policy = RetentionPolicy {
        keep_last: Some(10),
        keep_hourly: Some(48),
        keep_daily: Some(30),
        keep_weekly: Some(12),
        keep_monthly: Some(24),
        keep_yearly: Some(10),
        keep_within: Some(Duration::from_secs(3 * 86400)),
        ..RetentionPolicy::default()
    };
    let tz: chrono_tz::Tz = "Europe/Berlin".parse().expect("valid zone");
    let mut times = Vec::new();
    let mut kept = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let p = plan(&policy, &backups, tz, JobFacts::default(), newest);
        times.push(started.elapsed());
        kept = p.decisions.iter().filter(|d| d.keep).count();
    }
    times.sort();
    println!(
        "backups={count} kept={kept} plan_ms_median={:.1} plan_ms_min={:.1}",
        times[2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3
    );
}
