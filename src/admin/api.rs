//! The operator API (`/api/v1/...`): request metadata, bearer auth, the
//! permission check, and an `api.request` journal event for every call,
//! allowed or denied. The endpoints themselves are in `endpoints.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};

use super::auth::FailureLimiter;
use super::call::{Api, ApiError, Call};
use super::response::{Body, JSON, respond};
use crate::config::Config;
use crate::core::auth::{Authn, Permission, TokenEntry, Tokens, TrustedProxies};
use crate::core::journal_record::Entry;
use crate::core::output::ErrorBody;

/// Who may call, from the current config (swapped on reload).
pub struct AuthSettings {
    pub tokens: Tokens,
    pub proxies: TrustedProxies,
    pub protect_detailed: bool,
    /// The config's secret values, masked wherever the status page would
    /// show them.
    pub redact: Vec<String>,
}

impl AuthSettings {
    /// From a validated config (bad entries were refused at load).
    pub fn from_config(config: &Config) -> AuthSettings {
        let tokens = config
            .admin
            .tokens
            .iter()
            .filter_map(|t| {
                let hash = crate::core::auth::parse_sha256_hex(t.token_sha256.as_deref()?).ok()?;
                Some(TokenEntry {
                    name: t.name.clone(),
                    role: t.role,
                    sha256: hash,
                })
            })
            .collect();
        AuthSettings {
            tokens: Tokens::new(tokens),
            // A bad list was refused at load; none trusted is the safe side.
            proxies: TrustedProxies::parse(&config.admin.trusted_proxies).unwrap_or_default(),
            protect_detailed: config.admin.protect_detailed,
            redact: config.secrets(),
        }
    }
}

/// The failure limiter's key: the address, or its /64 for IPv6 (one host
/// usually holds a whole /64).
pub fn limiter_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            std::net::IpAddr::V6(segments.into())
        }
        other => other,
    }
}

/// Which addresses had a refused call journalled in the current minute:
/// refusals are journalled once per address and minute, with the count of
/// those that were not, so a flood cannot fill the disk or push real
/// events out of the queue.
struct RefusalLog(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u64)>>);

static REFUSED: std::sync::LazyLock<RefusalLog> =
    std::sync::LazyLock::new(|| RefusalLog(Default::default()));

impl RefusalLog {
    /// `Some(calls not journalled since the last one)` when this one should be.
    fn note(&self, key: std::net::IpAddr) -> Option<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() > 10_000 {
            map.retain(|_, (at, _)| now.duration_since(*at).as_secs() < 60);
        }
        let entry = map.entry(key).or_insert((now, 0));
        if entry.1 == 0 || now.duration_since(entry.0).as_secs() >= 60 {
            let suppressed = entry.1.saturating_sub(1);
            *entry = (now, 1);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }
}

/// The request's `Authorization` header checked against `tokens`; a header
/// that is not text was presented, so it is malformed, not missing.
pub fn authenticate<'a>(tokens: &'a Tokens, headers: &HeaderMap) -> Authn<'a> {
    match headers
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.to_str())
    {
        None => Authn::Missing,
        Some(Ok(header)) => tokens.authenticate(Some(header)),
        Some(Err(_)) => Authn::Malformed,
    }
}

/// The client's address, id and agent; the same rules for the API and for
/// the protected health pages.
pub fn call_facts(
    settings: &AuthSettings,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> (String, std::net::IpAddr, Option<String>) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let request_id = super::auth::request_id(header("x-request-id"));
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
    let ip = settings.proxies.client_ip(peer.ip(), forwarded.as_deref());
    let agent = header("user-agent").map(|a| a.chars().take(256).collect());
    (request_id, ip, agent)
}

/// Handles `/api/...`.
pub async fn handle<B>(
    settings: &AuthSettings,
    limiter: &FailureLimiter,
    api: Option<&Arc<Api>>,
    req: Request<B>,
    peer: SocketAddr,
) -> Response<Body> {
    let (request_id, ip, user_agent) = call_facts(settings, req.headers(), peer);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let mut call = Call {
        request_id,
        ip,
        user_agent,
        token: None,
        suppressed: 0,
    };
    let endpoint = match super::endpoints::resolve(&method, &path) {
        Some(Ok(e)) => e,
        unknown => {
            let (outcome, mut response) = match unknown {
                Some(Err(allow)) => {
                    let mut response = error(
                        &call,
                        ApiError::new(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method_not_allowed",
                            format!("{path} accepts {allow}"),
                        ),
                    );
                    response
                        .headers_mut()
                        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
                    ("method_not_allowed", response)
                }
                _ => (
                    "not_found",
                    error(
                        &call,
                        ApiError::new(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            format!(
                                "no endpoint {method} {path}; see the README's operator API section"
                            ),
                        ),
                    ),
                ),
            };
            // Only a token holder's mistakes are journalled: anyone can
            // send unknown paths, and each would cost a journal record.
            let Authn::Valid(token) = authenticate(&settings.tokens, req.headers()) else {
                tracing::debug!(request_id = %call.request_id, ip = %call.ip, %method, path, status = response.status().as_u16(), "api request to no endpoint, unauthenticated: not journalled");
                return response;
            };
            call.token = Some((token.name.clone(), token.role));
            response = finish(api, &call, &method, &path, None, outcome, response);
            return response;
        }
    };
    let permission = endpoint.permission();
    let token = match authenticate(&settings.tokens, req.headers()) {
        Authn::Valid(entry) => entry,
        refused => {
            let (outcome, response) = refuse(limiter, &mut call, refused);
            return match outcome {
                Some(outcome) => finish(
                    api,
                    &call,
                    &method,
                    &path,
                    Some(permission),
                    outcome,
                    response,
                ),
                None => response,
            };
        }
    };
    call.token = Some((token.name.clone(), token.role));
    if !token.role.allows(permission) {
        let response = error(
            &call,
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "token `{}` has role {}, which lacks `{}`",
                    token.name,
                    token.role.as_str(),
                    permission.as_str()
                ),
            ),
        );
        return finish(
            api,
            &call,
            &method,
            &path,
            Some(permission),
            "forbidden",
            response,
        );
    }
    let Some(api) = api else {
        let response = error(
            &call,
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "vigil is still starting; retry in a moment",
            ),
        );
        return finish(
            None,
            &call,
            &method,
            &path,
            Some(permission),
            "unavailable",
            response,
        );
    };
    let answer = super::endpoints::serve(api, &call, endpoint, &query).await;
    let response = match answer {
        Ok((status, body)) => with_request_id(respond(status, JSON, body.to_string()), &call),
        Err(e) => error(&call, e),
    };
    finish(
        Some(api),
        &call,
        &method,
        &path,
        Some(permission),
        "allowed",
        response,
    )
}

