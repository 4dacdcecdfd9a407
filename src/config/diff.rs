//! What a reload changes, and which changes apply without a restart.

use std::collections::BTreeMap;

use super::{Config, REDACTED};
use crate::core::redact::redact_text;

/// One changed key, values already safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub old: String,
    pub new: String,
    /// Applied at once; otherwise it takes effect after a restart.
    pub live: bool,
}

/// Keys a running daemon applies on SIGHUP.
fn is_live(key: &str) -> bool {
    key == "log.level"
        || key.starts_with("health.")
        || [
            "admin.tokens",
            "admin.trusted_proxies",
            "admin.protect_detailed",
        ]
        .contains(&key)
}

/// Keys whose values serialise redacted; compared explicitly below.
const SECRET_KEYS: [&str; 2] = ["catalog.password", "catalog.url"];

pub fn diff(old: &Config, new: &Config) -> Vec<Change> {
    let (a, b) = (flatten(old), flatten(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let absent = || "(unset)".to_owned();
    let mut changes: Vec<Change> = keys
        .into_iter()
        .filter(|k| !SECRET_KEYS.contains(&k.as_str()) && a.get(*k) != b.get(*k))
        .map(|k| Change {
            key: k.clone(),
            old: a.get(k).cloned().unwrap_or_else(absent),
            new: b.get(k).cloned().unwrap_or_else(absent),
            live: is_live(k),
        })
        .collect();
    // Secrets serialise as `<redacted>`, so compare them explicitly.
    let secret_pairs = [(
        "catalog.password",
        old.catalog.password.as_ref(),
        new.catalog.password.as_ref(),
    )];
    for (key, a, b) in secret_pairs {
        if a != b {
            changes.push(Change {
                key: key.into(),
                old: REDACTED.into(),
                new: REDACTED.into(),
                live: false,
            });
        }
    }
    if old.catalog.url != new.catalog.url {
        changes.push(Change {
            key: "catalog.url".into(),
            old: redact_text(old.catalog.url.expose(), &[]),
            new: redact_text(new.catalog.url.expose(), &[]),
            live: false,
        });
    }
    // A job's source URL serialises redacted: compare it with only its
    // password masked. It applies at once (the next connection uses it).
    for (name, job) in &new.jobs {
        if let Some(was) = old.jobs.get(name)
            && was.source != job.source
        {
            changes.push(Change {
                key: format!("jobs.{name}.source"),
                old: redact_text(was.source.expose(), &[]),
                new: redact_text(job.source.expose(), &[]),
                live: true,
            });
        }
    }
    // Job passwords (and URL passwords) and repository secret options
    // serialise redacted too: a rotated one is a change, applied at once
    // (`JobContext::rotate`), reported without its value.
    let (old_secrets, new_secrets): (BTreeMap<_, _>, BTreeMap<_, _>) = (
        old.named_secrets().into_iter().collect(),
        new.named_secrets().into_iter().collect(),
    );
    let mut secret_keys: Vec<&String> = old_secrets.keys().chain(new_secrets.keys()).collect();
    secret_keys.sort();
    secret_keys.dedup();
    for key in secret_keys {
        if key.starts_with("catalog.") || old_secrets.get(key) == new_secrets.get(key) {
            continue;
        }
        let shown = |v: Option<&String>| v.map_or_else(absent, |_| REDACTED.to_owned());
        if !changes.iter().any(|c| &c.key == key) {
            changes.push(Change {
                key: key.clone(),
                old: shown(old_secrets.get(key)),
                new: shown(new_secrets.get(key)),
                live: true,
            });
        }
    }
    // Token digests print redacted: a rotated token shows as a change of
    // `admin.tokens` (live) by comparing the tokens themselves.
    if old.admin.tokens != new.admin.tokens && !changes.iter().any(|c| c.key == "admin.tokens") {
        changes.push(Change {
            key: "admin.tokens".into(),
            old: String::new(),
            new: String::new(),
            live: true,
        });
    }
    for change in &mut changes {
        if change.key == "admin.tokens" {
            // Names and roles only: not even a token's hash leaves the config.
            (change.old, change.new) = (token_summary(old), token_summary(new));
        } else {
            // A URL with credentials (`journal.loki_url`, a repository endpoint).
            change.old = redact_text(&change.old, &[]);
            change.new = redact_text(&change.new, &[]);
        }
    }
    changes.sort_by(|x, y| x.key.cmp(&y.key));
    changes
}

fn token_summary(config: &Config) -> String {
    let tokens: Vec<String> = config
        .admin
        .tokens
        .iter()
        .map(|t| format!("{} ({})", t.name, t.role.as_str()))
        .collect();
    format!("[{}]", tokens.join(", "))
}

fn flatten(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(value) = toml::Value::try_from(config) {
        walk(&value, &mut String::new(), &mut out);
    }
    out
}

fn walk(value: &toml::Value, prefix: &mut String, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push('.');
                }
                prefix.push_str(k);
                walk(v, prefix, out);
                prefix.truncate(len);
            }
        }
        other => {
            out.insert(prefix.clone(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    fn cfg(extra: &str) -> Config {
        let src = format!("[catalog]\nurl = \"postgres://u:pw1@h/db\"\n{extra}");
        parse(&src, Path::new("c.toml"), &HashMap::new()).unwrap()
    }

    #[test]
    fn reports_live_and_restart_changes_without_secrets() {
        let old = cfg("[log]\nlevel = \"info\"\n");
        let new = cfg(
            "[log]\nlevel = \"debug\"\n[admin]\nlisten = \"127.0.0.1:1\"\n[[admin.tokens]]\nname = \"ci\"\nrole = \"viewer\"\ntoken_sha256 = \"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n[jobs]\n",
        );
        let changes = diff(&old, &new);
        let keys: Vec<_> = changes.iter().map(|c| (c.key.as_str(), c.live)).collect();
        assert_eq!(
            keys,
            [
                ("admin.listen", false),
                ("admin.tokens", true),
                ("log.level", true)
            ]
        );
        let text = format!("{changes:?}");
        assert!(!text.contains("9f86d0818"), "no token hash: {text}");
        assert!(text.contains("ci (viewer)"), "{text}");
    }

    #[test]
    fn rotated_job_secrets_and_tokens_are_changes_without_their_values() {
        let job = |pw: &str, token: &str| {
            cfg(&format!(
                "[[admin.tokens]]\nname = \"ci\"\nrole = \"viewer\"\ntoken_sha256 = \"{token}\"\n\
                 [repositories.r]\nscheme = \"fs\"\noptions = {{ root = \"/tmp\" }}\n\
                 [jobs.j]\nkind = \"postgres\"\nsource = \"postgres://b@db/x\"\npassword = \"{pw}\"\n\
                 databases = [\"x\"]\nrepository = \"r\"\nevery = \"1h\"\n"
            ))
        };
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let changes = diff(&job("old-pw-1", &a), &job("new-pw-2", &b));
        let keys: Vec<_> = changes.iter().map(|c| (c.key.as_str(), c.live)).collect();
        assert_eq!(keys, [("admin.tokens", true), ("jobs.j.password", true)]);
        let text = format!("{changes:?}");
        for secret in ["old-pw-1", "new-pw-2", a.as_str(), b.as_str()] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(diff(&job("same", &a), &job("same", &a)).is_empty());
    }

    #[test]
    fn url_password_changes_are_masked() {
        let old = cfg("");
        let mut new = cfg("");
        new.catalog.url = crate::config::Secret::new("postgres://u:pw2@h/db");
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].old, "postgres://u:***@h/db");
        assert!(!format!("{changes:?}").contains("pw2"));
    }

    #[test]
    fn identical_configs_have_no_changes() {
        assert!(diff(&cfg(""), &cfg("")).is_empty());
    }
}
