//! `[jobs.<name>.verify]`: reading its sizes ("10 GiB" or a plain number
//! of bytes) and checking its keys.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::VerifySchedule;

/// Parses a size like `10 GiB`, `500 MB`, `64KiB` or `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bytes = super::bytes::parse_bytes(text, "a size (e.g. \"10 GiB\", \"500 MB\", 1048576)")?;
    if !(1.0..=1.8e19).contains(&bytes) {
        return Err(format!("`{text}` must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// A size as TOML gives it: a plain integer of bytes or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Bytes(u64),
    Text(String),
}

/// `deserialize_with` for an optional size key.
pub fn size_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<RawSize>::deserialize(d)? {
        None => Ok(None),
        Some(RawSize::Bytes(0)) => Err(serde::de::Error::custom("must be at least 1 byte")),
        Some(RawSize::Bytes(n)) => Ok(Some(n)),
        Some(RawSize::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// `[jobs.<job>.verify]`: exactly one of `schedule` and `every`, a cron
/// that parses, and a `reverify_after` of at least a minute. `key` makes
/// the full key of a field.
pub fn validate_verify(
    verify: &VerifySchedule,
    timezone: &str,
    key: &dyn Fn(&str) -> String,
    problem: &mut dyn FnMut(String, String),
) {
    match (&verify.schedule, verify.every) {
        (Some(_), Some(_)) => problem(
            key("verify.every"),
            "set either `schedule` or `every`, not both".into(),
        ),
        (None, None) => problem(
            key("verify"),
            "set `schedule` (cron with seconds) or `every` (e.g. \"1d\") for scheduled verification"
                .into(),
        ),
        (None, Some(every)) if every < Duration::from_secs(1) => {
            problem(key("verify.every"), "must be at least 1s".into())
        }
        (schedule, every) => {
            if let Err(e) =
                crate::core::schedule::Schedule::from_parts(schedule.as_deref(), every, timezone)
            {
                problem(
                    key("verify.schedule"),
                    format!(
                        "{e} (6 fields: sec min hour day month weekday, e.g. \"0 0 4 * * *\")"
                    ),
                );
            }
        }
    }
    if verify.reverify_after < Duration::from_secs(60) {
        problem(
            key("verify.reverify_after"),
            "must be at least 1m (how long a good read of an object counts)".into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::*;
    use crate::config::parse;

    #[test]
    fn sizes_read_with_and_without_units() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("10 GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500 MB"), Ok(500_000_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("5 parsecs").unwrap_err().contains("not a unit"));
        assert!(parse_size("0").is_err());
    }

    const BASE: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n\
        [repositories.local]\nscheme = \"fs\"\noptions = { root = \"/srv/backups\" }\n\
        [jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://backup@db/orders\"\n\
        databases = [\"orders\"]\nrepository = \"local\"\nevery = \"1h\"\n[jobs.orders.verify]\n";

    fn load(verify: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        parse(
            &format!("{BASE}{verify}"),
            Path::new("c.toml"),
            &HashMap::new(),
        )
    }

    fn problems(verify: &str) -> Vec<(String, String)> {
        match load(verify) {
            Ok(_) => vec![],
            Err(e) => {
                let text = e.to_string();
                e.problems
                    .into_iter()
                    .map(|p| (p.key, text.clone()))
                    .collect()
            }
        }
    }

    #[test]
    fn defaults_and_sizes_as_number_or_text() {
        let config = load("every = \"1d\"\n").unwrap();
        let verify = config.jobs["orders"].verify.clone().unwrap();
        assert_eq!(verify.max_bytes_per_run, None, "no limit by default");
        assert_eq!(verify.reverify_after, Duration::from_secs(7 * 86_400));
        let config = load("every = \"1d\"\nmax_bytes_per_run = \"10 GiB\"\n").unwrap();
        let verify = config.jobs["orders"].verify.clone().unwrap();
        assert_eq!(verify.max_bytes_per_run, Some(10 << 30));
        let config = load("every = \"1d\"\nmax_bytes_per_run = 4096\n").unwrap();
        let verify = config.jobs["orders"].verify.clone().unwrap();
        assert_eq!(verify.max_bytes_per_run, Some(4096));
    }

    #[test]
    fn problems_name_the_key_and_the_line() {
        let both = problems("every = \"1d\"\nschedule = \"0 0 4 * * *\"\n");
        assert_eq!(both.len(), 1, "{both:?}");
        assert_eq!(both[0].0, "jobs.orders.verify.every");
        assert!(both[0].1.contains("c.toml:"), "{}", both[0].1);
        let none = problems("reverify_after = \"2d\"\n");
        assert_eq!(none[0].0, "jobs.orders.verify", "{none:?}");
        let cron = problems("schedule = \"0 4 * * *\"\n");
        assert_eq!(cron[0].0, "jobs.orders.verify.schedule", "{cron:?}");
        let short = problems("every = \"1d\"\nreverify_after = \"10s\"\n");
        assert_eq!(short[0].0, "jobs.orders.verify.reverify_after", "{short:?}");
        let size = problems("every = \"1d\"\nmax_bytes_per_run = \"lots\"\n");
        assert_eq!(size.len(), 1, "{size:?}");
        assert!(size[0].1.contains("not a size"), "{}", size[0].1);
    }
}
