//! `vigil status`: fetch the running daemon's `/health/detailed` and print it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use thiserror::Error;

use super::exit::{Classify, Exit};
use super::out::OutputError;

#[derive(Debug, Error)]
pub enum StatusError {
    #[error(
        "cannot connect to vigil at {addr}: {source} (is it running, and is `admin.listen` right?)"
    )]
    Unreachable {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("vigil at {addr} did not {what} within {}s", .after.as_secs())]
    Timeout {
        addr: SocketAddr,
        what: &'static str,
        after: Duration,
    },
    #[error("talking to vigil at {addr}: {detail}")]
    Http { addr: SocketAddr, detail: String },
    #[error(
        "vigil at {addr} protects /health/detailed (`admin.protect_detailed`): set VIGIL_TOKEN to a viewer token"
    )]
    Protected { addr: SocketAddr },
    #[error("vigil at {addr} answered {code} with something that is not health JSON: {detail}")]
    NotHealth {
        addr: SocketAddr,
        code: u16,
        detail: String,
    },
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// `vigil status [--json]`: exit 0 on pass/warn, 2 on fail.
pub async fn command(path: &Path, json: bool) -> ExitCode {
    // From the environment only: a token on the command line shows in `ps`.
    let token = std::env::var("VIGIL_TOKEN").ok().filter(|t| !t.is_empty());
    let config = match super::load_as(path, json) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match run_with_proofs(config.admin.listen, json, token.as_deref(), Some(&config)).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(Exit::Unhealthy.code()),
        Err(e) => super::finish_as(Err(e.into()), json),
    }
}

