//! The throwaway PostgreSQL of a physical drill: started with the
//! installed server binaries on a free port, reachable only through a Unix
//! socket in the drill's scratch directory (`listen_addresses = ''`, an
//! `hba_file` of its own trusting that socket), run as the owner of the
//! laid-out files (never as root), stopped with `pg_ctl stop -m immediate`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::PhysicalError;

/// Who runs the server: the data directory's owner when vigil is root,
/// else vigil's own user.
#[derive(Debug, Clone)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// The role the checks connect as: the owner's name (initdb names the
    /// bootstrap superuser after the OS user that ran it).
    pub user: String,
}

impl RunAs {
    pub fn of(data: &Path) -> Result<RunAs, PhysicalError> {
        let version = data.join("PG_VERSION");
        let meta = std::fs::metadata(&version).map_err(|source| PhysicalError::Scratch {
            dir: version.clone(),
            source,
        })?;
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (meta.uid(), meta.gid())
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        };
        if uid == 0 {
            return Err(PhysicalError::RootOwned {
                dir: data.to_owned(),
            });
        }
        let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
            .ok_or(PhysicalError::NoUser { uid })?;
        Ok(RunAs { uid, gid, user })
    }

    /// Gives `path` to this user (a no-op unless vigil is root).
    pub fn own(&self, path: &Path) -> Result<(), PhysicalError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid)).map_err(|source| {
            PhysicalError::Scratch {
                dir: path.to_owned(),
                source,
            }
        })
    }
}

/// A started server; stopped on [`Server::stop`] or, failing that, on drop.
pub struct Server {
    pg_ctl: PathBuf,
    data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
    run_as: RunAs,
    stopped: bool,
}

/// A single-quoted word for the shell line pg_ctl runs postgres with.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `postgres` options: its own port and socket, no TCP, its own hba file,
/// no archiving of its own (the drill's WAL is nobody's), and no hot
/// standby: recovery then needs no setting as large as the source's
/// (`max_connections` and the like, which the data directory may not
/// carry), and `pg_ctl start -w` returns once the server has promoted.
pub fn options(port: u16, socket_dir: &Path, hba: &Path) -> String {
    format!(
        "-c port={port} -c listen_addresses='' -c unix_socket_directories={} -c hba_file={} -c archive_mode=off -c hot_standby=off",
        quote(&socket_dir.display().to_string()),
        quote(&hba.display().to_string()),
    )
}

impl Server {
    /// Writes the hba file (and an empty postgresql.conf when the backup
    /// has none, as on Debian), then `pg_ctl start -w`.
    pub async fn start(
        bin_dir: &Path,
        data: &Path,
        scratch: &Path,
        run_as: &RunAs,
        timeout: Duration,
    ) -> Result<Server, PhysicalError> {
        let pg_ctl = bin_dir.join("pg_ctl");
        if !pg_ctl.is_file() {
            return Err(PhysicalError::NoServer { tool: pg_ctl });
        }
        let hba = scratch.join("drill_hba.conf");
        write_owned(&hba, "local all all trust\n", run_as)?;
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            write_owned(&conf, "", run_as)?;
        }
        let port = free_port().map_err(|source| PhysicalError::Scratch {
            dir: scratch.to_owned(),
            source,
        })?;
        let server = Server {
            pg_ctl,
            data: data.to_owned(),
            socket_dir: scratch.to_owned(),
            port,
            log: scratch.join("server.log"),
            run_as: run_as.clone(),
            stopped: false,
        };
        let secs = timeout.as_secs().clamp(1, u64::from(u32::MAX)).to_string();
        let out = server
            .pg_ctl()
            .arg("-D")
            .arg(data)
            .args(["-w", "-t", &secs, "-o", &options(port, scratch, &hba), "-l"])
            .arg(&server.log)
            .arg("start")
            .output()
            .await
            .map_err(|source| PhysicalError::Spawn {
                tool: server.pg_ctl.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(PhysicalError::Start {
                output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                log: server.log_tail(),
            });
        }
        Ok(server)
    }

    fn pg_ctl(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.pg_ctl);
        if nix::unistd::geteuid().is_root() {
            command.uid(self.run_as.uid).gid(self.run_as.gid);
        }
        command
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join(" | ")
    }

    /// A session on `database` through the socket.
    pub async fn connect(
        &self,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.run_as.user)
            .dbname(database)
            .application_name("vigil-drill")
            .connect_timeout(Duration::from_secs(10));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Waits until recovery has reached its target and promoted
    /// (`pg_is_in_recovery()` false); the server stopping meanwhile (a
    /// target the archive cannot reach) fails at once with its log.
    pub async fn wait_promoted(
        &self,
        database: &str,
        target: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<tokio_postgres::Client, PhysicalError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(client) = self.connect(database).await
                && let Ok(row) = client.query_one("SELECT pg_is_in_recovery()", &[]).await
                && !row.get::<_, bool>(0)
            {
                return Ok(client);
            }
            if !self.data.join("postmaster.pid").exists() {
                return Err(PhysicalError::Died {
                    target: target.to_owned(),
                    log: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(PhysicalError::RecoveryTimeout {
                    target: target.to_owned(),
                    waited: humantime::format_duration(timeout).to_string(),
                    log: self.log_tail(),
                });
            }
            tokio::select! {
                _ = cancel.cancelled() => return Err(PhysicalError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }

    /// `pg_ctl stop -m immediate`: the drill's cluster is thrown away.
    pub async fn stop(mut self) {
        self.stopped = true;
        let stopped = self
            .pg_ctl()
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .output()
            .await;
        if !matches!(&stopped, Ok(out) if out.status.success()) {
            tracing::warn!(data = %self.data.display(), "cannot stop the drill's throwaway PostgreSQL");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        // A drill cut short (shutdown): never leave its server running.
        let mut command = std::process::Command::new(&self.pg_ctl);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            command.uid(self.run_as.uid).gid(self.run_as.gid);
        }
        let _ = command
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate", "stop"])
            .stdin(std::process::Stdio::null())
            .output();
    }
}

fn write_owned(path: &Path, text: &str, run_as: &RunAs) -> Result<(), PhysicalError> {
    std::fs::write(path, text).map_err(|source| PhysicalError::Scratch {
        dir: path.to_owned(),
        source,
    })?;
    run_as.own(path)
}

/// A loopback port free at the time of asking (the server binds none:
/// the port only names its socket file and must not clash there).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_listens_on_its_socket_only() {
        let o = options(
            5999,
            Path::new("/var/tmp/drill/it's"),
            Path::new("/var/tmp/drill/hba"),
        );
        assert!(o.contains("-c port=5999"), "{o}");
        assert!(o.contains("-c listen_addresses=''"), "{o}");
        assert!(
            o.contains(r"unix_socket_directories='/var/tmp/drill/it'\''s'"),
            "{o}"
        );
        assert!(o.contains("-c archive_mode=off"), "{o}");
        assert!(o.contains("-c hot_standby=off"), "{o}");
    }
}
