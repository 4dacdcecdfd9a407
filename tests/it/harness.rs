//! Test harness: one throwaway PostgreSQL cluster per test binary, a fresh
//! database per test, and the real `vigil` binary on port 0.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vigil::cli::pgcluster::{Cluster, PgBinaries};

pub const PASSWORD: &str = "pw-Xq7rT2-never-logged";
pub const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

static SHARED: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

extern "C" fn destroy_shared_cluster() {
    if let Some(cluster) = SHARED.get() {
        cluster.destroy();
    }
}

/// A missing PostgreSQL is a setup error, not a skip.
pub fn binaries() -> PgBinaries {
    PgBinaries::discover().unwrap_or_else(|e| panic!("test setup: {e}"))
}

/// Creates and starts a cluster of the test's own (removed on drop).
pub fn own_cluster() -> Cluster {
    let root = tempfile::Builder::new()
        .prefix("vigil-it-pg-")
        .tempdir()
        .unwrap()
        .keep();
    std::fs::remove_dir(&root).unwrap();
    let mut cluster =
        Cluster::create(&binaries(), &root, PASSWORD).unwrap_or_else(|e| panic!("test setup: {e}"));
    cluster
        .start()
        .unwrap_or_else(|e| panic!("test setup: {e}"));
    cluster
}

/// The binary's shared cluster, started on first use and stopped at exit.
pub fn shared_cluster() -> &'static Cluster {
    SHARED.get_or_init(|| {
        let cluster = own_cluster();
        // Statics are never dropped: stop the server when the test binary exits.
        unsafe { libc::atexit(destroy_shared_cluster) };
        cluster
    })
}

/// A fresh, empty database on the shared cluster.
pub fn fresh_db() -> TestDb {
    let cluster = shared_cluster();
    let name = format!(
        "t{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    );
    cluster
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    TestDb {
        name,
        port: cluster.port(),
    }
}

/// A fresh database migrated to this binary's schema, as `vigil migrate`
/// leaves a production catalog (other CLI commands never migrate).
pub fn fresh_catalog() -> TestDb {
    let db = fresh_db();
    let copy = TestDb {
        name: db.name.clone(),
        port: db.port,
    };
    // Its own runtime on its own thread: callers may be inside one already.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(copy.migrate())
    })
    .join()
    .unwrap();
    db
}

pub struct TestDb {
    pub name: String,
    pub port: u16,
}

impl TestDb {
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    pub fn psql(&self, sql: &str) -> Result<String, String> {
        shared_cluster()
            .psql(&self.name, sql)
            .map_err(|e| e.to_string())
    }

    /// Applies the production migrations through the library.
    pub async fn migrate(&self) {
        let config = vigil::config::CatalogConfig {
            url: vigil::config::Secret::new(self.url()),
            password: Some(vigil::config::Secret::new(PASSWORD)),
            password_file: None,
            pool_size: 2,
            connect_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(5),
        };
        let pool = vigil::catalog::pool(&config).unwrap();
        vigil::catalog::migrate(&pool).await.unwrap();
    }
}

/// A config for a test daemon; `extra` is appended verbatim.
pub fn config_text(dir: &Path, url: &str, extra: &str) -> String {
    config_text_with_log(dir, url, "level = \"info\"", extra)
}

/// Like [`config_text`] with the `[log]` section's lines (besides `format`) given.
pub fn config_text_with_log(dir: &Path, url: &str, log: &str, extra: &str) -> String {
    format!(
        r#"[daemon]
state_dir = "{state}"
shutdown_timeout = "5s"

[log]
{log}
format = "json"

[admin]
listen = "127.0.0.1:0"

[catalog]
url = "{url}"
password = "${{TEST_PGPASSWORD}}"
connect_timeout = "20s"
query_timeout = "1s"

[health]
interval = "1s"
timeout = "1s"
heartbeat = "1s"
max_backoff = "2s"
# The host's disk is not under test (CI machines run near-full).
disk = {{ warn_ratio = 0.999, fail_ratio = 0.9999 }}
{catalog}{extra}"#,
        state = dir.join("state").display(),
        catalog = catalog_latency(extra),
    )
}

