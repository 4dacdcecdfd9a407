//! Semantic checks over a deserialised config: pure, collects every problem.

use super::{Config, Environment};

/// The secret value `config.toml.example` ships; production refuses it.
pub const PLACEHOLDER_SECRET: &str = "change-me";

/// `[[admin.tokens]]` and `admin.trusted_proxies`.
fn validate_admin_api(config: &Config, problem: &mut dyn FnMut(String, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, token) in config.admin.tokens.iter().enumerate() {
        let key = format!("admin.tokens[{i}]");
        if token.name.trim().is_empty() {
            problem(format!("{key}.name"), "must not be empty".into());
        } else if !names.insert(token.name.as_str()) {
            problem(
                format!("{key}.name"),
                format!(
                    "`{}` is used by two tokens; names must be unique (they are what the audit journal records)",
                    token.name
                ),
            );
        }
        match (&token.token_sha256, &token.token_file) {
            (None, None) => problem(
                key.clone(),
                "needs `token_sha256` (hex SHA-256 of the token) or `token_file`".into(),
            ),
            (Some(hash), _) => {
                if let Err(e) = crate::core::auth::parse_sha256_hex(hash) {
                    problem(format!("{key}.token_sha256"), e.to_string());
                }
            }
            _ => {}
        }
    }
    if let Err(e) = crate::core::auth::TrustedProxies::parse(&config.admin.trusted_proxies) {
        problem("admin.trusted_proxies".into(), e.to_string());
    }
}

fn validate_journal(config: &Config, problem: &mut dyn FnMut(String, String)) {
    let journal = &config.journal;
    let mut at_least = |key: &str, ok: bool, what: &str| {
        if !ok {
            problem(format!("journal.{key}"), format!("must be at least {what}"));
        }
    };
    at_least("sync_interval", !journal.sync_interval.is_zero(), "1ms");
    at_least("segment_max_mib", journal.segment_max_mib >= 1, "1");
    at_least(
        "segment_max_age",
        journal.segment_max_age.as_secs() >= 60,
        "1m",
    );
    at_least(
        "checkpoint_interval",
        journal.checkpoint_interval.as_secs() >= 1,
        "1s",
    );
    at_least("queue_capacity", journal.queue_capacity >= 1, "1");
    if journal.retention < journal.segment_max_age {
        problem(
            "journal.retention".into(),
            "must be at least `journal.segment_max_age`".into(),
        );
    }
    if let Some(url) = &journal.loki_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        problem(
            "journal.loki_url".into(),
            format!("`{url}` is not an http(s) URL (e.g. http://loki:3100)"),
        );
    }
}

/// Every problem as `(dotted key, message)`.
pub fn validate(config: &Config) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut problem = |key: &str, message: String| problems.push((key.to_owned(), message));

    if !is_valid_level(&config.log.level) {
        problem(
            "log.level",
            format!(
                "`{}` is not a valid level or filter (use trace, debug, info, warn, error, or `info,vigil=debug`)",
                config.log.level
            ),
        );
    }
    if config.admin.max_connections == 0 {
        problem("admin.max_connections", "must be at least 1".into());
    }
    if config.admin.max_connections_per_client == 0 {
        problem(
            "admin.max_connections_per_client",
            "must be at least 1".into(),
        );
    }
    if config.catalog.pool_size == 0 {
        problem("catalog.pool_size", "must be at least 1".into());
    }
    match super::conninfo::parse(config.catalog.url.expose()) {
        Err(e) => problem(
            "catalog.url",
            format!(
                "is not a valid PostgreSQL connection string: {e} (e.g. postgres://vigil@db:5432/vigil)"
            ),
        ),
        Ok(info) => {
            for tls in info.tls.file_problems() {
                problem("catalog.url", tls.to_string());
            }
        }
    }
    for (key, value) in [
        ("health.heartbeat", config.health.heartbeat),
        ("health.interval", config.health.interval),
        ("health.timeout", config.health.timeout),
        ("catalog.query_timeout", config.catalog.query_timeout),
        (
            "admin.header_read_timeout",
            config.admin.header_read_timeout,
        ),
    ] {
        if value.is_zero() {
            problem(key, "must be longer than 0s".into());
        }
    }
    if config.health.max_backoff < config.health.interval {
        problem(
            "health.max_backoff",
            "must be at least `health.interval`".into(),
        );
    }
    let catalog = &config.health.catalog;
    if catalog.warn_after >= catalog.fail_after {
        problem(
            "health.catalog.warn_after",
            format!(
                "must be below `health.catalog.fail_after` ({})",
                humantime::format_duration(catalog.fail_after)
            ),
        );
    }
    let disk = &config.health.disk;
    for (key, ratio) in [
        ("health.disk.warn_ratio", disk.warn_ratio),
        ("health.disk.fail_ratio", disk.fail_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            problem(
                key,
                format!("{ratio} is not a fraction between 0 and 1 (e.g. 0.85)"),
            );
        }
    }
    if disk.warn_ratio >= disk.fail_ratio {
        problem(
            "health.disk.warn_ratio",
            "must be below `health.disk.fail_ratio`".into(),
        );
    }

    super::validate_storage::validate_storage(config, &mut |k, m| problem(&k, m));
    super::validate_drill::validate_drills(&config.jobs, &mut |k, m| problem(&k, m));
    validate_admin_api(config, &mut |k, m| problem(&k, m));
    validate_journal(config, &mut |k, m| problem(&k, m));
    super::notify::validate(config, &mut |k, m| problem(&k, m));

    if config.daemon.environment == Environment::Production {
        if !config.admin.listen.ip().is_loopback() && config.admin.tokens.is_empty() {
            problem(
                "admin.listen",
                format!(
                    "listens beyond loopback ({}) with no `[[admin.tokens]]`: in production add a token (`name`, `role`, `token_file`), or listen on 127.0.0.1",
                    config.admin.listen
                ),
            );
        }
        let expose = |s: &Option<super::Secret>| s.as_ref().map(|s| s.expose().to_owned());
        let mut secrets: Vec<(String, Option<String>)> = vec![
            ("catalog.password".into(), expose(&config.catalog.password)),
            (
                "catalog.url".into(),
                crate::core::redact::url_password(config.catalog.url.expose()),
            ),
        ];
        for (name, job) in &config.jobs {
            secrets.push((format!("jobs.{name}.password"), expose(&job.password)));
            secrets.push((
                format!("jobs.{name}.source"),
                crate::core::redact::url_password(job.source.expose()),
            ));
        }
        for (key, value) in secrets {
            if value.as_deref() == Some(PLACEHOLDER_SECRET) {
                problem(
                    &key,
                    format!(
                        "still holds the example placeholder `{PLACEHOLDER_SECRET}`: set a real secret before running in production"
                    ),
                );
            }
        }
    }
    problems
}

