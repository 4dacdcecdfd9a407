//! The jobs table: one row per job, from the job board and the job's
//! checks (no I/O).

use chrono::{DateTime, Utc};

use super::html::{Html, age};
use super::render::View;
use crate::core::health::Status;
use crate::core::proofs::{DrillRecord, VerifyRecord};
use crate::core::units::{compact_duration, human_bytes};
use crate::state::{JobState, WalState};

pub(super) fn table(h: &mut Html, view: &View) {
    h.raw("<section id=\"jobs\"><h2>Jobs</h2>");
    if view.jobs.is_empty() {
        h.raw("<p class=\"empty\">No job is configured.</p></section>");
        return;
    }
    h.raw("<table class=\"cards\"><thead><tr><th>Job</th><th>State</th><th>Newest good backup</th><th>Size</th><th>Next run</th><th>Last verify</th><th>Last drill</th><th>Recovery window</th></tr></thead><tbody>");
    for (name, state) in view.jobs.iter() {
        row(h, view, std::borrow::Borrow::<str>::borrow(name), state);
    }
    h.raw("</tbody></table></section>");
}

/// The worst status of the job's critical checks, if any has reported.
pub(super) fn job_status(view: &View, job: &str) -> Option<Status> {
    view.checks
        .iter()
        .filter(|c| c.spec.critical && c.spec.component_id == job)
        .map(|c| c.status_at(view.now))
        .max()
}

fn row(h: &mut Html, view: &View, name: &str, state: &JobState) {
    let now = view.now;
    let status = job_status(view, name).unwrap_or(Status::Warn);
    h.raw("<tr class=\"job ")
        .raw(status.as_str())
        .raw("\" data-job=\"")
        .text(name)
        .raw("\" data-state=\"")
        .raw(status.as_str())
        .raw("\">");
    h.cell("Job", |h| {
        h.raw("<b>").text(name).raw("</b>");
        if let Some(running) = &state.running {
            let read = state.running_bytes().map(human_bytes).unwrap_or_default();
            h.note(&format!(
                "{} running for {}, {read} read",
                running.trigger,
                age(now, running.started_at)
            ));
        }
    });
    h.cell("State", |h| {
        h.badge(status.as_str(), status.as_str());
        match state.consecutive_failures {
            0 => {}
            1 => {
                h.raw("<small class=\"bad\">last run failed</small>");
            }
            n => {
                h.raw("<small class=\"bad\">")
                    .text(&format!("{n} runs failed in a row"))
                    .raw("</small>");
            }
        }
    });
    h.cell("Newest good backup", |h| newest(h, state, now));
    h.cell("Size", |h| size(h, state));
    h.cell("Next run", |h| next_run(h, state.next_run, now));
    h.cell("Last verify", |h| verify(h, state.verify.as_ref(), now));
    h.cell("Last drill", |h| drill(h, state.drill.as_ref(), now));
    h.cell("Recovery window", |h| window(h, state.wal.as_ref(), now));
    h.raw("</tr>");
}

fn never(h: &mut Html) {
    h.raw("<span class=\"badge never\">never</span>");
}

/// The newest good backup and its age against the freshness thresholds.
fn newest(h: &mut Html, state: &JobState, now: DateTime<Utc>) {
    let Some(at) = state.last_success else {
        h.raw("<span class=\"bad\">none yet</span>");
        if let Some(due) = state.first_due {
            h.raw("<small>first run due ").time(due).raw("</small>");
        }
        return;
    };
    let elapsed = (now - at).to_std().unwrap_or_default();
    let class = match state.freshness {
        Some(f) if elapsed >= f.fail_after => "stale",
        Some(f) if elapsed >= f.warn_after => "old",
        _ => "fresh",
    };
    h.time(at)
        .raw("<span class=\"age ")
        .raw(class)
        .raw("\">")
        .text(&format!("{} old", compact_duration(elapsed)))
        .raw("</span>");
    if let Some(f) = state.freshness {
        h.note(&format!(
            "warns at {}, fails at {}",
            compact_duration(f.warn_after),
            compact_duration(f.fail_after)
        ));
    }
}

