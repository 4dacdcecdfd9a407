//! The page as a pure function of what the daemon knows ([`View`]):
//! header, failing checks first with their output, the jobs, recent runs
//! and audit events, the passing checks, the footer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::html::{Html, age};
use super::style::CSS;
use crate::core::health::{CheckState, Status};
use crate::core::ids::JobName;
use crate::core::units::{compact_duration, human_bytes};
use crate::journal::RecentEvent;
use crate::state::{JobState, Phase, RecentRun};

/// Seconds between the page's own reloads.
pub(super) const REFRESH_SECONDS: u32 = 30;

/// Everything the page shows, read from memory by the handler.
pub(super) struct View<'a> {
    pub service: &'a str,
    pub version: &'a str,
    pub phase: Phase,
    pub overall: Status,
    pub now: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// Sorted by key.
    pub checks: &'a [CheckState],
    pub jobs: &'a BTreeMap<JobName, JobState>,
    /// Newest first.
    pub runs: &'a [RecentRun],
    /// Newest first.
    pub events: &'a [RecentEvent],
    /// The config's secret values, masked wherever they appear.
    pub secrets: &'a [String],
}

pub(super) fn page(view: &View) -> String {
    let mut h = Html::new(view.secrets);
    head(&mut h, view);
    failing_checks(&mut h, view);
    super::jobs::table(&mut h, view);
    runs(&mut h, view);
    events(&mut h, view);
    passing_checks(&mut h, view);
    footer(&mut h, view);
    h.finish()
}

fn head(h: &mut Html, view: &View) {
    let status = view.overall.as_str();
    h.raw("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta http-equiv=\"refresh\" content=\"")
        .text(&REFRESH_SECONDS.to_string())
        .raw("\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>")
        .raw(status)
        .raw(" · vigil on ")
        .text(view.service)
        .raw("</title><style>")
        .raw(CSS)
        .raw("</style></head>\n<body>\n<header class=\"top ")
        .raw(status)
        .raw("\" id=\"overall\" data-status=\"")
        .raw(status)
        .raw("\"><h1>vigil <span class=\"svc\">on ")
        .text(view.service)
        .raw("</span></h1>")
        .badge(status, status)
        .raw("<p class=\"meta\">");
    if view.phase != Phase::Ready {
        h.raw("<b>")
            .raw(view.phase.as_str())
            .raw("</b>: health fails until start-up is done · ");
    }
    h.text(&format!(
        "version {} · up {} · as of ",
        view.version,
        age(view.now, view.started_at)
    ))
    .text(&view.now.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    .text(&format!(" · refreshes every {REFRESH_SECONDS} s"))
    .raw("</p></header>\n");
}

/// Checks as served at `now`, worst first, then by key.
fn by_status<'a>(view: &View<'a>) -> Vec<(&'a CheckState, Status, Option<String>)> {
    let mut checks: Vec<_> = view
        .checks
        .iter()
        .map(|c| {
            let (status, output) = c.effective(view.now);
            (c, status, output)
        })
        .collect();
    checks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.spec.key.cmp(&b.0.spec.key)));
    checks
}

fn failing_checks(h: &mut Html, view: &View) {
    let all = by_status(view);
    let failing: Vec<_> = all.iter().filter(|c| c.1 != Status::Pass).collect();
    h.raw("<section id=\"attention\"><h2>Failing checks</h2>");
    if view.checks.is_empty() {
        h.raw("<p class=\"empty\">No check has reported yet.</p></section>\n");
        return;
    }
    if failing.is_empty() {
        h.raw("<p class=\"allgood\">")
            .text(&format!("All {} checks pass.", all.len()))
            .raw("</p></section>\n");
        return;
    }
    checks_table(h, view, failing.into_iter());
    h.raw("</section>\n");
}

fn passing_checks(h: &mut Html, view: &View) {
    let all = by_status(view);
    let passing: Vec<_> = all.iter().filter(|c| c.1 == Status::Pass).collect();
    if passing.is_empty() {
        return;
    }
    h.raw("<details id=\"passing\"><summary>")
        .text(&format!("Passing checks ({})", passing.len()))
        .raw("</summary>");
    checks_table(h, view, passing.into_iter());
    h.raw("</details>\n");
}