/// The answer to a call without a valid token, and its journal outcome
/// (`None`: a rate-limited call not journalled one by one). Only a presented
/// and wrong token counts against the address (a request without the header
/// guesses nothing), and only such a call gets 429 while the address is over
/// the limit: a valid token is checked first and never locked out by someone
/// else's failures from the same address.
fn refuse(
    limiter: &FailureLimiter,
    call: &mut Call,
    authn: Authn<'_>,
) -> (Option<&'static str>, Response<Body>) {
    let (presented, why) = match authn {
        Authn::Missing => (
            false,
            "an `Authorization: Bearer <token>` header is required",
        ),
        Authn::Malformed => (true, "the Authorization header must be `Bearer <token>`"),
        Authn::Invalid | Authn::Valid(_) => (true, "the token is not valid"),
    };
    let key = limiter_key(call.ip);
    let (outcome, response) = match presented
        .then(|| limiter.wrong_token(key, Instant::now()))
        .flatten()
    {
        Some(wait) => ("rate_limited", rate_limited(call, wait)),
        None => {
            let mut response = error(
                call,
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", why),
            );
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
            ("unauthenticated", response)
        }
    };
    match REFUSED.note(key) {
        Some(suppressed) => {
            call.suppressed = suppressed;
            (Some(outcome), response)
        }
        None => (None, response),
    }
}

/// What a 429 says, on the API and on the protected details.
pub const TOO_MANY_FAILURES: &str =
    "too many failed authentications from this address; wait and retry with a valid token";

fn rate_limited(call: &Call, wait: std::time::Duration) -> Response<Body> {
    let mut response = error(
        call,
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            TOO_MANY_FAILURES,
        ),
    );
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(RETRY_AFTER, v);
    }
    response
}

fn error(call: &Call, e: ApiError) -> Response<Body> {
    let body = ErrorBody::new(e.code, e.message, Some(&call.request_id));
    with_request_id(respond(e.status, JSON, body.to_json()), call)
}

fn with_request_id(mut response: Response<Body>, call: &Call) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&call.request_id) {
        response.headers_mut().insert("x-request-id", v);
    }
    response
}

/// Journals the call (allowed or not) and returns its response.
fn finish(
    api: Option<&Arc<Api>>,
    call: &Call,
    method: &Method,
    path: &str,
    permission: Option<Permission>,
    outcome: &str,
    response: Response<Body>,
) -> Response<Body> {
    let status = response.status().as_u16();
    tracing::info!(request_id = %call.request_id, ip = %call.ip, token = call.token.as_ref().map(|t| t.0.as_str()), %method, path, status, outcome, "api request");
    if let Some(api) = api {
        let entry = Entry::at(
            chrono::Utc::now(),
            "api.request",
            call.actor(),
            serde_json::json!({
                "method": method.as_str(),
                "path": path,
                "permission": permission.map(|p| p.as_str()),
                "outcome": outcome,
                "status": status,
                "ip": call.ip.to_string(),
                "user_agent": call.user_agent,
                "token": call.token.as_ref().map(|t| &t.0),
                "role": call.token.as_ref().map(|t| t.1.as_str()),
                "suppressed": call.suppressed,
            }),
        )
        .with_request_id(Some(call.request_id.clone()));
        api.journal.emit(entry);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_is_not_text_is_malformed_not_missing() {
        let tokens = Tokens::default();
        let mut headers = HeaderMap::new();
        assert_eq!(authenticate(&tokens, &headers), Authn::Missing);
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert_eq!(authenticate(&tokens, &headers), Authn::Malformed);
        headers.insert(
            hyper::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer guess"),
        );
        assert_eq!(authenticate(&tokens, &headers), Authn::Invalid);
    }
}
