//! `/`: the status page for the person on call: one row per job, failing
//! checks first with their output, recent runs and audit events, the
//! instance and version. Plain HTML and CSS from the binary (no script, no
//! external asset), refreshing itself, readable on a phone. Read from the
//! snapshot, the job board and the journal's in-memory ring only: no I/O.

mod html;
mod jobs;
mod render;
mod style;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use hyper::{Response, StatusCode};

use super::response::{Body, respond};
use crate::core::health::Status;
use crate::state::{Phase, Shared, StatusSnapshot};

/// The page; `secrets` are the config's secret values, masked wherever
/// they would appear (outputs are redacted already; this is the belt).
pub fn render(
    shared: &Shared,
    snapshot: &StatusSnapshot,
    now: DateTime<Utc>,
    secrets: &[String],
) -> Response<Body> {
    let overall = match (shared.phase(), snapshot.published_at) {
        (Phase::Ready, Some(_)) => snapshot.overall(now),
        _ => Status::Fail,
    };
    let jobs = shared.jobs.snapshot();
    let runs = shared.jobs.runs.list();
    let events = shared.audit.recent.list();
    let view = render::View {
        service: &shared.service_id,
        version: env!("CARGO_PKG_VERSION"),
        phase: shared.phase(),
        overall,
        now,
        started_at: shared.started_at,
        checks: &snapshot.checks,
        jobs: &jobs,
        runs: &runs,
        events: &events,
        secrets,
    };
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        render::page(&view),
    )
}