/// Nor is the catalog's latency on a loaded 2-core machine (a first
/// connection can take 600 ms there), unless the test sets its own.
fn catalog_latency(extra: &str) -> &'static str {
    if extra.contains("[health.catalog]") {
        ""
    } else {
        "[health.catalog]\nwarn_after = \"3s\"\nfail_after = \"5s\"\n"
    }
}

/// A running `vigil` process with its stderr collected line by line.
pub struct Vigil {
    pub child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    _tempdir: tempfile::TempDir,
}

pub struct VigilOptions {
    pub env: HashMap<String, String>,
    pub args: Vec<String>,
    /// Lines of the `[log]` section other than `format`.
    pub log: String,
    /// Extra lines of the `[admin]` section.
    pub admin: String,
}

impl Default for VigilOptions {
    fn default() -> Self {
        let env = [("TEST_PGPASSWORD".to_owned(), PASSWORD.to_owned())].into();
        VigilOptions {
            env,
            args: vec!["run".into()],
            log: "level = \"info\"".into(),
            admin: String::new(),
        }
    }
}

impl Vigil {
    /// Starts `vigil run` on `db` with the default test config plus `extra`.
    pub fn start(db: &TestDb, extra: &str) -> Vigil {
        Self::start_with(&db.url(), extra, VigilOptions::default())
    }

    pub fn start_with(url: &str, extra: &str, options: VigilOptions) -> Vigil {
        let tempdir = tempfile::Builder::new()
            .prefix("vigil-it-")
            .tempdir()
            .unwrap();
        let dir = tempdir.path().to_owned();
        let text = config_text_with_log(&dir, url, &options.log, extra).replace(
            "listen = \"127.0.0.1:0\"\n",
            &format!("listen = \"127.0.0.1:0\"\n{}", options.admin),
        );
        Self::start_text(tempdir, &text, options)
    }

    /// Starts vigil on a config text of the caller's, written to
    /// `config.toml` in `tempdir` (which the process owns from then on).
    pub fn start_text(tempdir: tempfile::TempDir, text: &str, options: VigilOptions) -> Vigil {
        let dir = tempdir.path().to_owned();
        let config_path = dir.join("config.toml");
        std::fs::write(&config_path, text).unwrap();
        let mut child = Command::new(VIGIL)
            .arg("--config")
            .arg(&config_path)
            .args(&options.args)
            .envs(&options.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vigil");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("admin port listening")
                    && let Some(addr) =
                        json_field(&line, "addr").or_else(|| pretty_field(&line, "addr"))
                {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "vigil did not report its admin address; log:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        };
        Vigil {
            child,
            addr,
            logs,
            dir,
            config_path,
            _tempdir: tempdir,
        }
    }

    /// Waits for `/health/ready` to be 200.
    pub fn wait_ready(&self) {
        self.wait_for("ready", Duration::from_secs(30), || {
            http(self.addr, "GET", "/health/ready")
                .map(|r| r.status == 200)
                .unwrap_or(false)
        });
    }

    pub fn wait_for(&self, what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if condition() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; vigil log:\n{}",
            self.log_text()
        );
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        self.wait_for(&format!("log line containing {needle:?}"), timeout, || {
            self.log_text().contains(needle)
        });
    }

    pub fn get(&self, path: &str) -> Response {
        http(self.addr, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "vigil did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A copy of the config whose `admin.listen` is the bound address (for CLI commands).
    pub fn config_path_with_addr(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let path = self.dir.join("config-client.toml");
        std::fs::write(&path, text.replace("127.0.0.1:0", &self.addr.to_string())).unwrap();
        path
    }

    pub fn write_config(&self, url: &str, extra: &str) {
        std::fs::write(&self.config_path, config_text(&self.dir, url, extra)).unwrap();
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pulls `key=value` out of a pretty (human) log line.
pub fn pretty_field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let value = line[start..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_owned())
}

/// Pulls `"key":"value"` out of a JSON log line.
pub fn json_field(line: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v.get(key)?.as_str().map(str::to_owned)
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// A one-shot HTTP/1.1 request over a fresh connection.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<Response> {
    http_with(addr, method, path, &[])
}

/// Like [`http`], with request headers (and an empty body).
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    write!(stream, "{head}\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {raw}")))?;
    Ok(Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    })
}

