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
use super::{Config, validate};

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
    super::files::resolve(config, base, &mut problems);
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

/// The span of a dotted key's value (or of the deepest table on its path).
fn locate(table: &DeTable<'_>, dotted: &str) -> Option<Range<usize>> {
    let mut current = table;
    let mut found = None;
    for part in dotted.split('.') {
        // `webhooks[1]`: the second table of an array of tables.
        let (name, index) = match part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            Some((name, i)) => (name, i.parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, value) = current.iter().find(|(k, _)| k.get_ref() == name)?;
        found = Some(key.span());
        let value = match (value.get_ref(), index) {
            (DeValue::Array(items), Some(i)) => match items.get(i) {
                Some(item) => {
                    found = Some(item.span());
                    item
                }
                None => return found,
            },
            _ => value,
        };
        match value.get_ref() {
            DeValue::Table(inner) => current = inner,
            _ => return found,
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
