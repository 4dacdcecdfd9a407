//! The one error shape of everything vigil prints or serves as JSON: the
//! operator API, the admin port's other JSON answers, and the CLI's
//! `--json` failures all say `{"error": {"code", "message", "requestId"}}`,
//! so a script parses failures one way.

use serde::Serialize;

/// `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What failed: a stable `code` to match on, a `message` for people, and
/// the request's id where there is one (API calls).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>, request_id: Option<&str>) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
                request_id: request_id.map(str::to_owned),
            },
        }
    }

    /// The body as JSON text (a struct of strings always serialises).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_shape_is_camel_case_and_omits_a_missing_request_id() {
        let api = ErrorBody::new("prune_refused", "locked", Some("r-1"));
        assert_eq!(
            api.to_json(),
            r#"{"error":{"code":"prune_refused","message":"locked","requestId":"r-1"}}"#
        );
        let cli = ErrorBody::new("unknown_job", "no job `x`", None);
        assert_eq!(
            cli.to_json(),
            r#"{"error":{"code":"unknown_job","message":"no job `x`"}}"#
        );
    }
}
