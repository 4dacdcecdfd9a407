//! PostgreSQL client tools (pg_dump, pg_dumpall, pg_restore): finding them,
//! their versions, and handing them a connection without secrets on argv.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;
use tokio_postgres::config::Host;

/// The newest `/usr/lib/postgresql/<major>/bin` (Debian's layout, off
/// PATH) for which `accept` holds.
pub fn newest_debian_bin_dir(accept: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let dir = e.path().join("bin");
            accept(&dir).then_some((version, dir))
        })
        .max()
        .map(|(_, dir)| dir)
}

/// `tool` from the newest PostgreSQL installation, else from PATH.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    if let Some(dir) = newest_debian_bin_dir(|d| d.join(tool).is_file()) {
        return Some(dir.join(tool));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → (15, "15.18").
pub fn parse_version(output: &str) -> Option<(u32, String)> {
    let token = output
        .split_whitespace()
        .find(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let major = token.split('.').next()?.parse().ok()?;
    Some((major, token.to_owned()))
}

/// Asking a PostgreSQL tool its version.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("cannot run {}: {source}", tool.display())]
    Run {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the version of {}: {output:?}", tool.display())]
    Version { tool: PathBuf, output: String },
}

/// Runs `tool --version`.
pub async fn tool_version(tool: &Path) -> Result<(u32, String), ToolError> {
    let out = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| ToolError::Run {
            tool: tool.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_version(&text).ok_or_else(|| ToolError::Version {
        tool: tool.to_owned(),
        output: text.into_owned(),
    })
}

/// The libpq environment of one tool run. A password travels in a 0600
/// password file named by `PGPASSFILE` (removed when this is dropped):
/// never on the command line, and never in the environment, which `ps e`
/// shows to root and to the same user.
#[derive(Debug)]
pub struct LibpqEnv {
    vars: Vec<(String, String)>,
    _passfile: Option<tempfile::NamedTempFile>,
}

impl std::ops::Deref for LibpqEnv {
    type Target = [(String, String)];

    fn deref(&self) -> &Self::Target {
        &self.vars
    }
}

/// One `.pgpass` line matching any connection (the file serves one run):
/// `:` and `\` are escaped as libpq expects.
fn passfile_line(password: &str) -> String {
    let escaped = password.replace('\\', "\\\\").replace(':', "\\:");
    format!("*:*:*:*:{escaped}\n")
}

/// The private password file could not be written.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write a private password file for the PostgreSQL tools in {}: {source} (set TMPDIR to a writable directory)",
    dir.display()
)]
pub struct PassFileError {
    pub dir: PathBuf,
    pub source: std::io::Error,
}

/// libpq environment for a connection string; the password (given, or
/// from the string) goes to a private password file.
pub fn libpq_env(
    info: &crate::config::conninfo::ConnInfo,
    password: Option<&str>,
) -> Result<LibpqEnv, PassFileError> {
    use std::io::Write;
    let config = &info.pg;
    let mut env = connection_env(config);
    env.extend(crate::pgconn::libpq_tls_env(&info.tls));
    let password = password.map(str::to_owned).or_else(|| {
        config
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    });
    let passfile = match password {
        Some(password) => {
            let failed = |source| PassFileError {
                dir: std::env::temp_dir(),
                source,
            };
            // tempfile creates it 0600.
            let mut file = tempfile::Builder::new()
                .prefix("vigil-pgpass-")
                .tempfile()
                .map_err(failed)?;
            file.write_all(passfile_line(&password).as_bytes())
                .and_then(|()| file.flush())
                .map_err(failed)?;
            env.push(("PGPASSFILE".into(), file.path().display().to_string()));
            Some(file)
        }
        None => None,
    };
    Ok(LibpqEnv {
        vars: env,
        _passfile: passfile,
    })
}

/// Host, port, user, application and timeout, without secrets.
fn connection_env(config: &tokio_postgres::Config) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        env.push(("PGHOST".into(), hosts.join(",")));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        env.push(("PGPORT".into(), ports.join(",")));
    }
    if let Some(user) = config.get_user() {
        env.push(("PGUSER".into(), user.to_owned()));
    }
    if let Some(app) = config.get_application_name() {
        env.push(("PGAPPNAME".into(), app.to_owned()));
    } else {
        env.push(("PGAPPNAME".into(), "vigil".into()));
    }
    if let Some(timeout) = config.get_connect_timeout() {
        env.push((
            "PGCONNECT_TIMEOUT".into(),
            timeout.as_secs().max(1).to_string(),
        ));
    }
    env
}

pub use crate::config::conninfo::describe_host;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        assert_eq!(
            parse_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some((15, "15.18".into()))
        );
        assert_eq!(
            parse_version("pg_restore (PostgreSQL) 16.2\n"),
            Some((16, "16.2".into()))
        );
        assert_eq!(parse_version("nonsense"), None);
    }

    #[test]
    fn passwords_go_to_the_environment() {
        let info =
            crate::config::conninfo::parse("postgres://backup:s3cret@db.internal:6432/orders")
                .unwrap();
        let config = &info.pg;
        let env = libpq_env(&info, None).unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.to_owned())
        };
        assert_eq!(get("PGHOST").as_deref(), Some("db.internal"));
        assert_eq!(get("PGPORT").as_deref(), Some("6432"));
        assert_eq!(get("PGUSER").as_deref(), Some("backup"));
        assert_eq!(get("PGPASSWORD"), None, "never in the environment");
        let passfile = std::path::PathBuf::from(get("PGPASSFILE").unwrap());
        assert_eq!(
            std::fs::read_to_string(&passfile).unwrap(),
            "*:*:*:*:s3cret\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&passfile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(env);
        assert!(!passfile.exists(), "removed after the run");
        let env = libpq_env(&info, Some(r"a:b\c")).unwrap();
        let passfile = env.iter().find(|(k, _)| k == "PGPASSFILE").unwrap();
        assert_eq!(
            std::fs::read_to_string(&passfile.1).unwrap(),
            "*:*:*:*:a\\:b\\\\c\n"
        );
        assert_eq!(describe_host(config), "db.internal:6432");
    }
}
