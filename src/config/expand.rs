//! `${VAR}` and `${VAR:-default}` expansion of string values, through an
//! [`Env`] trait so tests pass a map instead of touching the process
//! environment.

use std::collections::HashMap;

/// Where `${VAR}` values come from.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Why a string could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `${NAME}` with no default and `NAME` unset.
    Unset(String),
    /// `${` without a closing `}`, or an empty or invalid name.
    Malformed(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Unset(name) => write!(
                f,
                "environment variable `{name}` is not set (set it, or write `${{{name}:-default}}`)"
            ),
            ExpandError::Malformed(what) => write!(
                f,
                "malformed `${{...}}` reference `{what}` (use `${{NAME}}` or `${{NAME:-default}}`; write `$$` for a literal `$`)"
            ),
        }
    }
}

/// Expands every `${NAME}` / `${NAME:-default}` in `input`; `$$` is a literal `$`.
/// A `$` not followed by `{` or `$` is kept as is.
pub fn expand(input: &str, env: &dyn Env) -> Result<String, ExpandError> {
    if !input.contains('$') {
        return Ok(input.to_owned());
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| ExpandError::Malformed(format!("${{{body}")))?;
            let reference = &body[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (reference, None),
            };
            if !is_valid_name(name) {
                return Err(ExpandError::Malformed(format!("${{{reference}}}")));
            }
            match (env.var(name).filter(|v| !v.is_empty()), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => return Err(ExpandError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn expands_set_variables_and_defaults() {
        let e = env(&[("HOST", "db1"), ("EMPTY", "")]);
        assert_eq!(
            expand("postgres://${HOST}/x", &e).unwrap(),
            "postgres://db1/x"
        );
        assert_eq!(expand("${PORT:-5432}", &e).unwrap(), "5432");
        assert_eq!(expand("${EMPTY:-fallback}", &e).unwrap(), "fallback");
        assert_eq!(expand("${HOST:-x}", &e).unwrap(), "db1");
        assert_eq!(expand("cost $$5 and $x", &e).unwrap(), "cost $5 and $x");
    }

    #[test]
    fn unset_without_default_names_the_variable() {
        let err = expand("${NOPE}", &env(&[])).unwrap_err();
        assert_eq!(err, ExpandError::Unset("NOPE".into()));
        assert!(err.to_string().contains("`NOPE` is not set"));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(matches!(
            expand("${A", &env(&[])),
            Err(ExpandError::Malformed(_))
        ));
        assert!(matches!(
            expand("${}", &env(&[])),
            Err(ExpandError::Malformed(_))
        ));
        assert!(matches!(
            expand("${1A}", &env(&[])),
            Err(ExpandError::Malformed(_))
        ));
    }
}
