//! Reading a config file: TOML with spans, `${VAR}` expansion, `*_file`
//! secrets, strict deserialisation, then [`validate`]. Every problem names
//! the key and, where the file has it, `file:line:column`.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::expand::{Env, expand};
use super::{Config, Secret, validate};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`admin.listen`), empty for file-level problems.
    pub key: String,
    /// 1-based line and column in the file, when known.
    pub position: Option<(usize, usize)>,
    pub message: String,
}

/// All the problems found in a config file at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        writeln!(
            f,
            "config {} has {count} problem{}:",
            self.path.display(),
            if count == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "  {}", self.path.display())?;
            if let Some((line, col)) = p.position {
                write!(f, ":{line}:{col}")?;
            }
            if p.key.is_empty() {
                writeln!(f, ": {}", p.message)?;
            } else {
                writeln!(f, ": `{}`: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads, expands, deserialises and validates the config at `path`.
pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        problems: vec![Problem {
            key: String::new(),
            position: None,
            message: format!(
                "cannot read the config file: {e} (pass --config FILE or set VIGIL_CONFIG)"
            ),
        }],
    })?;
    parse(&source, path, env)
}

/// Like [`load`], from text; `origin` names the file in messages and
/// anchors relative `*_file` paths.
pub fn parse(source: &str, origin: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        path: origin.to_owned(),
        problems,
    };
    let lines = LineIndex::new(source);
    let mut doc = DeTable::parse(source).map_err(|e| {
        fail(vec![Problem {
            key: String::new(),
            position: e.span().map(|s| lines.position(s.start)),
            message: e.message().to_owned(),
        }])
    })?;

    let mut problems = Vec::new();
    expand_table(doc.get_mut(), &mut Vec::new(), env, &lines, &mut problems);
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let mut config = deserialize_collecting(&doc, &lines, &mut problems);
    let Some(config) = config.as_mut() else {
        return Err(fail(problems));
    };
    if !problems.is_empty() {
        return Err(fail(problems));
    }

    let base = config_dir(origin);
    let base = base.as_path();
    resolve_relative_paths(config, base);
    resolve_secret_file(
        &mut config.catalog.password,
        &config.catalog.password_file,
        "catalog.password",
        base,
        &mut problems,
    );
    for (i, token) in config.admin.tokens.iter_mut().enumerate() {
        resolve_token_file(token, &format!("admin.tokens[{i}]"), base, &mut problems);
    }
    for (name, job) in &mut config.jobs {
        let key = format!("jobs.{name}.password");
        resolve_secret_file(
            &mut job.password,
            &job.password_file,
            &key,
            base,
            &mut problems,
        );
    }
    for (name, repo) in &mut config.repositories {
        resolve_option_files(name, repo, base, &mut problems, &mut config.secret_files);
    }
    record_secret_files(config, base);
    for (name, repo) in &config.repositories {
        if let Some(encryption) = &repo.encryption
            && let Some(file) = &encryption.identity_file
            && let Err(message) = super::identity::check_identity_file(file, &encryption.recipients)
        {
            problems.push(Problem {
                key: format!("repositories.{name}.encryption.identity_file"),
                position: None,
                message,
            });
        }
    }
    for (key, message) in validate(config) {
        problems.push(Problem {
            key,
            position: None,
            message,
        });
    }
    if problems.is_empty() {
        return Ok(config.clone());
    }
    for p in &mut problems {
        if p.position.is_none() {
            p.position = locate(doc.get_ref(), &p.key).map(|span| lines.position(span.start));
        }
    }
    Err(fail(problems))
}

