//! Checks of `[repositories]` and `[jobs]`: pure, every problem at once.

use std::str::FromStr;

use super::{Compression, Config, Databases, JobKind};
use crate::core::schedule::parse_cron;

/// opendal services compiled into this build.
pub const SCHEMES: [&str; 6] = ["fs", "s3", "gcs", "azblob", "sftp", "ftp"];

/// Options a scheme cannot work without, with an example each.
fn required_options(scheme: &str) -> &'static [(&'static str, &'static str)] {
    match scheme {
        "s3" => &[("bucket", "backups")],
        "gcs" => &[("bucket", "backups")],
        "azblob" => &[
            ("container", "backups"),
            ("endpoint", "https://ACCOUNT.blob.core.windows.net"),
        ],
        "sftp" => &[
            ("endpoint", "ssh://backup.example.com:22"),
            ("user", "vigil"),
            ("key", "/etc/vigil/sftp_ed25519"),
        ],
        "ftp" => &[("endpoint", "ftp://ftp.example.com:21")],
        _ => &[],
    }
}

fn validate_files_job(job: &super::JobConfig, problem: &mut dyn FnMut(&str, String)) {
    if job.paths.is_empty() {
        problem(
            "paths",
            "list the directories (or files) to archive, e.g. paths = [\"/srv/app\"]".into(),
        );
    }
    for path in &job.paths {
        if !path.is_absolute() {
            problem(
                "paths",
                format!("`{}` must be an absolute path", path.display()),
            );
        }
    }
    for pattern in &job.exclude {
        if let Err(e) = globset::Glob::new(pattern) {
            problem("exclude", format!("`{pattern}` is not a glob: {e}"));
        }
    }
    if !job.source.expose().is_empty() {
        problem(
            "source",
            "is for kind = \"postgres\"; a files job reads `paths`".into(),
        );
    }
    if !matches!(&job.databases, Databases::List(l) if l.is_empty()) {
        problem("databases", "is for kind = \"postgres\"".into());
    }
}

