//! libpq's TLS parameters in a connection string (URL or key=value).
//!
//! tokio-postgres 0.7 knows only `sslmode` disable/prefer/require and
//! refuses `sslrootcert`, `sslcert`, `sslkey`: vigil reads these itself,
//! hands tokio-postgres the rest, and keeps libpq's meaning of each mode.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// libpq's `sslmode`, default `prefer`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    Disable,
    Allow,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Allow => "allow",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// The connection fails rather than going on in clear text.
    pub fn requires_tls(self) -> bool {
        self >= Self::Require
    }
}

/// Where trusted CA certificates come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the platform's trust store.
    System,
}

impl std::fmt::Display for RootCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::System => f.write_str("system"),
        }
    }
}

/// The TLS half of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: SslMode,
    /// As written; see [`TlsParams::root_cert`] for libpq's default.
    pub root_cert: Option<RootCert>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// A connection string split into what tokio-postgres reads and the TLS
/// parameters vigil applies itself.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub pg: tokio_postgres::Config,
    pub tls: TlsParams,
}

#[derive(Debug, Error)]
pub enum ConnInfoError {
    #[error(
        "invalid sslmode value \"{0}\" (disable, allow, prefer, require, verify-ca or verify-full)"
    )]
    BadMode(String),
    #[error("{0}")]
    Parse(#[source] tokio_postgres::Error),
    #[error("unterminated quoted value for `{0}`")]
    Unterminated(String),
}

/// A TLS file named in a connection string that libpq would refuse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TlsFileProblem {
    #[error(
        "root certificate file {path} does not exist: provide it, use sslrootcert=system for the platform's trusted roots, or use sslmode=require to encrypt without verifying the server"
    )]
    MissingRootCert { path: PathBuf },
    #[error("{key} file {path} cannot be read: {reason}")]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "sslkey file {path} has group or world access (mode {mode:04o}): chmod 0600 it (or 0640 owned by root)"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error(
        "sslcert is set but sslkey is not (or the reverse): give both for a client certificate"
    )]
    CertWithoutKey,
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits a libpq connection string (URL or key=value).
pub fn parse(conninfo: &str) -> Result<ConnInfo, ConnInfoError> {
    let (rest, pairs) = if is_url(conninfo) {
        split_url(conninfo)
    } else {
        split_keywords(conninfo)?
    };
    let mut tls = TlsParams::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => {
                tls.mode = SslMode::parse(&value).ok_or(ConnInfoError::BadMode(value))?;
            }
            "sslrootcert" if value == "system" => tls.root_cert = Some(RootCert::System),
            "sslrootcert" => tls.root_cert = Some(RootCert::File(value.into())),
            "sslcert" => tls.cert = Some(value.into()),
            "sslkey" => tls.key = Some(value.into()),
            _ => {}
        }
    }
    let mut pg: tokio_postgres::Config = rest.parse().map_err(ConnInfoError::Parse)?;
    pg.ssl_mode(transport_mode(&pg, tls.mode));
    Ok(ConnInfo { pg, tls })
}

/// What tokio-postgres should do on the wire: TLS is never tried over a
/// unix socket (libpq ignores sslmode there, and the server says no);
/// `allow` is treated as `prefer` (TLS first, clear text if refused).
fn transport_mode(pg: &tokio_postgres::Config, mode: SslMode) -> tokio_postgres::config::SslMode {
    use tokio_postgres::config::{Host, SslMode as Wire};
    let only_sockets =
        !pg.get_hosts().is_empty() && pg.get_hosts().iter().all(|h| matches!(h, Host::Unix(_)));
    match mode {
        _ if only_sockets => Wire::Disable,
        SslMode::Disable => Wire::Disable,
        SslMode::Allow | SslMode::Prefer => Wire::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
    }
}

impl TlsParams {
    /// libpq's root certificate: the one named, else `~/.postgresql/root.crt`
    /// when the mode verifies, or when it exists (then `require` verifies the
    /// chain as libpq does).
    pub fn root_cert(&self) -> Option<RootCert> {
        if let Some(root) = &self.root_cert {
            return Some(root.clone());
        }
        let default = default_root_cert()?;
        (self.mode >= SslMode::VerifyCa || (self.mode == SslMode::Require && default.exists()))
            .then_some(RootCert::File(default))
    }

    /// The server's chain is checked against a root.
    pub fn verifies_chain(&self) -> bool {
        self.mode >= SslMode::VerifyCa
            || (self.mode == SslMode::Require && self.root_cert().is_some())
    }

    /// Files libpq would refuse, checked at config load so that a typo
    /// shows before the first backup.
    pub fn file_problems(&self) -> Vec<TlsFileProblem> {
        let mut problems = Vec::new();
        if self.mode == SslMode::Disable {
            return problems;
        }
        if let Some(RootCert::File(path)) = self.root_cert() {
            if !path.exists() {
                problems.push(TlsFileProblem::MissingRootCert { path });
            } else if let Err(e) = std::fs::File::open(&path) {
                problems.push(unreadable("sslrootcert", &path, &e));
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = std::fs::File::open(cert) {
                    problems.push(unreadable("sslcert", cert, &e));
                }
                if let Some(problem) = key_problem(key) {
                    problems.push(problem);
                }
            }
            (None, None) => {}
            _ => problems.push(TlsFileProblem::CertWithoutKey),
        }
        problems
    }
}

