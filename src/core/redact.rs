//! The one redaction function: every error text that reaches a log line,
//! `/health/detailed` or the CLI passes through [`redact_text`].

const MASK: &str = "***";

/// Masks URL passwords (`scheme://user:pw@`), libpq `password=...`,
/// `Bearer ...` tokens, and every known secret value appearing verbatim.
pub fn redact_text(text: &str, known_secrets: &[String]) -> String {
    let mut out = mask_url_passwords(text);
    out = mask_after(&out, "password=", |c: char| {
        c.is_whitespace() || c == '&' || c == ';'
    });
    out = mask_after(&out, "Bearer ", |c: char| {
        c.is_whitespace() || c == '"' || c == '\''
    });
    for secret in known_secrets {
        // Very short values would mask innocent text (and leak their length).
        if secret.len() >= 4 {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// An error with its sources ("db error: FATAL: password authentication
/// failed …"): some libraries' top-level messages say nothing by themselves.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// The password in a libpq URL (`scheme://user:password@host`), if there is one.
pub fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(password.to_owned())
}

fn mask_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

fn mask_after(text: &str, marker: &str, ends: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(marker) {
        let (head, tail) = rest.split_at(pos + marker.len());
        out.push_str(head);
        let end = tail.find(&ends).unwrap_or(tail.len());
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_userinfo_passwords() {
        assert_eq!(
            redact_text("connect postgres://vigil:s3cr3t@db:5432/x failed", &[]),
            "connect postgres://vigil:***@db:5432/x failed"
        );
        assert_eq!(
            redact_text("postgres://vigil@db/x", &[]),
            "postgres://vigil@db/x"
        );
        assert_eq!(
            redact_text("s3://b:k@h and http://u:p@h/", &[]),
            "s3://b:***@h and http://u:***@h/"
        );
    }

    #[test]
    fn masks_keyword_passwords_tokens_and_known_secrets() {
        assert_eq!(
            redact_text("host=db password=hunter2 user=x", &[]),
            "host=db password=*** user=x"
        );
        assert_eq!(
            redact_text("Authorization: Bearer abc.def", &[]),
            "Authorization: Bearer ***"
        );
        assert_eq!(
            redact_text("token tok-123456 leaked", &["tok-123456".into()]),
            "token *** leaked"
        );
    }

    #[test]
    fn finds_url_password() {
        assert_eq!(
            url_password("postgres://u:p%40ss@h/db").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(url_password("postgres://u@h/db"), None);
        assert_eq!(url_password("host=h user=u"), None);
    }
}
