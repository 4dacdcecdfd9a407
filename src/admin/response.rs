//! Response bodies and content types shared by every handler (health,
//! metrics, status page, API): the router and the handlers both import
//! this, never each other.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

pub const HEALTH_JSON: &str = "application/health+json";
pub const JSON: &str = "application/json";
pub const TEXT: &str = "text/plain; charset=utf-8";

/// A response with `content_type`, never cached.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The one error shape (`{"error": {"code", "message"}}`) with `status`,
/// for answers outside the API, which have no request id.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    respond(
        status,
        JSON,
        crate::core::output::ErrorBody::new(code, message, None).to_json(),
    )
}