/// A bare word must be a level (`loud` would parse as a target name and
/// silently log nothing); anything else must parse as a filter.
fn is_valid_level(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    if !level.contains(['=', ',', ':', '[']) {
        return LEVELS.contains(&level.trim().to_ascii_lowercase().as_str());
    }
    tracing_subscriber::EnvFilter::try_new(level).is_ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use crate::config::parse;

    fn keys(src: &str) -> Vec<String> {
        match parse(src, Path::new("c.toml"), &HashMap::new()) {
            Ok(_) => vec![],
            Err(e) => e.problems.into_iter().map(|p| p.key).collect(),
        }
    }

    const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n";

    #[test]
    fn development_allows_open_admin_port() {
        assert!(keys(&format!("{BASE}[admin]\nlisten = \"0.0.0.0:9746\"\n")).is_empty());
    }

    #[test]
    fn production_refuses_open_admin_port_without_token() {
        let src = format!(
            "[daemon]\nenvironment = \"production\"\n{BASE}[admin]\nlisten = \"0.0.0.0:9746\"\n"
        );
        assert_eq!(keys(&src), ["admin.listen"]);
        let with_token = format!(
            "{src}[[admin.tokens]]\nname = \"ops\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            "ab".repeat(32)
        );
        assert!(keys(&with_token).is_empty());
        let bad_hash = with_token.replace(&"ab".repeat(32), "the-token-itself");
        assert_eq!(keys(&bad_hash), ["admin.tokens[0].token_sha256"]);
    }

    #[test]
    fn production_refuses_placeholder_secrets() {
        let src = "[daemon]\nenvironment = \"production\"\n[catalog]\nurl = \"postgres://vigil:change-me@db/vigil\"\npassword = \"change-me\"\n".to_string();
        assert_eq!(keys(&src), ["catalog.password", "catalog.url"]);
        let dev = src.replace("production", "development");
        assert!(keys(&dev).is_empty());
    }

    #[test]
    fn all_semantic_problems_at_once_with_positions() {
        let src = format!(
            "{BASE}pool_size = 0\n[log]\nlevel = \"loud\"\n[health.disk]\nwarn_ratio = 0.99\nfail_ratio = 1.5\n[health.catalog]\nwarn_after = \"3s\"\n"
        );
        let err = parse(&src, Path::new("c.toml"), &HashMap::new()).unwrap_err();
        let got: Vec<_> = err
            .problems
            .iter()
            .map(|p| (p.key.as_str(), p.position))
            .collect();
        assert_eq!(
            got,
            [
                ("log.level", Some((5, 1))),
                ("catalog.pool_size", Some((3, 1))),
                ("health.catalog.warn_after", Some((10, 1))),
                ("health.disk.fail_ratio", Some((8, 1))),
            ]
        );
    }
}
