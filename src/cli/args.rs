//! The command line: every command, its arguments and their help text.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use clap_complete::Shell;

use crate::config;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Keeps PostgreSQL databases and file trees recoverable, and says so."
)]
pub struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CONFIG",
        default_value = "/etc/vigil/config.toml"
    )]
    pub config: PathBuf,
    /// More log lines on stderr: -v info, -vv debug (commands only: the
    /// daemon follows `[log]`). Without it, or `VIGIL_LOG` (a tracing
    /// filter), a command logs warnings and errors only.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Physical backups: lay the tablespace at OLD out at NEW (repeatable).
        #[arg(long, value_name = "OLD=NEW", requires = "to_dir", value_parser = crate::jobs::restore::physical::parse_mapping)]
        tablespace_map: Vec<(PathBuf, PathBuf)>,
        /// Create the target database first.
        #[arg(long)]
        create: bool,
        /// Replace objects in a non-empty target.
        #[arg(long)]
        clean: bool,
        /// Parallel pg_restore jobs (stages the dump in a temp file).
        #[arg(long)]
        jobs: Option<u32>,
        /// Physical jobs: recover to this moment (RFC 3339, 2026-11-27T09:30:00Z).
        #[arg(long, group = "target", requires = "to_dir")]
        time: Option<chrono::DateTime<chrono::Utc>>,
        /// Physical jobs: recover to this WAL position (as PostgreSQL prints it, 0/3000060).
        #[arg(long, group = "target", requires = "to_dir")]
        lsn: Option<crate::core::wal::Lsn>,
        /// Physical jobs: recover to a restore point made with pg_create_restore_point.
        #[arg(
            long,
            group = "target",
            requires = "to_dir",
            value_name = "RESTORE_POINT"
        )]
        name: Option<String>,
        /// Physical jobs: recover up to this transaction id.
        #[arg(long, group = "target", requires = "to_dir")]
        xid: Option<u64>,
        /// Physical jobs: stop as soon as the base backup is consistent.
        #[arg(long, group = "target", requires = "to_dir")]
        immediate: bool,
        /// What the server does on reaching the target (default: promote).
        #[arg(long, requires = "target", value_parser = ["promote", "pause", "shutdown"])]
        target_action: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Read a job's backups back and check them (hashes, and with the key
    /// their content); exit 1 naming every bad object.
    Verify {
        job: String,
        /// The backup to verify (default: the newest committed).
        #[arg(long, conflicts_with = "all")]
        backup: Option<String>,
        /// Verify every committed backup of the job.
        #[arg(long)]
        all: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a restore drill of a job now (its `[jobs.JOB.drill]`): restore
    /// the newest backup (physical jobs: a random point of the window) into
    /// the scratch target, run the checks, record the RTO, drop the target.
    /// Exit 1 naming the failed check or error.
    Drill {
        job: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
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
    /// Webhooks: send a test event to check a receiver.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
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
    /// Archive one WAL file (PostgreSQL's `archive_command`:
    /// `vigil --config FILE wal-push JOB %p`); postgres-physical jobs only.
    /// Quiet on success; exit 1 when it failed or different content is
    /// already archived under the name, 3 when the repository is unreachable.
    WalPush {
        job: String,
        /// The WAL file, as `%p` names it (relative to the data directory).
        path: PathBuf,
    },
    /// Restore one archived WAL file (PostgreSQL's `restore_command`:
    /// `vigil --config FILE wal-fetch JOB %f %p`). Exit 1 and print nothing
    /// when it is not archived (the end of the archive).
    WalFetch {
        job: String,
        /// The WAL file name (`%f`).
        name: String,
        /// Where to write it (`%p`), atomically.
        dest: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: Shell },
    /// Print the man page vigil(1); with --dir, write it and one page per
    /// subcommand (vigil-backup.1, ...) into DIR.
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
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

#[derive(Subcommand)]
pub enum NotifyCommand {
    /// Send a signed `notify.test` event to every `[[notify.webhooks]]`
    /// (or one) and print each receiver's answer. Exit 0 when all took it,
    /// 1 when one refused it, 3 when one could not be reached.
    Test {
        /// Only this webhook: its name or URL (an unconfigured URL gets an
        /// unsigned event).
        #[arg(long, conflicts_with = "url")]
        webhook: Option<String>,
        /// A receiver's URL (the same as --webhook URL).
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        json: bool,
    },
}
