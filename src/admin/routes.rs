//! One `match (method, path)` from request to response.

use std::sync::Arc;

use chrono::Utc;
use hyper::header::{ACCEPT, ALLOW, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::exposition::Format;
use super::response::{Body, json_error};
use crate::state::Shared;

/// What the handlers read.
pub struct AdminState {
    pub shared: Arc<Shared>,
    pub metrics: super::metrics::Metrics,
    /// Connections the accept loop closed unserved, for `/metrics`.
    pub refused: Arc<super::server::RefusedConnections>,
    /// Tokens, trusted proxies, `protect_detailed`: swapped on reload.
    pub auth: arc_swap::ArcSwap<super::api::AuthSettings>,
    pub limiter: super::auth::FailureLimiter,
    /// The operator API's state, once start-up is done.
    pub api: std::sync::OnceLock<Arc<super::call::Api>>,
}

impl AdminState {
    pub fn new(shared: Arc<Shared>, config: &crate::config::Config) -> Self {
        let refused = Arc::new(super::server::RefusedConnections::default());
        let metrics = super::metrics::Metrics::new(Arc::clone(&shared), Arc::clone(&refused));
        AdminState {
            shared,
            metrics,
            refused,
            auth: arc_swap::ArcSwap::from_pointee(super::api::AuthSettings::from_config(config)),
            limiter: super::auth::FailureLimiter::new(config.admin.auth_failures_per_minute),
            api: std::sync::OnceLock::new(),
        }
    }

    /// Whether a request may see `/health/detailed` and `/`: with
    /// `protect_detailed`, a viewer token; wrong tokens count against the
    /// same failure limit as the API's, and only they are ever limited.
    fn details_access<B>(&self, req: &Request<B>, peer: std::net::SocketAddr) -> DetailsAccess {
        let settings = self.auth.load();
        if !settings.protect_detailed {
            return DetailsAccess::Open;
        }
        match super::api::authenticate(&settings.tokens, req.headers()) {
            crate::core::auth::Authn::Valid(t)
                if t.role.allows(crate::core::auth::Permission::ReadDetailed) =>
            {
                DetailsAccess::Open
            }
            crate::core::auth::Authn::Valid(_) | crate::core::auth::Authn::Missing => {
                DetailsAccess::Refused
            }
            crate::core::auth::Authn::Malformed | crate::core::auth::Authn::Invalid => {
                let (_, ip, _) = super::api::call_facts(&settings, req.headers(), peer);
                let key = super::api::limiter_key(ip);
                match self.limiter.wrong_token(key, std::time::Instant::now()) {
                    Some(wait) => DetailsAccess::Limited(wait),
                    None => DetailsAccess::Refused,
                }
            }
        }
    }
}

/// The answer to a request for `/health/detailed` or `/`.
enum DetailsAccess {
    Open,
    /// 401: no token, or one that is not valid.
    Refused,
    /// 429: a wrong token from an address over the failure limit.
    Limited(std::time::Duration),
}

const HEALTH_METHODS: &str = "GET, HEAD";

pub fn route<B>(
    state: &AdminState,
    req: &Request<B>,
    peer: std::net::SocketAddr,
) -> Response<Body> {
    let now = Utc::now();
    let verbose = wants_verbose(req.uri().query());
    let method = req.method();
    let read = method == Method::GET || method == Method::HEAD;
    let snapshot = state.shared.snapshot();
    match req.uri().path() {
        "/health" if read => super::health::overall(&state.shared, &snapshot, now, verbose),
        "/health/live" if read => super::health::live(&snapshot, now, verbose),
        "/health/ready" if read => super::health::ready(&state.shared, verbose),
        path @ ("/health/detailed" | "/") if read => match state.details_access(req, peer) {
            DetailsAccess::Open if path == "/" => {
                let settings = state.auth.load();
                super::page::render(&state.shared, &snapshot, now, &settings.redact)
            }
            DetailsAccess::Open => super::health::detailed(&state.shared, &snapshot, now),
            DetailsAccess::Refused => details_refused(),
            DetailsAccess::Limited(wait) => details_limited(wait),
        },
        "/health" | "/health/live" | "/health/ready" | "/health/detailed" => {
            method_not_allowed(HEALTH_METHODS)
        }
        "/metrics" if read => state
            .metrics
            .render(Format::negotiate(accept(req).as_deref())),
        "/metrics" | "/" => method_not_allowed(HEALTH_METHODS),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint; see / for the status page",
        ),
    }
}

fn details_refused() -> Response<Body> {
    let mut response = json_error(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "`admin.protect_detailed` is on: send `Authorization: Bearer <token>` with a viewer token",
    );
    response.headers_mut().insert(
        hyper::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"vigil\""),
    );
    response
}

fn details_limited(wait: std::time::Duration) -> Response<Body> {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        super::api::TOO_MANY_FAILURES,
    );
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(hyper::header::RETRY_AFTER, v);
    }
    response
}

/// Every `Accept` header's value, joined as one list.
fn accept<B>(req: &Request<B>) -> Option<String> {
    let values: Vec<&str> = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// `?verbose` or `?verbose=1|true`, kube-apiserver style.
fn wants_verbose(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == "verbose" && !matches!(v, "0" | "false")
        })
    })
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("this endpoint accepts {allow}"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_query_forms() {
        assert!(wants_verbose(Some("verbose")));
        assert!(wants_verbose(Some("a=1&verbose=1")));
        assert!(!wants_verbose(Some("verbose=0")));
        assert!(!wants_verbose(Some("verbosity")));
        assert!(!wants_verbose(None));
    }
}