fn size(h: &mut Html, state: &JobState) {
    match state.last_stored_bytes {
        Some(stored) => {
            h.text(&human_bytes(stored));
            if let Some(source) = state.last_source_bytes {
                h.note(&format!("from {} of source", human_bytes(source)));
            }
        }
        None => {
            h.raw("—");
        }
    }
    if state.backups > 0 {
        let plural = if state.backups == 1 { "" } else { "s" };
        h.note(&format!("{} backup{plural} kept", state.backups));
    }
}

fn next_run(h: &mut Html, next: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    match next {
        Some(t) if t > now => {
            h.time(t).note(&format!("in {}", age(t, now)));
        }
        Some(t) => {
            h.time(t).note("due now");
        }
        None => {
            h.raw("<span class=\"muted\">not scheduled</span>");
        }
    }
}

/// Verdict, age and unresolved bad objects of the last verification.
fn verify(h: &mut Html, record: Option<&VerifyRecord>, now: DateTime<Utc>) {
    let Some((record, run)) = record.and_then(|r| r.last_run.as_ref().map(|run| (r, run))) else {
        return never(h);
    };
    let bad = record.bad.len();
    match (run.ok, bad) {
        (true, 0) => h.badge("pass", "ok"),
        (true, _) => h.badge("fail", "bad objects"),
        (false, _) => h.badge("fail", "failed"),
    };
    h.raw(" ")
        .text(&format!("{} ago", age(now, run.finished_at)));
    if bad > 0 {
        let plural = if bad == 1 { "" } else { "s" };
        h.raw("<small class=\"bad\">")
            .text(&format!("{bad} bad object{plural}"))
            .raw("</small>");
    }
    if let Some(error) = &run.error {
        h.raw("<small class=\"bad\">").text(error).raw("</small>");
    }
    // A budgeted run with nothing due reads nothing: say what is covered.
    if run.objects == 0 {
        h.note(&format!(
            "{} object(s) read back good, none due",
            record.verified.len()
        ));
    } else {
        h.note(&format!(
            "{} objects, {} read",
            run.objects,
            human_bytes(run.bytes_read)
        ));
    }
    if !run.ok
        && let Some(good) = record.last_success
    {
        h.note(&format!("last clean run {} ago", age(now, good)));
    }
}

/// Verdict, RTO and age of the last restore drill.
fn drill(h: &mut Html, record: Option<&DrillRecord>, now: DateTime<Utc>) {
    let Some((record, run)) = record.and_then(|r| r.last_run.as_ref().map(|run| (r, run))) else {
        return never(h);
    };
    if run.ok {
        h.badge("pass", "ok");
    } else {
        h.badge("fail", "failed");
    }
    h.raw(" ")
        .text(&format!("{} ago", age(now, run.finished_at)));
    if let Some(rto) = run.rto_seconds {
        h.note(&format!(
            "RTO {}",
            compact_duration(std::time::Duration::from_secs_f64(rto.max(0.0)))
        ));
    }
    if let Some(query) = &run.failed_query {
        h.raw("<small class=\"bad\">check failed: <code>")
            .text(query)
            .raw("</code></small>");
    }
    if let Some(error) = &run.error {
        h.raw("<small class=\"bad\">").text(error).raw("</small>");
    }
    if !run.ok
        && let Some(good) = &record.last_success
    {
        h.note(&format!(
            "last good drill {} ago",
            age(now, good.finished_at)
        ));
    }
}

/// Physical jobs: the span a point-in-time restore can reach.
fn window(h: &mut Html, wal: Option<&WalState>, now: DateTime<Utc>) {
    let Some(wal) = wal else {
        h.raw("—");
        return;
    };
    match &wal.window {
        Some(w) => {
            h.time(w.start).raw(" → ").time(w.end).note(&format!(
                "{} restorable",
                compact_duration((w.end - w.start).to_std().unwrap_or_default())
            ));
        }
        None => {
            h.raw("<span class=\"bad\">none: no base backup with a complete WAL chain</span>");
        }
    }
    if wal.gaps > 0 {
        h.raw("<small class=\"bad\">")
            .text(&format!("{} gap(s) in the WAL chain", wal.gaps))
            .raw("</small>");
    }
    if let Some(last) = wal.last_archived {
        h.note(&format!("last WAL archived {} ago", age(now, last)));
    }
}
