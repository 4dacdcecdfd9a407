//! CLI parsing and dispatch only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use vigil::config::{self, Config, ProcessEnv};
use vigil::daemon::Daemon;
use vigil::exit::Exit;
use vigil::logging::Logging;
use vigil::{out, outln};

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Keeps PostgreSQL databases and file trees recoverable, and says so."
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CONFIG",
        default_value = "/etc/vigil/config.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run,
    /// Validate the config and print it with secrets redacted.
    CheckConfig,
    /// Apply the catalog migrations, print the schema version, exit.
    Migrate,
    /// Print the running daemon's health (from /health/detailed).
    /// (With `admin.protect_detailed`, the environment's VIGIL_TOKEN is sent.)
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Back up a job now (same step and lock as the scheduler).
    Backup { job: String },
    /// List a job's backups from its repository (no catalog needed).
    List {
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into a database.
    Restore {
        job: String,
        /// Backup id (default: the latest).
        #[arg(long, conflicts_with = "latest")]
        backup: Option<String>,
        /// Restore the latest backup (the default).
        #[arg(long)]
        latest: bool,
        /// Database of a multi-database backup.
        #[arg(long)]
        database: Option<String>,
        /// Target connection string, naming the database (database backups).
        #[arg(long, required_unless_present = "to_dir", conflicts_with = "to_dir")]
        to: Option<String>,
        /// Directory to restore a files backup under (empty unless --force).
        #[arg(long)]
        to_dir: Option<PathBuf>,
        /// With --to-dir: write into a non-empty directory.
        #[arg(long, requires = "to_dir")]
        force: bool,
        /// Create the target database first.
        #[arg(long)]
        create: bool,
        /// Replace objects in a non-empty target.
        #[arg(long)]
        clean: bool,
        /// Parallel pg_restore jobs (stages the dump in a temp file).
        #[arg(long)]
        jobs: Option<u32>,
    },
    /// Apply (or preview) a job's retention policy.
    Prune {
        /// The job (or --all).
        #[arg(required_unless_present = "all")]
        job: Option<String>,
        #[arg(long, conflicts_with = "job")]
        all: bool,
        /// Print the plan; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Pin a backup: retention never forgets it (stored in the repository).
    Pin { job: String, backup_id: String },
    /// Remove a pin.
    Unpin { job: String, backup_id: String },
    /// Check or read the audit journal.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Run vigil against a throwaway PostgreSQL cluster, in the foreground.
    Demo {
        /// Admin address (a taken default port falls back to a free one).
        #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
        listen: SocketAddr,
        /// Directory for the cluster and config (default: a new temporary one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the chain, segments, checkpoints, the catalog's copy and the
    /// heads in backup manifests; exit 1 naming the first bad record.
    Verify {
        /// Verify the catalog's copy (e.g. after losing the local journal).
        #[arg(long)]
        from_catalog: bool,
        /// Check every checkpoint's signature with this ed25519 public key
        /// (SPKI PEM); a checkpoint without one fails.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Create an ed25519 key pair for signing checkpoints: the private key
    /// (PKCS#8 PEM, mode 0600) for `journal.signing_key_file`, the public
    /// key (SPKI PEM) for `audit verify --public-key`.
    Keygen {
        /// Where to write the private key (never overwritten).
        private_key: PathBuf,
        /// Where to write the public key (default: PRIVATE_KEY.pub).
        #[arg(long, value_name = "FILE")]
        public: Option<PathBuf>,
    },
    /// Print journal records.
    Show {
        /// Only records newer than this: a duration ago (2h) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only this event or family (`prune`, `api.request`).
        #[arg(long)]
        event: Option<String>,
        /// The exact journal lines.
        #[arg(long)]
        json: bool,
    },
}

/// glibc raises its mmap threshold after the first large free, after which
/// freed 1–8 MiB pipeline buffers stay in per-thread arenas for good: keep
/// large buffers on mmap (returned at once) and the arenas few. Fixing the
/// mmap threshold also pins the trim threshold at 128 KiB, which handed the
/// pipeline's freed chunks back to the kernel and faulted them in again
/// (a page fault per 4 KiB backed up): keep up to 16 MiB of free heap.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    // Two rustls crypto providers are linked (reqwest's aws-lc-rs, the FTP
    // client's ring): choose one before any TLS client is built.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Exit::Usage.code())
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig => match load(&cli.config) {
            Ok(config) => {
                if let Err(code) = refuse_exposed_secrets(&cli.config, &config, |m| {
                    eprintln!("vigil: warning: {m}")
                }) {
                    return code;
                }
                let printed = outln!(
                    "# {} is valid; effective config, secrets redacted:",
                    cli.config.display()
                )
                .and_then(|()| out!("{}", config.to_redacted_toml()));
                finish(printed.map_err(anyhow::Error::from))
            }
            Err(code) => code,
        },
        Command::Run => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some(logging) = init_logging(&config) else {
                return ExitCode::FAILURE;
            };
            if let Err(code) = refuse_exposed_secrets(
                &cli.config,
                &config,
                |m| tracing::warn!(problem = %m, "a secret is readable by group or others"),
            ) {
                return code;
            }
            serve(cli.config, config, logging, None).await
        }
        Command::Migrate => {
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some(_logging) = init_logging(&config) else {
                return ExitCode::FAILURE;
            };
            match migrate(&config).await {
                Ok(outcome) => finish(
                    outln!(
                        "catalog schema at version {} (applied now: {})",
                        outcome.version,
                        if outcome.applied.is_empty() {
                            "none".into()
                        } else {
                            outcome.applied.join(", ")
                        }
                    )
                    .map_err(anyhow::Error::from),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "migration failed");
                    ExitCode::from(vigil::exit::of(&e).code())
                }
            }
        }
        Command::Status { json } => {
            // From the environment only: a token on the command line shows in `ps`.
            let token = std::env::var("VIGIL_TOKEN").ok().filter(|t| !t.is_empty());
            let config = match load(&cli.config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match vigil::status_cmd::run(config.admin.listen, json, token.as_deref()).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(Exit::Unhealthy.code()),
                Err(e) => finish(Err(e.into())),
            }
        }
        Command::Backup { job } => {
            with_config(&cli.config, |config| async move {
                // A usage error is told before the catalog is waited for.
                if config.job(&job)?.kind == config::JobKind::Mirror {
                    let report = vigil::commands::mirror(&config, &job, cancel_on_signal()).await?;
                    outln!(
                        "mirror {job}: {} object(s) copied ({}), {} already there ({}), {} backup(s) completed, {} deleted",
                        report.copied,
                        vigil::commands::human_bytes(report.copied_bytes),
                        report.skipped,
                        vigil::commands::human_bytes(report.skipped_bytes),
                        report.backups_completed,
                        report.deleted
                    )?;
                    return Ok(());
                }
                let manifest = vigil::commands::backup(&config, &job, cancel_on_signal()).await?;
                outln!(
                    "backup {} of {} committed: {} stored ({} from the source)",
                    manifest.backup_id,
                    job,
                    vigil::commands::human_bytes(manifest.stored_bytes()),
                    vigil::commands::human_bytes(manifest.raw_bytes())
                )?;
                Ok(())
            })
            .await
        }
        Command::List { job, json } => {
            with_config(&cli.config, |config| async move {
                vigil::commands::list(&config, job.as_deref(), json).await
            })
            .await
        }
        Command::Restore {
            job,
            backup,
            latest: _,
            database,
            to,
            to_dir,
            force,
            create,
            clean,
            jobs,
        } => {
            let request = vigil::jobs::restore::RestoreRequest {
                backup,
                database,
                to: to.unwrap_or_default(),
                create,
                clean,
                jobs,
                to_dir,
                force,
            };
            with_config(&cli.config, |config| async move {
                config.job(&job)?;
                vigil::commands::restore(&config, &job, request, cancel_on_signal()).await
            })
            .await
        }
        Command::Prune {
            job,
            all: _,
            dry_run,
            json,
        } => {
            with_config(&cli.config, |config| async move {
                if let Some(job) = &job {
                    config.job(job)?;
                }
                vigil::commands::prune(&config, job.as_deref(), dry_run, json).await
            })
            .await
        }
        Command::Pin { job, backup_id } => {
            with_config(&cli.config, |config| async move {
                vigil::commands::pin(&config, &job, &backup_id, true).await
            })
            .await
        }
        Command::Unpin { job, backup_id } => {
            with_config(&cli.config, |config| async move {
                vigil::commands::pin(&config, &job, &backup_id, false).await
            })
            .await
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    from_catalog,
                    public_key,
                    json,
                },
        } => {
            with_config(&cli.config, |config| async move {
                vigil::audit_cmd::verify(&config, from_catalog, public_key.as_deref(), json).await
            })
            .await
        }
        Command::Audit {
            command:
                AuditCommand::Keygen {
                    private_key,
                    public,
                },
        } => finish(vigil::audit_cmd::keygen(&private_key, public.as_deref())),
        Command::Audit {
            command: AuditCommand::Show { since, event, json },
        } => {
            let since = match since
                .as_deref()
                .map(vigil::audit_cmd::parse_since)
                .transpose()
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("vigil audit show: --since {e}");
                    return ExitCode::from(Exit::Usage.code());
                }
            };
            with_config(&cli.config, |config| async move {
                vigil::audit_cmd::show(&config, since, event.as_deref(), json)
            })
            .await
        }
        Command::Demo { listen, dir } => demo(listen, dir).await,
    }
}