fn checks_table<'c>(
    h: &mut Html,
    view: &View,
    checks: impl Iterator<Item = &'c (&'c CheckState, Status, Option<String>)>,
) {
    h.raw("<table class=\"cards\"><thead><tr><th>Check</th><th>Status</th><th>Since</th><th>Output</th></tr></thead><tbody>");
    for (check, status, output) in checks {
        h.raw("<tr class=\"check ")
            .raw(status.as_str())
            .raw("\" data-check=\"")
            .text(&check.spec.key)
            .raw("\">");
        h.cell("Check", |h| {
            h.raw("<b>").text(&check.spec.key).raw("</b>");
            if !check.spec.critical {
                h.raw(" <small>(informational)</small>");
            }
        });
        h.cell("Status", |h| {
            h.badge(status.as_str(), status.as_str());
        });
        h.cell("Since", |h| {
            h.time(check.changed_at)
                .note(&format!("{} ago", age(view.now, check.changed_at)));
        });
        h.cell("Output", |h| {
            h.raw("<pre class=\"out\">")
                .text(output.as_deref().unwrap_or(""))
                .raw("</pre>");
        });
        h.raw("</tr>");
    }
    h.raw("</tbody></table>");
}

fn run_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "pass",
        "skipped" => "warn",
        _ => "fail",
    }
}

fn runs(h: &mut Html, view: &View) {
    h.raw("<section id=\"runs\"><h2>Recent runs</h2>");
    if view.runs.is_empty() {
        h.raw("<p class=\"empty\">No run has finished since vigil started.</p></section>\n");
        return;
    }
    h.raw("<table class=\"cards\"><thead><tr><th>Finished</th><th>Job</th><th>Run</th><th>Status</th><th>Took</th><th>Result</th></tr></thead><tbody>");
    for run in view.runs {
        let class = run_class(run.status);
        h.raw("<tr class=\"run ").raw(class).raw("\">");
        h.cell("Finished", |h| {
            h.time(run.finished_at)
                .note(&format!("{} ago", age(view.now, run.finished_at)));
        });
        h.cell("Job", |h| {
            h.text(&run.job);
        });
        h.cell("Run", |h| {
            h.text(&format!("{} ({})", run.kind, run.trigger));
        });
        h.cell("Status", |h| {
            h.raw("<span class=\"badge ")
                .raw(class)
                .raw("\">")
                .text(run.status)
                .raw("</span>");
        });
        h.cell("Took", |h| {
            match run.started_at {
                Some(start) => h.text(&compact_duration(
                    (run.finished_at - start).to_std().unwrap_or_default(),
                )),
                None => h.raw("—"),
            };
        });
        h.cell("Result", |h| run_result(h, run));
        h.raw("</tr>");
    }
    h.raw("</tbody></table></section>\n");
}

fn run_result(h: &mut Html, run: &RecentRun) {
    if let Some(id) = &run.backup_id {
        h.raw("<code>").text(id).raw("</code>");
    }
    // A verification's bytes are what it read back, not what it stored.
    match (run.kind, run.stored_bytes) {
        ("verify", Some(0)) => h.note("nothing due for re-reading"),
        ("verify", Some(bytes)) => h.note(&format!("{} read back", human_bytes(bytes))),
        (_, Some(bytes)) => h.note(&format!("{} stored", human_bytes(bytes))),
        (_, None) => h,
    };
    if let Some(error) = &run.error {
        h.raw("<pre class=\"out\">").text(error).raw("</pre>");
    }
}

fn event_class(event: &str) -> &'static str {
    if event.ends_with(".failed") || event.ends_with("_failed") || event.ends_with("unwritable") {
        "fail"
    } else if event.ends_with(".gap") || event.ends_with(".stale") {
        "warn"
    } else {
        "pass"
    }
}

fn events(h: &mut Html, view: &View) {
    h.raw("<section id=\"events\"><h2>Recent audit events</h2>");
    if view.events.is_empty() {
        h.raw("<p class=\"empty\">Nothing journalled since vigil started.</p></section>\n");
        return;
    }
    h.raw("<table class=\"cards\"><thead><tr><th>Time</th><th>Event</th><th>Job</th><th>By</th><th>Details</th></tr></thead><tbody>");
    for event in view.events {
        h.raw("<tr class=\"event ")
            .raw(event_class(&event.event))
            .raw("\">");
        h.cell("Time", |h| {
            h.time(event.ts).note(&format!("#{}", event.seq));
        });
        h.cell("Event", |h| {
            h.raw("<code>").text(&event.event).raw("</code>");
        });
        h.cell("Job", |h| {
            h.text(event.job.as_deref().unwrap_or("—"));
        });
        h.cell("By", |h| {
            h.text(&event.actor);
        });
        h.cell("Details", |h| {
            h.text(event.summary.as_deref().unwrap_or(""));
        });
        h.raw("</tr>");
    }
    h.raw("</tbody></table></section>\n");
}

fn footer(h: &mut Html, view: &View) {
    h.raw("<footer>Instance <b>")
        .text(view.service)
        .raw("</b> · vigil ")
        .text(view.version)
        .raw(" · machine-readable: <a href=\"/health/detailed\">/health/detailed</a> · <a href=\"/metrics\">/metrics</a> · probes: /health, /health/live, /health/ready</footer>\n</body></html>\n");
}
