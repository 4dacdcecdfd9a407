//! The files a config names: relative paths anchored at the config's
//! directory, `*_file` secrets read into their options, and the list of
//! files secrets came from (for the exposure check).

use std::path::{Path, PathBuf};

use super::load::Problem;
use super::{Config, Secret};

/// Anchors the config's relative paths at `base` and reads every `*_file`
/// secret; each unreadable or conflicting file is one more problem.
pub(super) fn resolve(config: &mut Config, base: &Path, problems: &mut Vec<Problem>) {
    resolve_relative_paths(config, base);
    resolve_secret_file(
        &mut config.catalog.password,
        &config.catalog.password_file,
        "catalog.password",
        base,
        problems,
    );
    for (i, token) in config.admin.tokens.iter_mut().enumerate() {
        resolve_token_file(token, &format!("admin.tokens[{i}]"), base, problems);
    }
    for (name, job) in &mut config.jobs {
        let key = format!("jobs.{name}.password");
        resolve_secret_file(&mut job.password, &job.password_file, &key, base, problems);
    }
    for (name, repo) in &mut config.repositories {
        resolve_option_files(name, repo, base, problems, &mut config.secret_files);
    }
    for (i, hook) in config.notify.webhooks.iter_mut().enumerate() {
        resolve_webhook_files(hook, &format!("notify.webhooks[{i}]"), base, problems);
    }
    record_secret_files(config, base);
}

/// A webhook's `secret_file` and `header_files` read into its secret and headers.
fn resolve_webhook_files(
    hook: &mut super::WebhookConfig,
    key: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) {
    hook.secret = None;
    resolve_secret_file(
        &mut hook.secret,
        &hook.secret_file,
        &format!("{key}.secret"),
        base,
        problems,
    );
    hook.headers.clear();
    for (header, file) in &hook.header_files {
        let path = base.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = Secret::new(text.trim_end_matches(['\n', '\r']));
                hook.headers.insert(header.clone(), value);
            }
            Err(e) => problems.push(Problem {
                key: format!("{key}.header_files.{header}"),
                position: None,
                message: format!(
                    "cannot read {}: {e} (check the path and that vigil's user may read it)",
                    path.display()
                ),
            }),
        }
    }
}

/// Anchors every relative path of the config at `base` (the config file's
/// directory). `*_file` secrets and `recipients_file` are joined where they
/// are read.
fn resolve_relative_paths(config: &mut Config, base: &Path) {
    let anchor = |path: &mut PathBuf| {
        if path.is_relative() && !path.as_os_str().is_empty() {
            *path = base.join(&*path);
        }
    };
    anchor(&mut config.daemon.state_dir);
    if let Some(file) = &mut config.log.file {
        anchor(file);
    }
    if let Some(dir) = &mut config.journal.dir {
        anchor(dir);
    }
    if let Some(file) = &mut config.journal.signing_key_file {
        anchor(file);
    }
    for repo in config.repositories.values_mut() {
        if let Some(file) = repo
            .encryption
            .as_mut()
            .and_then(|e| e.identity_file.as_mut())
        {
            anchor(file);
        }
        // fs's directory and sftp's private key are local paths; other
        // schemes' `root` is a path inside the service.
        let local = match repo.scheme.as_str() {
            "fs" => Some("root"),
            "sftp" => Some("key"),
            _ => None,
        };
        if let Some(value) = local.and_then(|key| repo.options.get_mut(key))
            && !value.is_empty()
            && Path::new(value.as_str()).is_relative()
        {
            *value = base.join(value.as_str()).display().to_string();
        }
    }
    for job in config.jobs.values_mut() {
        job.paths.iter_mut().for_each(anchor);
        // A bare `pg_dump` is looked up on PATH; `bin/pg_dump` is a path.
        if let Some(tool) = &mut job.pg_dump
            && tool.components().count() > 1
        {
            anchor(tool);
        }
    }
}

/// `x` and `x_file` are alternatives; the file's content (trailing newline
/// trimmed) becomes `x`.
fn resolve_secret_file(
    value: &mut Option<Secret>,
    file: &Option<PathBuf>,
    key: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) {
    let Some(file) = file else { return };
    if value.is_some() {
        problems.push(Problem {
            key: format!("{key}_file"),
            position: None,
            message: format!("set either `{key}` or `{key}_file`, not both"),
        });
        return;
    }
    let path = base.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => *value = Some(Secret::new(text.trim_end_matches(['\n', '\r']))),
        Err(e) => problems.push(Problem {
            key: format!("{key}_file"),
            position: None,
            message: format!(
                "cannot read {}: {e} (check the path and that vigil's user may read it)",
                path.display()
            ),
        }),
    }
}