/// Loads the config, sets up logging and runs a one-shot command.
async fn with_config<F, Fut>(path: &Path, command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(_logging) = init_logging(&config) else {
        return ExitCode::FAILURE;
    };
    finish(command(config).await)
}

/// A one-shot command's exit status, from its error's type (README "Exit
/// codes"); a closed stdout ends it quietly.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let exit = vigil::exit::of(&e);
    if exit != Exit::StdoutClosed {
        eprintln!("vigil: {e:#}");
    }
    ExitCode::from(exit.code())
}

/// A token cancelled by SIGINT/SIGTERM, so Ctrl-C aborts a run cleanly.
fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    if let Ok(mut control) = vigil::signals::listen() {
        let token = token.clone();
        tokio::spawn(async move {
            while let Some(message) = control.recv().await {
                if message == vigil::signals::Control::Shutdown {
                    token.cancel();
                }
            }
        });
    }
    token
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    config::load(path, &ProcessEnv).map_err(|e| {
        eprint!("vigil: {e}");
        ExitCode::from(Exit::Usage.code())
    })
}

/// Reports every secret others can read through `warn`; in production
/// they refuse the start (exit 64).
fn refuse_exposed_secrets(
    path: &Path,
    config: &Config,
    warn: impl Fn(&str),
) -> Result<(), ExitCode> {
    let exposed = config::exposure::exposures(path, config);
    for e in &exposed {
        warn(&e.message);
    }
    if !exposed.is_empty() && config.daemon.environment == config::Environment::Production {
        eprintln!(
            "vigil: refusing to start in production with secrets readable by group or others (above)"
        );
        return Err(ExitCode::from(Exit::Usage.code()));
    }
    Ok(())
}