/// The directory relative paths in the config are read from: the config
/// file's own (a symlink's target's), made absolute, so a command works
/// from any directory.
fn config_dir(origin: &Path) -> PathBuf {
    // A symlinked config (/etc/vigil/config.toml -> /srv/conf/vigil.toml)
    // reads its relative paths next to its target, where they were written.
    if let Ok(real) = std::fs::canonicalize(origin)
        && let Some(dir) = real.parent()
    {
        return dir.to_owned();
    }
    let dir = origin.parent().unwrap_or(Path::new(""));
    if dir.is_absolute() {
        return dir.to_owned();
    }
    match std::env::current_dir() {
        Ok(cwd) => cwd.join(dir),
        Err(_) => dir.to_owned(),
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

/// serde stops at the first error; to report them all, drop the offending
/// entry and try again until the document deserialises or nothing more can
/// be dropped.
fn deserialize_collecting(
    doc: &Spanned<DeTable<'_>>,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
) -> Option<Config> {
    let mut doc = doc.clone();
    for _ in 0..32 {
        match Config::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(config) => return Some(config),
            Err(e) => {
                let span = e.span();
                let key = span
                    .clone()
                    .and_then(|s| remove_entry_at(doc.get_mut(), &s, &mut Vec::new()));
                problems.push(Problem {
                    key: key.clone().unwrap_or_default(),
                    position: span.map(|s| lines.position(s.start)),
                    message: e.message().trim().to_owned(),
                });
                // An error not tied to one entry (a missing section) ends the search.
                key.as_ref()?;
            }
        }
    }
    None
}

/// Removes the innermost entry whose key or value covers `span`; returns
/// its dotted key. Table spans do not always cover their contents (a
/// `[section]` header), so every subtable is searched first.
fn remove_entry_at(
    table: &mut DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<String>,
) -> Option<String> {
    let covers = |r: Range<usize>| r.start <= span.start && span.end <= r.end;
    let mut hit = None;
    for (key, value) in table.iter_mut() {
        path.push(key.get_ref().to_string());
        if let DeValue::Table(inner) = value.get_mut()
            && let Some(found) = remove_entry_at(inner, span, path)
        {
            return Some(found);
        }
        if covers(key.span()) || covers(value.span()) {
            hit = Some(key.clone());
            break;
        }
        path.pop();
    }
    let key = hit?;
    table.remove(&key);
    Some(path.join("."))
}

fn expand_table(
    table: &mut DeTable<'_>,
    path: &mut Vec<String>,
    env: &dyn Env,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table.iter_mut() {
        path.push(key.get_ref().to_string());
        expand_value(value, path, env, lines, problems);
        path.pop();
    }
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &mut Vec<String>,
    env: &dyn Env,
    lines: &LineIndex,
    problems: &mut Vec<Problem>,
) {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded.into(),
            Err(e) => problems.push(Problem {
                key: path.join("."),
                position: Some(lines.position(span.start)),
                message: e.to_string(),
            }),
        },
        DeValue::Table(t) => expand_table(t, path, env, lines, problems),
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_value(item, path, env, lines, problems);
                path.pop();
            }
        }
        _ => {}
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

/// The span of a dotted key's value (or of the deepest table on its path).
fn locate(table: &DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut current = table;
    let mut found = None;
    for part in dotted.split('.') {
        let (key, value) = current.iter().find(|(k, _)| k.get_ref() == part)?;
        found = Some(key.span());
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            _ => return Some(key.span()),
        }
    }
    found
}

