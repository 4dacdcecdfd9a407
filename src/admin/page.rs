//! `/`: a small HTML status page from the snapshot (no build step, no
//! external assets; refreshes itself).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use hyper::{Response, StatusCode};

use super::response::{Body, respond};
use crate::core::health::Status;
use crate::state::{Phase, Shared, StatusSnapshot};

pub fn render(shared: &Shared, snapshot: &StatusSnapshot, now: DateTime<Utc>) -> Response<Body> {
    let overall = match (shared.phase(), snapshot.published_at) {
        (Phase::Ready, Some(_)) => snapshot.overall(now),
        _ => Status::Fail,
    };
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>vigil {status} · {service}</title>
<style>
body{{font:15px/1.4 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}}
h1{{font-size:1.4rem}} .badge{{padding:.15rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}}
.pass{{background:#2e7d32}} .warn{{background:#ed6c02}} .fail{{background:#c62828}}
table{{border-collapse:collapse;width:100%}} th,td{{text-align:left;padding:.35rem .5rem;border-bottom:1px solid #ddd;vertical-align:top}}
td.out{{font-family:monospace;font-size:.85rem;color:#555}} footer{{margin-top:1.5rem;color:#777;font-size:.85rem}}
</style></head><body>
<h1>vigil on {service} <span class="badge {status}">{status}</span></h1>
<p>Phase: <b>{phase}</b> · up {uptime} · version {version}</p>
<table><thead><tr><th>check</th><th>status</th><th>observed</th><th>last run</th><th>since</th><th>output</th></tr></thead><tbody>
"#,
        status = overall.as_str(),
        service = escape(&shared.service_id),
        phase = shared.phase().as_str(),
        uptime = humantime::format_duration(std::time::Duration::from_secs(
            (now - shared.started_at).num_seconds().max(0) as u64
        )),
        version = env!("CARGO_PKG_VERSION"),
    );
    if snapshot.checks.is_empty() {
        html.push_str("<tr><td colspan=\"6\">No check has reported yet.</td></tr>\n");
    }
    for check in &snapshot.checks {
        let (status, output) = check.effective(now);
        let value = match (check.observation.value, check.observation.unit) {
            (Some(v), Some("ratio")) => format!("{:.1} %", v * 100.0),
            (Some(v), Some(unit)) => format!("{v:.2} {unit}"),
            (Some(v), None) => format!("{v}"),
            (None, _) => "—".into(),
        };
        let _ = writeln!(
            html,
            "<tr><td>{key}{crit}</td><td><span class=\"badge {s}\">{s}</span></td><td>{value}</td><td>{ago} ago</td><td>{since}</td><td class=\"out\">{out}</td></tr>",
            key = escape(&check.spec.key),
            crit = if check.spec.critical {
                ""
            } else {
                " <small>(informational)</small>"
            },
            s = status.as_str(),
            value = escape(&value),
            ago = ago(now, check.observed_at),
            since = check.changed_at.format("%Y-%m-%d %H:%M:%S UTC"),
            out = escape(output.as_deref().unwrap_or("")),
        );
    }
    let _ = write!(
        html,
        "</tbody></table>\n<footer>Machine-readable: <a href=\"/health/detailed\">/health/detailed</a> · <a href=\"/metrics\">/metrics</a> · probes: /health, /health/live, /health/ready</footer>\n</body></html>\n"
    );
    respond(StatusCode::OK, "text/html; charset=utf-8", html)
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
