//! The storage server killed (SIGKILL) in the middle of a large upload
//! (issue 12), on a private S3 (moto) and SFTP (OpenSSH) server of the
//! test's own: the run fails naming the endpoint, no partial backup is
//! listed, `/health` fails with the cause; once the server is back on the
//! same port the next run succeeds and prune collects what the killed run
//! left. `SERVER_KILL_ROUNDS` repeats the kill (CI: 1).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::harness::*;

const OPERATOR: &str = "operator-token-5e0c1d9a";

/// A storage server that can be killed and started again on its port.
enum Server {
    S3 {
        dir: tempfile::TempDir,
        port: u16,
        child: Option<Child>,
    },
    Sftp {
        dir: tempfile::TempDir,
        port: u16,
        line: String,
        pid: Option<u32>,
    },
}

fn wait_port(port: u16) {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "test setup: nothing listens on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every process below `pid` (sshd's session processes), deepest last.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(parent) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

fn kill_9(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

impl Server {
    fn s3() -> Server {
        // The shared server's start installs moto into target/s3venv.
        s3_server();
        let mut server = Server::S3 {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            child: None,
        };
        server.start();
        server
    }

    fn sftp() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/server.sh"))
            .args(["sftp", "start"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "test setup: sftp server: {stdout}");
        let line = stdout.lines().last().unwrap().to_owned();
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap()
                .to_owned()
        };
        let port = field("endpoint")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let pid = Some(field("pid").parse().unwrap());
        Server::Sftp {
            dir,
            port,
            line,
            pid,
        }
    }

    fn port(&self) -> u16 {
        match self {
            Server::S3 { port, .. } | Server::Sftp { port, .. } => *port,
        }
    }

    /// Starts the server (again) on its port; an S3 server starts empty
    /// (moto keeps objects in memory), so the bucket is created again.
    fn start(&mut self) {
        match self {
            Server::S3 { dir, port, child } => {
                let moto =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/s3venv/bin/moto_server");
                let tmp = dir.path().join("tmp");
                std::fs::create_dir_all(&tmp).unwrap();
                let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
                *child = Some(
                    Command::new(moto)
                        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                        .env("TMPDIR", &tmp)
                        .stdin(Stdio::null())
                        .stdout(log.try_clone().unwrap())
                        .stderr(log)
                        .spawn()
                        .unwrap(),
                );
                wait_port(*port);
                let addr: SocketAddr = ([127, 0, 0, 1], *port).into();
                let made =
                    http_with(addr, "PUT", "/vigil-test", &[("Content-Length", "0")]).unwrap();
                assert_eq!(made.status, 200, "test setup: create bucket: {}", made.body);
            }
            Server::Sftp { dir, port, pid, .. } => {
                let config = dir.path().join("sshd_config");
                let status = Command::new("/usr/sbin/sshd")
                    .arg("-f")
                    .arg(&config)
                    .arg("-E")
                    .arg(dir.path().join("server.log"))
                    .status()
                    .unwrap();
                assert!(status.success(), "test setup: sshd would not start again");
                wait_port(*port);
                let text = std::fs::read_to_string(dir.path().join("sshd.pid")).unwrap();
                *pid = Some(text.trim().parse().unwrap());
            }
        }
    }

    /// SIGKILL: the listener and every connection it serves.
    fn kill(&mut self) {
        match self {
            Server::S3 { child, .. } => {
                if let Some(mut child) = child.take() {
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
            }
            Server::Sftp { pid, dir, .. } => {
                if let Some(pid) = pid.take() {
                    let below = descendants(pid);
                    kill_9(pid);
                    below.into_iter().for_each(kill_9);
                    let _ = std::fs::remove_file(dir.path().join("sshd.pid"));
                }
            }
        }
    }

    /// `[repositories.remote]` on this server, uploads capped at 1 MiB/s so
    /// that the kill lands mid-upload.
    fn repository_toml(&self) -> String {
        let head = "prefix = \"it\"\nmax_upload_rate = \"1MiB\"\nrequest_timeout = \"10s\"\n";
        match self {
            Server::S3 { port, .. } => {
                let server = s3_server();
                server
                    .repository_toml(
                        "remote",
                        "it",
                        "max_upload_rate = \"1MiB\"\nrequest_timeout = \"10s\"\n",
                    )
                    .replace(&server.endpoint, &format!("http://127.0.0.1:{port}"))
            }
            Server::Sftp { line, .. } => {
                let mut text = format!(
                    "[repositories.remote]\nscheme = \"sftp\"\n{head}[repositories.remote.options]\n"
                );
                for (k, v) in line
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .filter(|(k, _)| *k != "pid")
                {
                    text.push_str(&format!("{k} = \"{v}\"\n"));
                }
                text
            }
        }
    }

    /// The sftp server's files (the repository under `it/`), or None for S3.
    fn root(&self) -> Option<PathBuf> {
        match self {
            Server::S3 { .. } => None,
            Server::Sftp { dir, .. } => Some(dir.path().join("root/it")),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn rounds() -> usize {
    std::env::var("SERVER_KILL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

/// Starts a backup through the API. A failed run is counted before its
/// lease is released, so the API may still answer 409 (already running)
/// for a moment, as it would to an operator: retry that for a while.
fn start_backup(vigil: &Vigil) {
    let bearer = format!("Bearer {OPERATOR}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let started = http_with(
            vigil.addr,
            "POST",
            "/api/v1/jobs/orders/backup",
            &[("Authorization", &bearer)],
        )
        .unwrap();
        if started.status == 409 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        assert_eq!(started.status, 202, "{}", started.body);
        return;
    }
}

fn freshness(vigil: &Vigil) -> serde_json::Value {
    vigil.get("/health/detailed").json()["checks"]["orders:freshness"][0].clone()
}

/// Sets every file under `dir` back three days (past the shipped
/// `orphan_grace`), so prune may collect leftovers.
fn age_files(dir: &Path) {
    let old = SystemTime::now() - Duration::from_secs(3 * 24 * 3600);
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_file() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.path())
                .unwrap();
            file.set_modified(old).unwrap();
        }
    }
}

fn killed_mid_upload(mut server: Server) {
    let kind = match server {
        Server::S3 { .. } => "s3",
        Server::Sftp { .. } => "sftp",
    };
    let source = fresh_db();
    // About 16 MB of hex text, 8+ MB after zstd: 8 s at 1 MiB/s.
    source
        .psql("CREATE TABLE t AS SELECT g, md5(g::text) || md5((g * 11)::text) AS v FROM generate_series(1, 220000) g")
        .unwrap();
    let catalog = fresh_catalog();
    let extra = format!(
        "{}[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"remote\"\nevery = \"1h\"\ncatch_up = false\n",
        server.repository_toml(),
        source.url(),
        source.name
    );
    let mut options = VigilOptions::default();
    let (k, v) = s3_server().env();
    options.env.insert(k.to_owned(), v.to_owned());
    options.admin = format!(
        "[[admin.tokens]]\nname = \"deployer\"\nrole = \"operator\"\ntoken_sha256 = \"{}\"\n",
        sha(OPERATOR)
    );
    let vigil = Vigil::start_with(&catalog.url(), &extra, options);
    vigil.wait_ready();
    let endpoint = format!("127.0.0.1:{}", server.port());
    let env = [("TEST_PGPASSWORD", PASSWORD), s3_server().env()];
    for round in 0..rounds() {
        start_backup(&vigil);
        std::thread::sleep(Duration::from_secs(3));
        server.kill();
        let killed = Instant::now();
        vigil.wait_for("the failed run", Duration::from_secs(120), || {
            freshness(&vigil)["vigil"]["consecutiveFailures"] == 1
        });
        let failed_after = killed.elapsed();
        let check = freshness(&vigil);
        let output = check["output"].as_str().unwrap_or_default();
        assert!(output.contains("last run failed"), "{check:#}");
        assert!(
            output.contains(&endpoint),
            "the error does not name the endpoint {endpoint}: {check:#}"
        );
        if round == 0 {
            // Never succeeded: the job is not protected.
            assert_eq!(check["status"], "fail", "{check:#}");
            assert_eq!(vigil.get("/health").status, 503);
        }
        server.start();
        // moto keeps objects in memory: a restarted S3 server is empty.
        let before = if server.root().is_some() { round } else { 0 };
        let listed = list_manifests(&vigil.config_path, "orders", &env);
        assert_eq!(
            listed.len(),
            before,
            "a partial backup is listed: {listed:#?}"
        );
        start_backup(&vigil);
        vigil.wait_for("the next run", Duration::from_secs(120), || {
            freshness(&vigil)["vigil"]["consecutiveFailures"] == 0
        });
        assert_eq!(freshness(&vigil)["status"], "pass");
        let listed = list_manifests(&vigil.config_path, "orders", &env);
        assert_eq!(listed.len(), before + 1, "{listed:#?}");
        println!(
            "server kill ({kind}): round {round}: the run failed {:.1} s after the kill naming {endpoint}; nothing partial listed; the next run succeeded",
            failed_after.as_secs_f64()
        );
    }
    assert_eq!(vigil.get("/health").status, 200);
    // What the killed runs left is collected by prune.
    if let Some(root) = server.root() {
        age_files(&root);
        let (code, stdout, stderr) = vigil_cli(&vigil.config_path, &["prune", "orders"], &env);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        let backups = root.join("orders/backups");
        for dir in std::fs::read_dir(&backups).unwrap() {
            let dir = dir.unwrap().path();
            assert!(
                dir.join("manifest.json").is_file(),
                "prune left the killed run's {}",
                dir.display()
            );
        }
        let temp: u64 = walkdir::WalkDir::new(&root)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file() && !e.path().starts_with(&backups))
            .filter(|e| !e.path().to_string_lossy().contains("/locks/"))
            // The job's listing index is the repository's own, not a leftover.
            .filter(|e| e.file_name() != "index.json.zst")
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert_eq!(temp, 0, "bytes left outside committed backups after prune");
    }
}

#[test]
fn an_s3_server_killed_mid_upload_fails_the_run_naming_it_and_the_next_run_succeeds() {
    killed_mid_upload(Server::s3());
}

#[test]
fn an_sftp_server_killed_mid_upload_fails_the_run_naming_it_and_prune_collects_the_rest() {
    killed_mid_upload(Server::sftp());
}