/// Runs the vigil CLI to completion.
/// `vigil list JOB --json`, which must succeed: the job's manifests, newest first
/// (without the window object a physical job adds).
pub fn list_manifests(config: &Path, job: &str, env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let (code, stdout, stderr) = vigil_cli(config, &["list", job, "--json"], env);
    assert_eq!(code, 0, "{stderr}");
    match serde_json::from_str::<serde_json::Value>(&stdout).unwrap() {
        serde_json::Value::Array(entries) => entries,
        other => panic!("`vigil list --json` printed {other}"),
    }
}

pub fn vigil_cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(VIGIL)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The moto S3 server of this test binary (`tests/s3/server.sh`).
pub struct S3Server {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// server.sh's state directory (pid file, log, moto's spill files).
    pub dir: PathBuf,
}

static S3: OnceLock<S3Server> = OnceLock::new();
static NEXT_S3_PREFIX: AtomicU32 = AtomicU32::new(0);

fn s3_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3/server.sh")
}

extern "C" fn stop_s3_server() {
    if let Some(server) = S3.get() {
        let _ = Command::new("bash")
            .arg(s3_script())
            .arg("stop")
            .arg(&server.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&server.dir);
    }
}

/// The binary's S3 server, started on first use and stopped at exit. A
/// server that does not start is a setup error, not a skip.
pub fn s3_server() -> &'static S3Server {
    S3.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vigil-it-s3-")
            .tempdir()
            .unwrap()
            .keep();
        let out = Command::new("bash")
            .arg(s3_script())
            .arg("start")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("test setup: cannot run bash tests/s3/server.sh: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            panic!(
                "test setup: `tests/s3/server.sh start {}` failed ({}); it needs python3 with venv \
                 and, on first use, network access to pip-install moto into target/s3venv \
                 (see tests/s3/README.md; log: {}/server.log):\n{stdout}{stderr}",
                dir.display(),
                out.status,
                dir.display()
            );
        }
        let fields: HashMap<&str, &str> = stdout
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let field = |k: &str| -> String {
            fields
                .get(k)
                .map(|v| (*v).to_owned())
                .unwrap_or_else(|| panic!("test setup: server.sh printed no `{k}=`: {stdout}"))
        };
        let server = S3Server {
            endpoint: field("endpoint"),
            bucket: field("bucket"),
            access_key_id: field("access_key_id"),
            secret_access_key: field("secret_access_key"),
            region: field("region"),
            dir,
        };
        // Statics are never dropped: stop the server when the test binary exits.
        unsafe { libc::atexit(stop_s3_server) };
        server
    })
}

impl S3Server {
    /// The environment variable the configs read the secret key from.
    pub const SECRET_ENV: &'static str = "VIGIL_IT_S3_SECRET";