impl Classify for StatusError {
    fn exit(&self) -> Exit {
        match self {
            StatusError::Unreachable { .. } | StatusError::Timeout { .. } => Exit::Unreachable,
            StatusError::Protected { .. } => Exit::Usage,
            StatusError::Output(e) => e.exit(),
            StatusError::Http { .. } | StatusError::NotHealth { .. } => Exit::Failed,
        }
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to reach a daemon listening on `listen` (wildcards mean loopback).
pub fn target(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// GETs `path`; returns the status code and body.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), StatusError> {
    get_with_token(addr, path, None).await
}

/// Like [`get`], with a bearer token (`admin.protect_detailed`).
pub async fn get_with_token(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), StatusError> {
    let http = |e: &dyn std::fmt::Display| StatusError::Http {
        addr,
        detail: e.to_string(),
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| StatusError::Timeout {
            addr,
            what: "accept a connection",
            after: CONNECT_TIMEOUT,
        })?
        .map_err(|source| StatusError::Unreachable { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(connection);
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let request = request
        .header("host", addr.to_string())
        .header(
            "user-agent",
            concat!("vigil-status/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(&e))?;
    let response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| StatusError::Timeout {
            addr,
            what: "answer",
            after: ANSWER_TIMEOUT,
        })?
        .map_err(|e| http(&e))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Prints the report; returns whether the overall status is not `fail`.
/// `token`: for a daemon with `admin.protect_detailed` (`VIGIL_TOKEN`).
pub async fn run(listen: SocketAddr, json: bool, token: Option<&str>) -> Result<bool, StatusError> {
    run_with_proofs(listen, json, token, None).await
}

/// Like [`run`], with each job of `config`'s last verification and drill
/// (read from its repository once the daemon answered): under
/// `vigil.proofs` in JSON, a line per job in text.
async fn run_with_proofs(
    listen: SocketAddr,
    json: bool,
    token: Option<&str>,
    config: Option<&crate::config::Config>,
) -> Result<bool, StatusError> {
    let addr = target(listen);
    let (code, body) = get_with_token(addr, "/health/detailed", token).await?;
    if code == 401 {
        return Err(StatusError::Protected { addr });
    }
    let not_health = |detail: String| StatusError::NotHealth { addr, code, detail };
    let value: Value = serde_json::from_str(&body).map_err(|e| not_health(e.to_string()))?;
    let healthy = match value["status"].as_str() {
        Some("pass" | "warn") => true,
        Some(_) => false,
        None => return Err(not_health("no `status`".into())),
    };
    let proofs = match config {
        Some(config) => {
            let jobs: Vec<&str> = config.jobs.keys().map(String::as_str).collect();
            super::proofs::read(config, &jobs).await
        }
        None => Vec::new(),
    };
    let proofs = proofs.as_slice();
    let mut value = value;
    if json {
        if !proofs.is_empty()
            && let Some(own) = value.get_mut("vigil").and_then(Value::as_object_mut)
        {
            own.insert("proofs".into(), super::proofs::json(proofs));
        }
        let pretty = serde_json::to_string_pretty(&value).map_err(|e| not_health(e.to_string()))?;
        crate::outln!("{pretty}")?;
    } else {
        crate::out!("{}", render(&value))?;
        let lines = super::proofs::lines(proofs, chrono::Utc::now());
        if !lines.is_empty() {
            crate::outln!("proofs:")?;
        }
        for line in lines {
            crate::outln!("  {line}")?;
        }
    }
    Ok(healthy)
}

/// Human-readable rendering of a `/health/detailed` body.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    let status = v["status"].as_str().unwrap_or("unknown");
    let own = &v["vigil"];
    out.push_str(&format!(
        "vigil {} on {}: {} (phase {}, up {})\n",
        v["releaseId"].as_str().unwrap_or("?"),
        v["serviceId"].as_str().unwrap_or("?"),
        status.to_uppercase(),
        own["phase"].as_str().unwrap_or("?"),
        own["uptimeSeconds"]
            .as_f64()
            .map(|s| humantime::format_duration(Duration::from_secs(s as u64)).to_string())
            .unwrap_or_else(|| "?".into()),
    ));
    if let Some(output) = v["output"].as_str() {
        out.push_str(&format!("  {output}\n"));
    }
    let Some(checks) = v["checks"].as_object() else {
        return out;
    };
    let width = checks.keys().map(String::len).max().unwrap_or(0);
    for (key, results) in checks {
        let c = &results[0];
        let value = match (c["observedValue"].as_f64(), c["observedUnit"].as_str()) {
            (Some(x), Some("ratio")) => format!("{:.1} %", x * 100.0),
            (Some(x), Some(unit)) => format!("{x:.2} {unit}"),
            (Some(x), None) => format!("{x}"),
            (None, _) => String::new(),
        };
        let critical = if c["vigil"]["critical"].as_bool() == Some(false) {
            " (informational)"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {:<4}  {key:<width$}  {value}{critical}\n",
            c["status"].as_str().unwrap_or("?")
        ));
        if let Some(output) = c["output"].as_str() {
            out.push_str(&format!("        {:width$}  {output}\n", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_maps_to_loopback() {
        assert_eq!(
            target("0.0.0.0:9746".parse().unwrap()).to_string(),
            "127.0.0.1:9746"
        );
        assert_eq!(target("[::]:1".parse().unwrap()).to_string(), "[::1]:1");
        assert_eq!(
            target("10.0.0.1:2".parse().unwrap()).to_string(),
            "10.0.0.1:2"
        );
    }

    #[test]
    fn renders_checks_with_outputs() {
        let v = serde_json::json!({
            "status": "fail", "releaseId": "0.1.0", "serviceId": "h",
            "vigil": {"phase": "ready", "uptimeSeconds": 61.0},
            "checks": {
                "catalog:responseTime": [{"status": "fail", "output": "catalog unreachable", "vigil": {"critical": true}}],
                "state-dir:utilization": [{"status": "pass", "observedValue": 0.5, "observedUnit": "ratio", "vigil": {"critical": true}}]
            }
        });
        let text = render(&v);
        assert!(
            text.starts_with("vigil 0.1.0 on h: FAIL (phase ready, up 1m 1s)\n"),
            "{text}"
        );
        assert!(text.contains("fail  catalog:responseTime"), "{text}");
        assert!(text.contains("catalog unreachable"), "{text}");
        assert!(text.contains("50.0 %"), "{text}");
    }
}