pub fn validate_storage(config: &Config, problem: &mut dyn FnMut(String, String)) {
    for (name, repo) in &config.repositories {
        let key = |k: &str| format!("repositories.{name}.{k}");
        if !is_valid_name(name) {
            problem(format!("repositories.{name}"), name_message());
        }
        if !SCHEMES.contains(&repo.scheme.as_str()) {
            problem(
                key("scheme"),
                format!(
                    "`{}` is not available in this build (use one of: {})",
                    repo.scheme,
                    SCHEMES.join(", ")
                ),
            );
        }
        if repo.scheme == "fs" {
            match repo.options.get("root") {
                Some(root) if root.starts_with('/') => {}
                Some(root) => problem(
                    key("options.root"),
                    format!("`{root}` must be an absolute path"),
                ),
                None => problem(
                    key("options"),
                    "an fs repository needs `root` (an absolute directory)".into(),
                ),
            }
            if repo.options.contains_key("atomic_write_dir") {
                problem(
                    key("options.atomic_write_dir"),
                    "is set by vigil (inside `root`, so renames stay on one filesystem); remove it"
                        .into(),
                );
            }
        }
        for (option, example) in required_options(&repo.scheme) {
            if !repo.options.contains_key(*option) {
                problem(
                    key("options"),
                    format!(
                        "a {} repository needs `{option}` (e.g. {option} = \"{example}\")",
                        repo.scheme
                    ),
                );
            }
        }
        if let Some(rate) = &repo.max_upload_rate
            && let Err(e) = super::storage::parse_rate(rate)
        {
            problem(key("max_upload_rate"), e);
        }
        if repo.max_concurrent_requests == Some(0) {
            problem(key("max_concurrent_requests"), "must be at least 1".into());
        }
        if repo.request_timeout.as_secs() < 1 {
            problem(key("request_timeout"), "must be at least 1s".into());
        }
        if repo.writable_interval.as_secs() < 1 {
            problem(key("writable_interval"), "must be at least 1s".into());
        }
        if repo.lease_ttl.as_secs() < 3 {
            problem(
                key("lease_ttl"),
                "must be at least 3s (the lease is renewed every third of it)".into(),
            );
        }
        if repo.temp_grace < std::time::Duration::from_secs(600) {
            problem(
                key("temp_grace"),
                "must be at least 10m (a live run's temp file must never look abandoned)".into(),
            );
        }
        if repo.part_size_mib == 0 {
            problem(key("part_size_mib"), "must be at least 1 (MiB)".into());
        }
        if repo.scheme == "s3" && repo.part_size_mib < 5 {
            problem(
                key("part_size_mib"),
                "must be at least 5 on s3 (S3's minimum part size for all but the last part)"
                    .into(),
            );
        }
        if repo.max_parts < 10 {
            problem(
                key("max_parts"),
                "must be at least 10 (the part size doubles every max_parts/10 parts)".into(),
            );
        }
        if repo.scheme == "s3" && repo.max_parts > 10_000 {
            problem(key("max_parts"), "S3 allows at most 10000 parts".into());
        }
        if let Some(encryption) = &repo.encryption {
            if encryption.recipients.is_empty() {
                problem(
                    key("encryption"),
                    "has no `recipients` (or `recipients_file`): refusing to write plaintext to a repository configured for encryption; add an age1… recipient or remove the section".into(),
                );
            }
            for r in &encryption.recipients {
                if age::x25519::Recipient::from_str(r).is_err() {
                    problem(
                        key("encryption.recipients"),
                        format!(
                            "`{r}` is not an age x25519 recipient (age1…; `age-keygen -y KEY` prints it)"
                        ),
                    );
                }
            }
        }
    }

    for (name, job) in &config.jobs {
        let key = |k: &str| format!("jobs.{name}.{k}");
        if !is_valid_name(name) {
            problem(format!("jobs.{name}"), name_message());
        }
        if !config.repositories.contains_key(&job.repository) {
            let known: Vec<&str> = config.repositories.keys().map(String::as_str).collect();
            problem(
                key("repository"),
                format!(
                    "no repository `{}` (configured: {})",
                    job.repository,
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        match job.kind {
            JobKind::Postgres | JobKind::PostgresPhysical => {
                let parsed = super::conninfo::parse(job.source.expose());
                if let Err(e) = &parsed {
                    problem(
                        key("source"),
                        format!("is not a valid PostgreSQL connection string: {e}"),
                    );
                } else if job.source.expose().is_empty() {
                    problem(
                        key("source"),
                        format!(
                            "is required for kind = \"{}\" (e.g. postgres://backup@db/orders)",
                            job.kind.as_str()
                        ),
                    );
                }
                for tls in parsed.iter().flat_map(|info| info.tls.file_problems()) {
                    problem(key("source"), tls.to_string());
                }
                if job.kind == JobKind::Postgres
                    && let Databases::List(list) = &job.databases
                    && list.is_empty()
                {
                    problem(
                        key("databases"),
                        "is empty (list database names, or \"all\")".into(),
                    );
                }
                if !job.paths.is_empty() {
                    problem(key("paths"), "is for kind = \"files\"".into());
                }
                // The server compresses a base backup, and only with zstd here.
                if job.kind == JobKind::PostgresPhysical && job.compression != Compression::Zstd {
                    problem(
                        key("compression"),
                        "must be \"zstd\" for kind = \"postgres-physical\" (the server compresses the base backup)".into(),
                    );
                }
            }
            JobKind::Files => validate_files_job(job, &mut |k, m| problem(key(k), m)),
            JobKind::Mirror => match &job.mirror_to {
                None => problem(
                    key("mirror_to"),
                    "a mirror job needs `mirror_to`: the repository to copy `repository` to".into(),
                ),
                Some(to) if to == &job.repository => problem(
                    key("mirror_to"),
                    "must differ from `repository` (a repository cannot mirror itself)".into(),
                ),
                Some(to) if !config.repositories.contains_key(to) => {
                    problem(key("mirror_to"), format!("no repository `{to}`"))
                }
                Some(_) => {
                    if !job.source.expose().is_empty() || !job.paths.is_empty() {
                        problem(
                            key("kind"),
                            "a mirror job copies a repository: remove `source` and `paths`".into(),
                        );
                    }
                }
            },
        }
        if job.kind != JobKind::Mirror && job.mirror_to.is_some() {
            problem(key("mirror_to"), "is for kind = \"mirror\"".into());
        }
        match (&job.schedule, job.every) {
            (Some(_), Some(_)) => problem(
                key("every"),
                "set either `schedule` or `every`, not both".into(),
            ),
            (None, None) => problem(
                key("schedule"),
                "set `schedule` (cron with seconds) or `every` (e.g. \"1h\")".into(),
            ),
            (Some(cron), None) => {
                if let Err(e) = parse_cron(cron) {
                    problem(
                        key("schedule"),
                        format!(
                            "`{cron}` is not a cron schedule: {e} (6 fields: sec min hour day month weekday, e.g. \"0 30 2 * * *\")"
                        ),
                    );
                }
            }
            (None, Some(every)) if every.as_secs() < 1 => {
                problem(key("every"), "must be at least 1s".into())
            }
            _ => {}
        }
        if chrono_tz::Tz::from_str(&job.timezone).is_err() {
            problem(
                key("timezone"),
                format!(
                    "`{}` is not an IANA time zone (e.g. \"Europe/Berlin\", \"UTC\")",
                    job.timezone
                ),
            );
        }
        let level = job.level();
        let range = match job.compression {
            Compression::Zstd => 1..=22,
            Compression::Gzip => 0..=9,
            Compression::Lz4 | Compression::None => 0..=0,
        };
        if job.compression_level.is_some() && !range.contains(&level) {
            problem(
                key("compression_level"),
                format!(
                    "{level} is out of range for {} ({}–{})",
                    job.compression.as_str(),
                    range.start(),
                    range.end()
                ),
            );
        }
        if job.compression_workers == Some(0) {
            problem(key("compression_workers"), "must be at least 1".into());
        }
        if let (Some(warn), Some(fail)) = (job.max_age, job.max_age_fail)
            && fail <= warn
        {
            problem(key("max_age_fail"), "must be longer than `max_age`".into());
        }
        if job.max_age.is_none() && job.max_age_fail.is_some() {
            problem(key("max_age_fail"), "needs `max_age`".into());
        }
        if job.wal_max_age_fail <= job.wal_max_age {
            problem(
                key("wal_max_age_fail"),
                "must be longer than `wal_max_age`".into(),
            );
        }
        if job.fail_after_failures == 0 {
            problem(
                key("fail_after_failures"),
                "must be at least 1 (1: the first failed run fails health)".into(),
            );
        }
        if job.stall_timeout.is_zero() || job.max_duration.is_zero() {
            problem(
                key("stall_timeout"),
                "`stall_timeout` and `max_duration` must be longer than 0s".into(),
            );
        }
        if let Some(verify) = &job.verify {
            super::verify::validate_verify(verify, &job.timezone, &key, problem);
        }
        let retention = &job.retention;
        if let Err(e) = crate::core::schedule::Schedule::from_parts(
            retention.schedule.as_deref(),
            retention.every,
            "UTC",
        ) {
            problem(key("retention.schedule"), e.to_string());
        }
        if let Some(bin) = &job.pg_dump
            && !bin.is_file()
        {
            problem(key("pg_dump"), format!("{} does not exist", bin.display()));
        }
    }
}

/// Names appear in paths, metric labels and check keys.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn name_message() -> String {
    "names use lowercase letters, digits, `-` and `_` (they appear in paths, metric labels and check keys)".into()
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

    const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n[repositories.local]\nscheme = \"fs\"\noptions = { root = \"/srv/backups\" }\n";
    const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn job(extra: &str) -> String {
        format!(
            "{BASE}[jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://backup@db/orders\"\ndatabases = [\"orders\"]\nrepository = \"local\"\n{extra}"
        )
    }

    #[test]
    fn a_complete_job_is_valid() {
        assert_eq!(
            keys(&job(
                "schedule = \"0 30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nmax_age = \"26h\"\n"
            )),
            Vec::<String>::new()
        );
    }

    #[test]
    fn schedule_problems() {
        assert_eq!(keys(&job("")), ["jobs.orders.schedule"]);
        assert_eq!(
            keys(&job("schedule = \"0 0 * * * *\"\nevery = \"1h\"\n")),
            ["jobs.orders.every"]
        );
        assert_eq!(
            keys(&job("schedule = \"30 2 * * *\"\n")),
            ["jobs.orders.schedule"]
        );
        assert_eq!(
            keys(&job("every = \"1h\"\ntimezone = \"Mars/Olympus\"\n")),
            ["jobs.orders.timezone"]
        );
    }

    #[test]
    fn wal_age_thresholds_default_and_must_be_ordered() {
        let src = job("every = \"1h\"\n");
        let config = parse(&src, Path::new("c.toml"), &HashMap::new()).unwrap();
        let orders = &config.jobs["orders"];
        assert_eq!(orders.wal_max_age.as_secs(), 15 * 60);
        assert_eq!(orders.wal_max_age_fail.as_secs(), 3600);
        assert_eq!(
            keys(&job("every = \"1h\"\nwal_max_age = \"2h\"\n")),
            ["jobs.orders.wal_max_age_fail"]
        );
        assert!(
            keys(&job(
                "every = \"1h\"\nwal_max_age = \"2h\"\nwal_max_age_fail = \"3h\"\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn unknown_repository_and_bad_names() {
        let src =
            job("every = \"1h\"\n").replace("repository = \"local\"", "repository = \"nope\"");
        assert_eq!(keys(&src), ["jobs.orders.repository"]);
        let src = job("every = \"1h\"\n").replace("[jobs.orders]", "[jobs.Orders]");
        assert_eq!(keys(&src), ["jobs.Orders"]);
    }

    #[test]
    fn half_configured_encryption_is_refused() {
        let src = format!(
            "{}[repositories.local.encryption]\nidentity_file = \"/k\"\n",
            job("every = \"1h\"\n")
        );
        assert_eq!(keys(&src), ["repositories.local.encryption"]);
        let src = format!(
            "{}[repositories.local.encryption]\nrecipients = [\"{RECIPIENT}\"]\n",
            job("every = \"1h\"\n")
        );
        assert!(keys(&src).is_empty(), "{:?}", keys(&src));
        let src = format!(
            "{}[repositories.local.encryption]\nrecipients = [\"age1nope\"]\n",
            job("every = \"1h\"\n")
        );
        assert_eq!(keys(&src), ["repositories.local.encryption.recipients"]);
    }

    #[test]
    fn databases_word_must_be_all() {
        let src =
            job("every = \"1h\"\n").replace("databases = [\"orders\"]", "databases = \"orders\"");
        let err = parse(&src, Path::new("c.toml"), &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("neither \"all\""), "{err}");
        let src =
            job("every = \"1h\"\n").replace("databases = [\"orders\"]", "databases = \"all\"");
        assert!(keys(&src).is_empty());
    }

    #[test]
    fn fs_needs_an_absolute_root_and_schemes_are_checked() {
        // A relative root is anchored at the config's directory; none at all is refused.
        let src = job("every = \"1h\"\n").replace("/srv/backups", "relative/dir");
        assert!(keys(&src).is_empty(), "{:?}", keys(&src));
        let src = job("every = \"1h\"\n").replace("options = { root = \"/srv/backups\" }\n", "");
        assert_eq!(keys(&src), ["repositories.local.options"]);
        let src = job("every = \"1h\"\n").replace("scheme = \"fs\"", "scheme = \"gopher\"");
        assert!(keys(&src).contains(&"repositories.local.scheme".to_string()));
    }
}
