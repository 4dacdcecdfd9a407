//! `vigil demo`: a throwaway PostgreSQL cluster as the catalog, a config
//! written next to it, and the daemon in the foreground. Ctrl-C removes it all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::pgcluster::{Cluster, ClusterError, PgBinaries};

/// The cluster and the config written for it.
pub struct DemoSetup {
    pub cluster: Cluster,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
}

impl DemoSetup {
    pub fn cluster_dir(&self) -> PathBuf {
        self.dir.join("pg")
    }
}

/// `vigil demo`: a free port, the cluster, then the daemon until Ctrl-C.
pub async fn command(listen: SocketAddr, dir: Option<PathBuf>) -> ExitCode {
    // A taken default port should not spoil the first run: fall back to a
    // free one. The config gets a concrete port so `vigil status` finds it.
    let probe = std::net::TcpListener::bind(listen).or_else(|e| {
        eprintln!("vigil demo: {listen} is not available ({e}); using a free port instead");
        std::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))
    });
    let listen = match probe.and_then(|l| l.local_addr()) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("vigil demo: cannot find a port to listen on: {e}");
            return ExitCode::FAILURE;
        }
    };
    let setup = match tokio::task::spawn_blocking(move || prepare(dir.as_deref(), listen)).await {
        Ok(Ok(setup)) => setup,
        Ok(Err(e)) => {
            eprintln!("vigil demo: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("vigil demo: set-up panicked: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = match super::load(&setup.config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(logging) = super::init_logging(&config) else {
        return ExitCode::FAILURE;
    };
    let banner = |addr| banner(&setup, addr);
    let code = super::serve::serve(setup.config_path.clone(), config, logging, Some(&banner)).await;
    eprintln!(
        "vigil demo: stopping the cluster and removing {}",
        setup.cluster_dir().display()
    );
    drop(setup);
    code
}

/// Creates the cluster, the `vigil` database and the config file.
pub fn prepare(dir: Option<&Path>, listen: SocketAddr) -> Result<DemoSetup, ClusterError> {
    let bins = PgBinaries::discover()?;
    let (tempdir, dir) = match dir {
        Some(d) => (None, d.to_owned()),
        None => {
            let t = tempfile::Builder::new()
                .prefix("vigil-demo-")
                .tempdir()
                .map_err(|e| ClusterError::Io {
                    action: "cannot create a temporary directory in",
                    path: std::env::temp_dir(),
                    source: e,
                })?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| ClusterError::Io {
        action: "cannot create",
        path: dir.clone(),
        source: e,
    })?;
    let password = random_password();
    eprintln!(
        "vigil demo: creating a PostgreSQL cluster in {} ...",
        dir.display()
    );
    let mut cluster = Cluster::create(&bins, &dir.join("pg"), &password)?;
    cluster.start()?;
    cluster.psql("postgres", "CREATE DATABASE vigil")?;
    cluster.psql("postgres", "CREATE DATABASE sample")?;
    eprintln!("vigil demo: filling the `sample` database with pgbench data ...");
    let pgbench = std::process::Command::new(cluster.bin("pgbench"))
        .args([
            "-i",
            "-s",
            "1",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            super::pgcluster::SUPERUSER,
            "-p",
        ])
        .arg(cluster.port().to_string())
        .arg("sample")
        .env("PGPASSWORD", cluster.password())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| ClusterError::Command {
            what: "pgbench".into(),
            dir: dir.clone(),
            detail: e.to_string(),
        })?;
    if !pgbench.status.success() {
        return Err(ClusterError::Command {
            what: "pgbench -i".into(),
            dir: dir.clone(),
            detail: String::from_utf8_lossy(&pgbench.stderr).into_owned(),
        });
    }

    // Everything the demo writes holds a secret or points at one: owner only.
    let write = |path: &Path, text: &str| {
        super::pgcluster::write_private(path, text).map_err(|e| ClusterError::Io {
            action: "cannot write",
            path: path.to_owned(),
            source: e,
        })
    };
    let password_file = dir.join("catalog.password");
    write(&password_file, &format!("{password}\n"))?;
    // An age key of the demo's own: backups are encrypted, restores decrypt.
    let identity = age::x25519::Identity::generate();
    let key_path = dir.join("age.key");
    {
        use age::secrecy::ExposeSecret;
        write(
            &key_path,
            &format!(
                "# vigil demo key\n{}\n",
                identity.to_string().expose_secret()
            ),
        )?;
    }
    // An operator API token (role admin) of the demo's own.
    write(
        &dir.join("admin.token"),
        &format!("{}\n", random_password()),
    )?;
    let config_path = dir.join("vigil.toml");
    write(
        &config_path,
        &demo_config(&dir, listen, &cluster, &identity.to_public().to_string()),
    )?;
    Ok(DemoSetup {
        cluster,
        dir,
        config_path,
        _tempdir: tempdir,
    })
}

fn demo_config(dir: &Path, listen: SocketAddr, cluster: &Cluster, recipient: &str) -> String {
    format!(
        r#"# Written by `vigil demo`; removed when the demo stops.
[daemon]
environment = "development"
instance = "vigil-demo"
state_dir = "{state}"
shutdown_timeout = "10s"

[log]
level = "info"
format = "pretty"

[admin]
listen = "{listen}"

# The demo's operator API token: `curl -H "Authorization: Bearer $(cat admin.token)" ...`
[[admin.tokens]]
name = "demo"
role = "admin"
token_file = "admin.token"

[catalog]
url = "{url}"
password_file = "catalog.password"
connect_timeout = "30s"

[health]
interval = "10s"
heartbeat = "2s"

# A local repository, encrypted with the demo's own age key.
[repositories.demo]
scheme = "fs"
options = {{ root = "{repo}" }}

[repositories.demo.encryption]
recipients = ["{recipient}"]
identity_file = "age.key"

# pgbench's sample database, backed up at the start of every minute.
[jobs.sample]
kind = "postgres"
source = "{sample}"
password_file = "catalog.password"
databases = ["sample"]
repository = "demo"
schedule = "0 * * * * *"
max_age = "3m"
catch_up = true
"#,
        state = dir.join("state").display(),
        url = cluster.url("vigil"),
        repo = dir.join("repo").display(),
        sample = cluster.url("sample"),
    )
}

pub fn banner(setup: &DemoSetup, admin: SocketAddr) -> String {
    let base = format!("http://{admin}");
    format!(
        "\nvigil demo is starting; the catalog is a throwaway cluster on 127.0.0.1:{port}\n\
         \n  status page   {base}/\n  health        {base}/health  ({base}/health/live, /health/ready, /health/detailed)\n  metrics       {base}/metrics\n  config        {config}\n\
         \nThe `sample` job backs up pgbench's database (encrypted) now and at the start of every minute. Try:\n\
         \n  vigil --config {config} status\n  vigil --config {config} list\n  vigil --config {config} audit show\n  vigil --config {config} audit verify\n  curl -H \"Authorization: Bearer $(cat {token})\" {base}/api/v1/jobs\n  PGPASSWORD=$(cat {pw}) vigil --config {config} restore sample --latest --to postgres://postgres@127.0.0.1:{port}/restored --create\n\
         \nCtrl-C stops vigil and removes the cluster ({dir}).\n",
        port = setup.cluster.port(),
        config = setup.config_path.display(),
        dir = setup.cluster_dir().display(),
        pw = setup.dir.join("catalog.password").display(),
        token = setup.dir.join("admin.token").display(),
    )
}

fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