    /// A repository prefix of the test's own, so tests can share the bucket.
    pub fn unique_prefix(&self, test: &str) -> String {
        format!(
            "it-{}-{}-{test}",
            std::process::id(),
            NEXT_S3_PREFIX.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// opendal's s3 options for this server, secret included.
    pub fn options(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("endpoint", self.endpoint.as_str()),
            ("bucket", &self.bucket),
            ("region", &self.region),
            ("access_key_id", &self.access_key_id),
            ("secret_access_key", &self.secret_access_key),
            ("disable_config_load", "true"),
            ("disable_ec2_metadata", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `[repositories.<name>]` on this server under `prefix`; `extra` lines
    /// go into the repository's table. The secret key is `${SECRET_ENV}`:
    /// pass [`S3Server::env`] to the child.
    pub fn repository_toml(&self, name: &str, prefix: &str, extra: &str) -> String {
        let mut text = format!("[repositories.{name}]\nscheme = \"s3\"\nprefix = \"{prefix}\"\n");
        text.push_str(extra);
        if !extra.is_empty() && !extra.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[repositories.{name}.options]\n"));
        for (k, v) in self.options() {
            let v = if k == "secret_access_key" {
                format!("${{{}}}", Self::SECRET_ENV)
            } else {
                v
            };
            text.push_str(&format!("{k} = \"{v}\"\n"));
        }
        text
    }

    /// The child environment entry that carries the secret key.
    pub fn env(&self) -> (&'static str, &str) {
        (Self::SECRET_ENV, &self.secret_access_key)
    }

    /// An opendal operator on the bucket, for looking at what vigil stored.
    pub fn operator(&self) -> opendal::Operator {
        opendal::Operator::via_iter("s3", self.options()).expect("s3 operator")
    }
}

/// A storage server of `tests/servers/server.sh` (sftp, ftp, azblob, gcs),
/// started on first use and stopped when the test binary exits.
pub struct StorageServer {
    pub kind: &'static str,
    /// opendal options for this server, as the script printed them.
    pub options: std::collections::BTreeMap<String, String>,
    dir: PathBuf,
}

static STORAGE: [OnceLock<StorageServer>; 4] = [
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
    OnceLock::new(),
];
const STORAGE_KINDS: [&str; 4] = ["sftp", "ftp", "azblob", "gcs"];

fn servers_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/server.sh")
}

extern "C" fn stop_storage_servers() {
    for (kind, cell) in STORAGE_KINDS.iter().zip(&STORAGE) {
        if let Some(server) = cell.get() {
            let _ = Command::new("bash")
                .arg(servers_script())
                .args([kind, "stop"])
                .arg(&server.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The binary's server of `kind`. A server that does not start is a setup
/// error, not a skip.
pub fn storage_server(kind: &str) -> &'static StorageServer {
    let index = STORAGE_KINDS
        .iter()
        .position(|k| *k == kind)
        .unwrap_or_else(|| panic!("no test server for `{kind}`"));
    STORAGE[index].get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix(&format!("vigil-it-{kind}-"))
            .tempdir()
            .unwrap()
            .keep();
        let out = Command::new("bash")
            .arg(servers_script())
            .args([kind, "start"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("test setup: cannot run tests/servers/server.sh: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "test setup: `tests/servers/server.sh {kind} start {}` failed ({}): {stdout}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let options = stdout
            .lines()
            .last()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k != "pid")
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        if STORAGE.iter().all(|c| c.get().is_none()) {
            unsafe { libc::atexit(stop_storage_servers) };
        }
        StorageServer {
            kind: STORAGE_KINDS[index],
            options,
            dir,
        }
    })
}

impl StorageServer {
    /// `[repositories.<name>]` on this server under `prefix`.
    pub fn repository_toml(&self, name: &str, prefix: &str, extra: &str) -> String {
        let mut text = format!(
            "[repositories.{name}]\nscheme = \"{}\"\nprefix = \"{prefix}\"\n{extra}",
            self.kind
        );
        if !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("[repositories.{name}.options]\n"));
        for (k, v) in &self.options {
            text.push_str(&format!("{k} = \"{v}\"\n"));
        }
        text
    }

    /// An opendal operator on the server, for looking at what vigil stored.
    pub fn operator(&self) -> opendal::Operator {
        opendal::Operator::via_iter(self.kind, self.options.clone()).expect("operator")
    }
}

/// `psql` on a database of the shared cluster, by name.
pub fn shared_psql(database: &str, sql: &str) -> Result<String, String> {
    shared_cluster()
        .psql(database, sql)
        .map_err(|e| e.to_string())
}

/// The `postgres` OS user's ids (clusters and archive_command run as it).
pub fn postgres_ids() -> (nix::unistd::Uid, nix::unistd::Gid) {
    let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
    (user.uid, user.gid)
}

/// A scratch directory the `postgres` user can traverse (tempdirs are 0700).
pub fn postgres_scratch(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `program` run as the `postgres` user when the tests run as root.
pub fn as_postgres(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every regular file under `dir`, depth first.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A config whose repository (S3) and catalog both point at port 1,
/// where nothing listens, with 1 s connect timeouts.
pub fn unreachable_config(dir: &Path) -> PathBuf {
    let extra = "[repositories.remote]\nscheme = \"s3\"\n\
        options = { bucket = \"b\", endpoint = \"http://127.0.0.1:1\", region = \"us-east-1\", access_key_id = \"a\", secret_access_key = \"s3cret-key-never-shown\" }\n\
        [jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://postgres@127.0.0.1:1/orders\"\n\
        databases = [\"orders\"]\nrepository = \"remote\"\nevery = \"1h\"\n";
    let text = config_text(dir, "postgres://postgres@127.0.0.1:1/vigil", extra)
        .replace("connect_timeout = \"20s\"", "connect_timeout = \"1s\"");
    let config = dir.join("config.toml");
    std::fs::write(&config, text).unwrap();
    config
}
