//! Throwaway PostgreSQL clusters for `vigil demo` and the test harness:
//! found binaries, `initdb` into a directory, start on a free loopback
//! port, stop and remove on drop. As root, runs everything as `postgres`
//! (initdb refuses root).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL binaries (initdb, pg_ctl, postgres, psql in one directory) not found on PATH, via pg_config, or in /usr/lib/postgresql/*/bin; install them (Debian/Ubuntu: `apt-get install postgresql`)"
    )]
    NoBinaries,
    #[error(
        "running as root, but there is no `postgres` user to run the cluster as (initdb refuses root): `apt-get install postgresql` creates it, or run as a normal user"
    )]
    NoPostgresUser,
    #[error("{what} failed in {dir}: {detail}")]
    Command {
        what: String,
        dir: PathBuf,
        detail: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Tries before `start` gives up (a free port can be taken before use).
const START_ATTEMPTS: u32 = 5;

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ClusterError + 'a {
    move |source| ClusterError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Where the server binaries live.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub bin_dir: PathBuf,
}

impl PgBinaries {
    pub fn discover() -> Result<Self, ClusterError> {
        let has_server = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| dir.join(b).is_file())
        };
        if let Some(path) = std::env::var_os("PATH")
            && let Some(dir) = std::env::split_paths(&path).find(|d| has_server(d))
        {
            return Ok(PgBinaries { bin_dir: dir });
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_server(&dir) {
                return Ok(PgBinaries { bin_dir: dir });
            }
        }
        // Debian keeps server binaries off PATH; take the newest major version.
        crate::pipeline::pgtools::newest_debian_bin_dir(has_server)
            .map(|bin_dir| PgBinaries { bin_dir })
            .ok_or(ClusterError::NoBinaries)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// A running (or stopped) throwaway cluster; removed on drop.
pub struct Cluster {
    bins: PgBinaries,
    root: PathBuf,
    port: u16,
    password: String,
    as_postgres: bool,
}

pub const SUPERUSER: &str = "postgres";

impl Cluster {
    /// Creates `root` (which must not exist) and initdb's a cluster in it.
    pub fn create(bins: &PgBinaries, root: &Path, password: &str) -> Result<Cluster, ClusterError> {
        let as_postgres = nix::unistd::geteuid().is_root();
        std::fs::create_dir_all(root).map_err(io_err("cannot create", root))?;
        let cluster = Cluster {
            bins: bins.clone(),
            root: root.to_owned(),
            port: 0,
            password: password.to_owned(),
            as_postgres,
        };
        if as_postgres {
            let user = nix::unistd::User::from_name(SUPERUSER)
                .ok()
                .flatten()
                .ok_or(ClusterError::NoPostgresUser)?;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err("cannot chmod", root))?;
            nix::unistd::chown(root, Some(user.uid), Some(user.gid)).map_err(|e| {
                ClusterError::Io {
                    action: "cannot chown",
                    path: root.to_owned(),
                    source: e.into(),
                }
            })?;
        }
        let pwfile = root.join("pwfile");
        write_private(&pwfile, &format!("{password}\n"))
            .map_err(io_err("cannot write", &pwfile))?;
        cluster.chown_to_postgres(&pwfile)?;
        cluster.run(
            "initdb",
            Command::new(bins.bin("initdb"))
                .arg("-D")
                .arg(cluster.data_dir())
                .args([
                    "-U",
                    SUPERUSER,
                    "-A",
                    "scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
        )?;
        let _ = std::fs::remove_file(&pwfile);
        Ok(cluster)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// URL without the password (pass it separately).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A binary from the cluster's PostgreSQL installation (e.g. `pgbench`).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.bin(name)
    }

    /// Starts on a free loopback port (retrying if another process takes it first).
    pub fn start(&mut self) -> Result<(), ClusterError> {
        // The first attempt reuses a known port; the retries take fresh ones.
        let mut port = if self.port != 0 {
            self.port
        } else {
            free_port()?
        };
        let mut attempt = 1;
        loop {
            match self.start_on(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) if attempt == START_ATTEMPTS => return Err(e),
                Err(_) => {
                    attempt += 1;
                    port = free_port()?;
                }
            }
        }
    }

    fn start_on(&self, port: u16) -> Result<(), ClusterError> {
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.root.display()
        );
        self.run(
            "pg_ctl start",
            Command::new(self.bins.bin("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-t", "60", "-o", &options, "-l"])
                .arg(self.root.join("postgres.log"))
                .arg("start"),
        )
        .map(|_| ())
    }

    /// Fast shutdown (disconnects clients).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.pg_ctl_stop("fast")
    }

    fn pg_ctl_stop(&self, mode: &str) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl stop",
            Command::new(self.bins.bin("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-w", "-m", mode, "stop"]),
        )
        .map(|_| ())
    }

    /// Runs SQL with psql over TCP; returns unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let out = self.run(
            "psql",
            Command::new(self.bins.bin("psql"))
                .env("PGPASSWORD", &self.password)
                .args([
                    "-X",
                    "-q",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    SUPERUSER,
                ])
                .args(["-p", &self.port.to_string(), "-d", database, "-c", sql]),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn chown_to_postgres(&self, path: &Path) -> Result<(), ClusterError> {
        if !self.as_postgres {
            return Ok(());
        }
        let user = nix::unistd::User::from_name(SUPERUSER)
            .ok()
            .flatten()
            .ok_or(ClusterError::NoPostgresUser)?;
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| ClusterError::Io {
            action: "cannot chown",
            path: path.to_owned(),
            source: e.into(),
        })
    }

    fn run(&self, what: &str, command: &mut Command) -> Result<Output, ClusterError> {
        let mut command = if self.as_postgres && what != "psql" {
            let mut wrapped = Command::new("runuser");
            wrapped
                .args(["-u", SUPERUSER, "--"])
                .arg(command.get_program())
                .args(command.get_args());
            for (k, v) in command.get_envs() {
                if let Some(v) = v {
                    wrapped.env(k, v);
                }
            }
            wrapped
        } else {
            std::mem::replace(command, Command::new("true"))
        };
        // pg_ctl's postmaster must not inherit our stdout/stderr pipes (a test
        // reading them would never see EOF).
        command
            .stdin(std::process::Stdio::null())
            .current_dir(&self.root);
        let out = command.output().map_err(|e| ClusterError::Command {
            what: what.to_owned(),
            dir: self.root.clone(),
            detail: e.to_string(),
        })?;
        if out.status.success() {
            return Ok(out);
        }
        let mut detail = format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
        if what.starts_with("pg_ctl")
            && let Ok(log) = std::fs::read_to_string(self.root.join("postgres.log"))
        {
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            detail.push_str(&format!(
                " (server log: {})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        Err(ClusterError::Command {
            what: what.to_owned(),
            dir: self.root.clone(),
            detail,
        })
    }
}

impl Cluster {
    /// Stops the server at once and removes its directory.
    /// What drop does; callable on a cluster in a `static` too.
    pub fn destroy(&self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.pg_ctl_stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.destroy();
    }
}

fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(io_err("cannot bind", Path::new("127.0.0.1:0")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io_err("cannot read address of", Path::new("127.0.0.1:0")))
}
/// Writes a file only its owner may read (mode 0600, also when it existed):
/// passwords, keys and tokens.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}