/// Hashes a `token_file`'s token into `token_sha256`; the token itself is
/// never kept.
fn resolve_token_file(
    token: &mut super::TokenConfig,
    key: &str,
    base: &Path,
    problems: &mut Vec<Problem>,
) {
    let Some(file) = &token.token_file else {
        return;
    };
    let mut problem = |message: String| {
        problems.push(Problem {
            key: format!("{key}.token_file"),
            position: None,
            message,
        })
    };
    if token.token_sha256.is_some() {
        return problem("set either `token_sha256` or `token_file`, not both".into());
    }
    let path = base.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => {
            problem(format!("{} is empty: put the token in it", path.display()))
        }
        Ok(text) => {
            token.token_sha256 = Some(hex::encode(crate::core::auth::hash_token(text.trim())))
        }
        Err(e) => problem(format!(
            "cannot read {}: {e} (check the path and that vigil's user may read it)",
            path.display()
        )),
    }
}

/// Reads `<option>_file` options into `<option>`, and `recipients_file`
/// into the recipients.
/// The files secrets were read from (option `*_file`s are recorded as
/// they are resolved, since they leave the options).
fn record_secret_files(config: &mut Config, base: &Path) {
    let mut files = Vec::new();
    if let Some(f) = &config.catalog.password_file {
        files.push(("catalog.password_file".to_owned(), base.join(f)));
    }
    for (i, token) in config.admin.tokens.iter().enumerate() {
        if let Some(f) = &token.token_file {
            files.push((format!("admin.tokens[{i}].token_file"), base.join(f)));
        }
    }
    for (name, job) in &config.jobs {
        if let Some(f) = &job.password_file {
            files.push((format!("jobs.{name}.password_file"), base.join(f)));
        }
    }
    for (name, repo) in &config.repositories {
        if let Some(f) = repo
            .encryption
            .as_ref()
            .and_then(|e| e.identity_file.as_ref())
        {
            files.push((
                format!("repositories.{name}.encryption.identity_file"),
                base.join(f),
            ));
        }
    }
    if let Some(f) = &config.journal.signing_key_file {
        files.push(("journal.signing_key_file".to_owned(), base.join(f)));
    }
    for (i, hook) in config.notify.webhooks.iter().enumerate() {
        let key = format!("notify.webhooks[{i}]");
        if let Some(f) = &hook.secret_file {
            files.push((format!("{key}.secret_file"), base.join(f)));
        }
        for (header, f) in &hook.header_files {
            files.push((format!("{key}.header_files.{header}"), base.join(f)));
        }
    }
    config.secret_files.extend(files);
}

fn resolve_option_files(
    name: &str,
    repo: &mut super::RepositoryConfig,
    base: &Path,
    problems: &mut Vec<Problem>,
    secret_files: &mut Vec<(String, PathBuf)>,
) {
    let file_keys: Vec<String> = repo
        .options
        .keys()
        .filter(|k| k.ends_with("_file"))
        .cloned()
        .collect();
    for file_key in file_keys {
        let target = file_key.trim_end_matches("_file").to_owned();
        let key = format!("repositories.{name}.options.{file_key}");
        let mut value = None;
        let path = PathBuf::from(repo.options.remove(&file_key).unwrap_or_default());
        secret_files.push((key.clone(), base.join(&path)));
        if repo.options.contains_key(&target) {
            problems.push(Problem {
                key,
                position: None,
                message: format!("set either `{target}` or `{file_key}`, not both"),
            });
            continue;
        }
        resolve_secret_file(
            &mut value,
            &Some(path),
            key.trim_end_matches("_file"),
            base,
            problems,
        );
        if let Some(value) = value {
            repo.options.insert(target, value.expose().to_owned());
        }
    }
    if let Some(encryption) = &mut repo.encryption
        && let Some(file) = &encryption.recipients_file
    {
        let path = base.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => encryption.recipients.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            ),
            Err(e) => problems.push(Problem {
                key: format!("repositories.{name}.encryption.recipients_file"),
                position: None,
                message: format!("cannot read {}: {e}", path.display()),
            }),
        }
    }
}