fn init_logging(config: &Config) -> Option<Arc<Logging>> {
    match Logging::init(&config.log) {
        Ok(l) => Some(Arc::new(l)),
        Err(e) => {
            eprintln!("vigil: cannot set up logging: {e} (check `log.file`)");
            None
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<vigil::catalog::MigrationOutcome> {
    let secrets = config.secrets();
    let redacted = |e: vigil::catalog::CatalogError| {
        vigil::exit::CommandError::redacted(&e, |text| {
            vigil::core::redact::redact_text(text, &secrets)
        })
    };
    let pool = vigil::catalog::pool(&config.catalog).map_err(redacted)?;
    vigil::catalog::wait_until_ready(&pool, &config.catalog, &secrets)
        .await
        .map_err(redacted)?;
    Ok(vigil::catalog::migrate(&pool).await.map_err(redacted)?)
}

/// Builds and runs the daemon until a shutdown signal; `banner` is printed once bound.
async fn serve(
    path: PathBuf,
    config: Config,
    logging: Arc<Logging>,
    banner: Option<&dyn Fn(SocketAddr) -> String>,
) -> ExitCode {
    let daemon = match Daemon::build(path, config, Some(logging)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "vigil cannot start");
            return ExitCode::from(vigil::exit::of(&e).code());
        }
    };
    if let Some(banner) = banner {
        eprintln!("{}", banner(daemon.admin_addr()));
    }
    let control = match vigil::signals::listen() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            return ExitCode::FAILURE;
        }
    };
    match daemon.run(control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "vigil failed");
            ExitCode::FAILURE
        }
    }
}

async fn demo(listen: SocketAddr, dir: Option<PathBuf>) -> ExitCode {
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
    let setup =
        match tokio::task::spawn_blocking(move || vigil::demo::prepare(dir.as_deref(), listen))
            .await
        {
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
    let config = match load(&setup.config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(logging) = init_logging(&config) else {
        return ExitCode::FAILURE;
    };
    let banner = |addr| vigil::demo::banner(&setup, addr);
    let code = serve(setup.config_path.clone(), config, logging, Some(&banner)).await;
    eprintln!(
        "vigil demo: stopping the cluster and removing {}",
        setup.cluster_dir().display()
    );
    drop(setup);
    code
}