fn unreadable(key: &'static str, path: &Path, e: &std::io::Error) -> TlsFileProblem {
    TlsFileProblem::Unreadable {
        key,
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// libpq's rule: no group/world access, or group read only when root owns it
/// (a key shared with a service group through root:group 0640).
fn key_problem(path: &Path) -> Option<TlsFileProblem> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(unreadable("sslkey", path, &e)),
    };
    if let Err(e) = std::fs::File::open(path) {
        return Some(unreadable("sslkey", path, &e));
    }
    let mode = meta.mode() & 0o777;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    (mode & !allowed != 0).then(|| TlsFileProblem::KeyTooOpen {
        path: path.to_owned(),
        mode,
    })
}

fn default_root_cert() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".postgresql/root.crt"))
}

fn is_url(conninfo: &str) -> bool {
    conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://")
}

/// The URL without the TLS query parameters, and those parameters decoded.
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&') {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let key = decode(key);
        if TLS_KEYS.contains(&key.as_str()) {
            taken.push((key, decode(value)));
        } else {
            kept.push(part);
        }
    }
    if kept.is_empty() {
        (base.to_owned(), taken)
    } else {
        (format!("{base}?{}", kept.join("&")), taken)
    }
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

/// The key=value string without the TLS keywords, and those keywords.
fn split_keywords(conninfo: &str) -> Result<(String, Vec<(String, String)>), ConnInfoError> {
    let mut rest = String::new();
    let mut taken = Vec::new();
    let mut chars = conninfo.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            // Not key=value: tokio-postgres reports it.
            rest.push_str(&conninfo[start..]);
            break;
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let value = read_value(&mut chars, &key)?;
        let end = chars.peek().map_or(conninfo.len(), |(i, _)| *i);
        if TLS_KEYS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            rest.push_str(&conninfo[start..end]);
            rest.push(' ');
        }
    }
    Ok((rest.trim_end().to_owned(), taken))
}

/// One value: 'quoted' (with \' and \\) or up to the next space.
fn read_value(
    chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>,
    key: &str,
) -> Result<String, ConnInfoError> {
    let mut value = String::new();
    let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
    loop {
        match chars.next() {
            None if quoted => return Err(ConnInfoError::Unterminated(key.to_owned())),
            None => break,
            Some((_, '\'')) if quoted => break,
            Some((_, c)) if !quoted && c.is_whitespace() => break,
            Some((_, '\\')) => {
                if let Some((_, c)) = chars.next() {
                    value.push(c);
                }
            }
            Some((_, c)) => value.push(c),
        }
    }
    Ok(value)
}

/// `host:port` of a connection, for manifests and messages (no credentials).
pub fn describe_host(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_their_other_parameters() {
        let info = parse(
            "postgres://u:p@db.internal:6432/orders?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(info.tls.mode, SslMode::VerifyFull);
        assert_eq!(
            info.tls.root_cert,
            Some(RootCert::File("/etc/ca.pem".into()))
        );
        assert_eq!(info.tls.cert, Some("/c.pem".into()));
        assert_eq!(info.tls.key, Some("/k.pem".into()));
        assert_eq!(info.pg.get_application_name(), Some("x"));
        assert_eq!(info.pg.get_dbname(), Some("orders"));
        assert_eq!(
            info.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn keyword_strings_with_quotes() {
        let info = parse(
            r"host=db port=5433 sslmode = verify-ca sslrootcert='/etc/my ca\'s.pem' user=backup",
        )
        .unwrap();
        assert_eq!(info.tls.mode, SslMode::VerifyCa);
        assert_eq!(
            info.tls.root_cert,
            Some(RootCert::File("/etc/my ca's.pem".into()))
        );
        assert_eq!(info.pg.get_user(), Some("backup"));
        assert_eq!(info.pg.get_ports(), &[5433]);
        let system = parse("host=db sslmode=verify-full sslrootcert=system").unwrap();
        assert_eq!(system.tls.root_cert, Some(RootCert::System));
    }

    #[test]
    fn libpq_default_is_prefer_and_sockets_never_try_tls() {
        let info = parse("postgres://u@127.0.0.1/db").unwrap();
        assert_eq!(info.tls.mode, SslMode::Prefer);
        assert_eq!(
            info.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Prefer
        );
        let socket = parse("host=/var/run/postgresql sslmode=verify-full").unwrap();
        assert_eq!(
            socket.pg.get_ssl_mode(),
            tokio_postgres::config::SslMode::Disable
        );
        assert!(matches!(
            parse("host=db sslmode=verify"),
            Err(ConnInfoError::BadMode(m)) if m == "verify"
        ));
        assert!(matches!(
            parse("host=db sslrootcert='/x"),
            Err(ConnInfoError::Unterminated(_))
        ));
    }

    #[test]
    fn files_are_checked_like_libpq() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        let cert = dir.path().join("client.crt");
        std::fs::write(&key, "k").unwrap();
        std::fs::write(&cert, "c").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let missing = dir.path().join("ca.pem");
        let params = TlsParams {
            mode: SslMode::VerifyFull,
            root_cert: Some(RootCert::File(missing.clone())),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        };
        let problems = params.file_problems();
        assert!(problems.contains(&TlsFileProblem::MissingRootCert { path: missing }));
        // World-readable is too open whoever owns it.
        assert!(problems.contains(&TlsFileProblem::KeyTooOpen {
            path: key.clone(),
            mode: 0o644
        }));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ok = TlsParams {
            root_cert: Some(RootCert::System),
            ..params
        };
        assert_eq!(ok.file_problems(), vec![]);
        let half = TlsParams { key: None, ..ok };
        assert_eq!(half.file_problems(), vec![TlsFileProblem::CertWithoutKey]);
    }
}