/// Byte offset → (line, column), both 1-based.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse_with(src: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(src, Path::new("/etc/vigil/config.toml"), &env)
    }

    const MINIMAL: &str = "[catalog]\nurl = \"postgres://vigil@127.0.0.1/vigil\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse_with(MINIMAL, &[]).unwrap();
        assert_eq!(
            c.admin.listen.to_string(),
            super::super::DEFAULT_ADMIN_LISTEN
        );
        assert_eq!(c.catalog.connect_timeout.as_secs(), 30);
        assert_eq!(c.health.interval.as_secs(), 15);
    }

    #[test]
    fn unknown_key_names_key_line_and_column() {
        let src = format!("{MINIMAL}\n[admin]\nlisten = \"127.0.0.1:1\"\nlistne = \"x\"\n");
        let err = parse_with(&src, &[]).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 1, "{text}");
        assert_eq!(err.problems[0].key, "admin.listne");
        assert_eq!(err.problems[0].position, Some((6, 1)));
        assert!(text.contains("/etc/vigil/config.toml:6:1"), "{text}");
        assert!(text.contains("unknown field `listne`"), "{text}");
    }

    #[test]
    fn reports_several_type_errors_at_once() {
        let src = format!(
            "{MINIMAL}pool_size = \"four\"\n[health]\ninterval = \"15 parsecs\"\ntimeout = \"1s\"\n[log]\nformat = \"xml\"\n"
        );
        let err = parse_with(&src, &[]).unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["catalog.pool_size", "health.interval", "log.format"],
            "{err}"
        );
        assert_eq!(err.problems[1].position, Some((5, 12)));
    }

    #[test]
    fn missing_variable_names_key_and_line() {
        let src = "[catalog]\nurl = \"postgres://${DB_HOST}/vigil\"\npassword = \"${PW}\"\n";
        let err = parse_with(src, &[("DB_HOST", "db")]).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].key, "catalog.password");
        assert_eq!(err.problems[0].position, Some((3, 12)));
        assert!(err.to_string().contains("`PW` is not set"));
        let ok = parse_with(src, &[("DB_HOST", "db"), ("PW", "s3cret")]).unwrap();
        assert_eq!(ok.catalog.password.unwrap().expose(), "s3cret");
        assert_eq!(ok.catalog.url.expose(), "postgres://db/vigil");
    }

    #[test]
    fn expanded_durations_parse() {
        let src = format!("{MINIMAL}[health]\ninterval = \"${{IVL:-20s}}\"\n");
        assert_eq!(parse_with(&src, &[]).unwrap().health.interval.as_secs(), 20);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse_with("[catalog\nurl = 1\n", &[]).unwrap_err();
        assert_eq!(err.problems[0].position.map(|p| p.0), Some(1));
    }

    #[test]
    fn missing_required_section_is_reported() {
        let err = parse_with("[admin]\n", &[]).unwrap_err();
        assert!(err.to_string().contains("catalog"), "{err}");
    }

    #[test]
    fn secret_file_is_read_and_conflicts_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\n").unwrap();
        let origin = dir.path().join("config.toml");
        let src = format!("{MINIMAL}password_file = \"pw\"\n");
        let c = parse(&src, &origin, &HashMap::new()).unwrap();
        assert_eq!(c.catalog.password.unwrap().expose(), "from-file");

        let src = format!("{MINIMAL}password = \"x\"\npassword_file = \"pw\"\n");
        let err = parse(&src, &origin, &HashMap::new()).unwrap_err();
        assert_eq!(err.problems[0].key, "catalog.password_file");
        assert_eq!(err.problems[0].position, Some((4, 1)));

        let src = format!("{MINIMAL}password_file = \"missing\"\n");
        let err = parse(&src, &origin, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn a_symlinked_config_reads_relative_paths_next_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let links = dir.path().join("etc");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&links).unwrap();
        let target = real.join("vigil.toml");
        std::fs::write(
            &target,
            format!("[daemon]\nstate_dir = \"state\"\n{MINIMAL}"),
        )
        .unwrap();
        let link = links.join("config.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let c = load(&link, &HashMap::new()).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(c.daemon.state_dir, real.join("state"));
    }

    #[test]
    fn relative_paths_are_anchored_at_the_config_directory() {
        let src = format!(
            "[daemon]\nstate_dir = \"state\"\n[log]\nfile = \"log/vigil.log\"\n[journal]\ndir = \"/abs/journal\"\n{MINIMAL}\
             [repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"repo\" }}\n\
             [repositories.remote]\nscheme = \"s3\"\noptions = {{ root = \"in/bucket\", bucket = \"b\" }}\n\
             [jobs.tree]\nkind = \"files\"\npaths = [\"srv/app\", \"/etc\"]\nrepository = \"local\"\nevery = \"1h\"\n"
        );
        let c = parse_with(&src, &[]).unwrap();
        let etc = Path::new("/etc/vigil");
        assert_eq!(c.daemon.state_dir, etc.join("state"));
        assert_eq!(c.log.file.unwrap(), etc.join("log/vigil.log"));
        assert_eq!(c.journal.dir.unwrap(), Path::new("/abs/journal"));
        assert_eq!(c.repositories["local"].options["root"], "/etc/vigil/repo");
        assert_eq!(
            c.repositories["remote"].options["root"], "in/bucket",
            "a path inside the service"
        );
        assert_eq!(
            c.jobs["tree"].paths,
            [etc.join("srv/app"), PathBuf::from("/etc")]
        );

        // A relative config path is made absolute first.
        let cwd = std::env::current_dir().unwrap();
        let c = parse(MINIMAL, Path::new("sub/vigil.toml"), &HashMap::new()).unwrap();
        assert_eq!(
            c.daemon.state_dir,
            Path::new("/var/lib/vigil"),
            "defaults stay"
        );
        let src = format!("[daemon]\nstate_dir = \"s\"\n{MINIMAL}");
        let c = parse(&src, Path::new("vigil.toml"), &HashMap::new()).unwrap();
        assert_eq!(c.daemon.state_dir, cwd.join("s"));
    }

    #[test]
    fn identity_file_is_relative_to_the_config_and_must_match_the_recipients() {
        use age::secrecy::ExposeSecret;
        let dir = tempfile::tempdir().unwrap();
        let key = age::x25519::Identity::generate();
        std::fs::write(
            dir.path().join("age.key"),
            format!("{}\n", key.to_string().expose_secret()),
        )
        .unwrap();
        let origin = dir.path().join("vigil.toml");
        let repo = |recipient: &str| {
            format!(
                "{MINIMAL}[repositories.r]\nscheme = \"fs\"\noptions = {{ root = \"/srv/b\" }}\n\
                 [repositories.r.encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"age.key\"\n"
            )
        };
        let mine = key.to_public().to_string();
        let c = parse(&repo(&mine), &origin, &HashMap::new()).unwrap();
        let encryption = c.repositories["r"].encryption.clone().unwrap();
        assert_eq!(
            encryption.identity_file.unwrap(),
            dir.path().join("age.key")
        );

        let other = age::x25519::Identity::generate().to_public().to_string();
        let err = parse(&repo(&other), &origin, &HashMap::new()).unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert_eq!(
            err.problems[0].key,
            "repositories.r.encryption.identity_file"
        );
        let text = err.to_string();
        assert!(text.contains(&mine) && text.contains(&other), "{text}");
        assert!(text.contains("vigil.toml:8:1"), "names the line: {text}");
    }

    #[test]
    fn line_index_positions() {
        let idx = LineIndex::new("ab\ncd\n");
        assert_eq!(idx.position(0), (1, 1));
        assert_eq!(idx.position(3), (2, 1));
        assert_eq!(idx.position(4), (2, 2));
    }
}
