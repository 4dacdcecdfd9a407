//! One POST to one receiver, and what its answer means: delivered,
//! refused for good (a 4xx other than 429), or worth another try (5xx,
//! 429, no answer).

use std::time::{Duration, SystemTime};

use crate::config::WebhookConfig;
use crate::core::redact::error_chain;

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// The receiver answered and will not take it (retrying cannot help).
    Refused {
        status: u16,
    },
    /// A 5xx or 429 (`status`), or no answer at all (`status: None`).
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    /// The receiver's status, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Attempt::Delivered { status } | Attempt::Refused { status } => Some(*status),
            Attempt::Retry { status, .. } => *status,
        }
    }

    /// What went wrong, for logs and the journal; `None` when delivered.
    pub fn error(&self) -> Option<String> {
        match self {
            Attempt::Delivered { .. } => None,
            Attempt::Refused { status } => Some(format!("the receiver answered {status}")),
            Attempt::Retry { error, .. } => Some(error.clone()),
        }
    }
}

/// The client every delivery of one webhook shares: its timeout on every
/// request, and no redirects (a redirected POST turns into a GET).
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// POSTs `body` (the event `event`, delivery id `delivery`) to `hook`,
/// signed when it has a secret.
pub async fn post(
    client: &reqwest::Client,
    hook: &WebhookConfig,
    event: &str,
    delivery: &str,
    body: &str,
) -> Attempt {
    let mut request = client
        .post(hook.url.expose())
        .header("content-type", "application/json")
        .header("x-vigil-event", event)
        .header("x-vigil-delivery", delivery);
    if let Some(secret) = &hook.secret {
        let now = chrono::Utc::now().timestamp();
        let signature = super::sign::signature(secret.expose().as_bytes(), now, body.as_bytes());
        request = request.header("x-vigil-signature", signature);
    }
    for (name, value) in &hook.headers {
        request = request.header(name.as_str(), value.expose());
    }
    match request.body(body.to_owned()).send().await {
        Ok(response) => classify(
            response.status().as_u16(),
            response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
        ),
        Err(e) => Attempt::Retry {
            status: None,
            error: error_chain(&e.without_url()),
            retry_after: None,
        },
    }
}

/// An answer's meaning from its status and `Retry-After`.
pub fn classify(status: u16, retry_after: Option<&str>) -> Attempt {
    match status {
        200..=299 => Attempt::Delivered { status },
        429 | 500..=599 => Attempt::Retry {
            status: Some(status),
            error: format!("the receiver answered {status}"),
            retry_after: retry_after
                .and_then(|v| super::retry::parse_retry_after(v, SystemTime::now())),
        },
        _ => Attempt::Refused { status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_5xx_429_and_silence_are_retried() {
        assert_eq!(classify(204, None), Attempt::Delivered { status: 204 });
        assert_eq!(classify(400, None), Attempt::Refused { status: 400 });
        assert_eq!(classify(410, None), Attempt::Refused { status: 410 });
        assert!(matches!(
            classify(429, Some("3")),
            Attempt::Retry { status: Some(429), retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(classify(503, None), Attempt::Retry { .. }));
    }
}
