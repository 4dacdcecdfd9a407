//! One outcome sink per run. Every run kind (backup, prune, mirror,
//! restore) says when it started and how it ended through a [`Reporter`];
//! the catalog's executions table, the audit journal and the job board are
//! its implementations, so no kind writes the three places by hand and
//! each outcome reaches each place exactly once.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::executions::{self, Execution, Finish};
use super::mirror::MirrorReport;
use super::prune::PruneOutcome;
use super::{JobContext, Trigger};
use crate::core::manifest::Manifest;
use crate::state::{JobBoard, JobState, RecentRun};

/// What kind of run (`executions.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Backup,
    Prune,
    Mirror,
    Restore,
    Drill,
    Verify,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Backup => "backup",
            RunKind::Prune => "prune",
            RunKind::Mirror => "mirror",
            RunKind::Restore => "restore",
            RunKind::Drill => "drill",
            RunKind::Verify => "verify",
        }
    }
}

/// How a run ended (`executions.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Succeeded,
    Failed,
    /// Another vigil ran it, or holds its lock.
    Skipped,
    /// Stopped by a shutdown.
    Aborted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Aborted => "aborted",
        }
    }
}

/// A journal record about the run (the job's name is added on writing).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: &'static str,
    pub data: serde_json::Value,
    /// Held until written whatever the journal's state (deletions done),
    /// rather than emitted best effort.
    pub durable: bool,
}

impl Event {
    pub fn emit(name: &'static str, data: serde_json::Value) -> Event {
        Event {
            name,
            data,
            durable: false,
        }
    }

    pub fn record(name: &'static str, data: serde_json::Value) -> Event {
        Event {
            name,
            data,
            durable: true,
        }
    }
}

/// One run, as every sink names it.
#[derive(Debug, Clone)]
pub struct Run {
    pub kind: RunKind,
    pub trigger: Trigger,
    /// The repository written (a mirror's destination).
    pub repository: String,
    /// Journalled when the run starts.
    pub started: Option<Event>,
}

/// What a successful run leaves for the job board.
#[derive(Debug, Clone)]
pub enum Fact {
    None,
    Backup(Box<Manifest>),
    Mirror(MirrorReport),
    Prune(Box<PruneOutcome>),
    /// The verification record as the run left it (also after a failure).
    Verify(Box<crate::core::proofs::VerifyRecord>),
}

/// How a run ended, with the facts every sink needs.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub backup_id: Option<String>,
    pub source_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// Redacted.
    pub error: Option<String>,
    /// Anything else the run found (files: changed and vanished paths).
    pub details: Option<serde_json::Value>,
    /// The journal's record of the outcome, if the kind journals one.
    pub event: Option<Event>,
    pub fact: Fact,
}

impl Outcome {
    pub fn succeeded(fact: Fact, event: Option<Event>) -> Outcome {
        Outcome {
            status: Status::Succeeded,
            backup_id: None,
            source_bytes: None,
            stored_bytes: None,
            error: None,
            details: None,
            event,
            fact,
        }
    }

    /// `error` is already redacted.
    pub fn failed(status: Status, error: String, event: Option<Event>) -> Outcome {
        Outcome {
            error: Some(error),
            status,
            ..Outcome::succeeded(Fact::None, event)
        }
    }
}

/// Where a run's start and outcome go.
pub trait Reporter: Send + Sync {
    /// The run began (under its lock, if it takes one). Returns the id of
    /// the executions row written, if any (prune's `cleanup_history` rows
    /// point at it).
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>>;
    /// The run ended; called once per run, also for a run refused before
    /// it started (a lock that cannot be taken).
    fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()>;
}

/// `vigil.executions`: a `running` row at the start, its end at the finish.
pub struct ExecutionsSink<'a> {
    ctx: &'a JobContext,
    row: Mutex<Option<Execution>>,
}

impl Reporter for ExecutionsSink<'_> {
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move {
            let ctx = self.ctx;
            let row = executions::start(
                &ctx.catalog,
                &ctx.name,
                run.kind.as_str(),
                run.trigger,
                &ctx.host,
                &run.repository,
            )
            .await;
            let id = row.as_ref().map(|r| r.id);
            *self.row.lock().unwrap_or_else(|p| p.into_inner()) = row;
            id
        })
    }

    fn finished<'a>(&'a self, _run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let row = self.row.lock().unwrap_or_else(|p| p.into_inner()).take();
            let end = Finish {
                status: outcome.status.as_str(),
                backup_id: outcome.backup_id.as_deref(),
                source_bytes: outcome.source_bytes,
                stored_bytes: outcome.stored_bytes,
                error: outcome.error.as_deref(),
                details: outcome.details.clone(),
            };
            executions::finish(&self.ctx.catalog, &row, end).await;
        })
    }
}

/// The audit journal, by the context's actor and request.
pub struct JournalSink<'a> {
    ctx: &'a JobContext,
}

impl JournalSink<'_> {
    fn write(&self, event: &Event) {
        let entry = self.ctx.event(event.name, event.data.clone());
        if event.durable {
            self.ctx.journal.record(entry);
        } else {
            self.ctx.journal.emit(entry);
        }
    }
}

impl Reporter for JournalSink<'_> {
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        if let Some(event) = &run.started {
            self.write(event);
        }
        Box::pin(std::future::ready(None))
    }

    fn finished<'a>(&'a self, _run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        if let Some(event) = &outcome.event {
            self.write(event);
        }
        Box::pin(std::future::ready(()))
    }
}

/// The in-memory job board the health checks and metrics read (daemon
/// runs only; a CLI run has no board).
pub struct BoardSink<'a> {
    board: &'a JobBoard,
    job: &'a str,
    /// When `started` was called, for the recent runs.
    started_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

impl BoardSink<'_> {
    fn fold(&self, kind: RunKind, outcome: &Outcome) {
        let error = outcome.error.clone().unwrap_or_default();
        self.board
            .update(self.job, |s| match (&outcome.fact, kind) {
                (Fact::Backup(manifest), _) => s.record_success(manifest),
                (Fact::Mirror(report), _) => s.record_mirror(report.copied_bytes),
                (Fact::Prune(outcome), _) => fold_prune(s, outcome),
                (Fact::Verify(record), _) => s.verify = Some((**record).clone()),
                (Fact::None, RunKind::Prune) => s.prune.last_error = Some(error),
                (Fact::None, RunKind::Backup | RunKind::Mirror) => s.record_failure(error),
                // A drill's record reaches the board from the drill itself.
                (Fact::None, RunKind::Restore | RunKind::Drill | RunKind::Verify) => {}
            });
    }

    /// The run as the status page lists it.
    fn remember(&self, run: &Run, outcome: &Outcome) {
        let started_at = *self.started_at.lock().unwrap_or_else(|p| p.into_inner());
        self.board.runs.push(RecentRun {
            job: self.job.to_owned(),
            kind: run.kind.as_str(),
            trigger: run.trigger.as_str(),
            status: outcome.status.as_str(),
            started_at,
            finished_at: chrono::Utc::now(),
            backup_id: outcome.backup_id.clone(),
            stored_bytes: outcome.stored_bytes,
            error: outcome.error.clone(),
        });
    }
}

/// A prune's result: what it kept is what the repository now holds (its
/// plan lists every committed backup).
fn fold_prune(s: &mut JobState, outcome: &PruneOutcome) {
    let kept: Vec<_> = outcome.plan.decisions.iter().filter(|d| d.keep).collect();
    s.backups = kept.len() as u64;
    s.oldest = kept.iter().map(|d| d.finished_at).min();
    s.prune.last_success = Some(chrono::Utc::now());
    s.prune.last_error = None;
    s.prune.deleted_total += outcome.deleted.len() as u64;
    s.prune.freed_bytes_total += outcome.deleted.iter().map(|(_, b)| b).sum::<u64>();
    s.damaged = outcome.damaged.clone();
}

impl Reporter for BoardSink<'_> {
    fn started<'a>(&'a self, _run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        *self.started_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(chrono::Utc::now());
        Box::pin(std::future::ready(None))
    }

    fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        // Skipped runs are another vigil's: its outcome is not this board's.
        if outcome.status != Status::Skipped {
            self.fold(run.kind, outcome);
        }
        // Listed all the same: the page shows this daemon tried.
        self.remember(run, outcome);
        Box::pin(std::future::ready(()))
    }
}

/// Every sink of one run: the journal, the executions table and, in the
/// daemon, the board.
pub struct Sinks<'a> {
    sinks: Vec<Box<dyn Reporter + 'a>>,
}

impl<'a> Sinks<'a> {
    /// The journal and the executions table of `ctx`.
    pub fn new(ctx: &'a JobContext) -> Sinks<'a> {
        let mut sinks: Vec<Box<dyn Reporter + 'a>> = vec![
            Box::new(JournalSink { ctx }),
            Box::new(super::tell::RecoverySink { ctx }),
            Box::new(ExecutionsSink {
                ctx,
                row: Mutex::new(None),
            }),
        ];
        if let Some(pings) = super::tell::PingSink::of(ctx) {
            sinks.push(Box::new(pings));
        }
        Sinks { sinks }
    }

    /// Also the job board (daemon runs).
    pub fn with_board(mut self, board: &'a JobBoard, job: &'a str) -> Sinks<'a> {
        self.sinks.push(Box::new(BoardSink {
            board,
            job,
            started_at: Mutex::new(None),
        }));
        self
    }
}

impl Reporter for Sinks<'_> {
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        Box::pin(async move {
            let mut execution = None;
            for sink in &self.sinks {
                execution = execution.or(sink.started(run).await);
            }
            execution
        })
    }

    fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            for sink in &self.sinks {
                sink.finished(run, outcome).await;
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod recording {
    //! A [`Reporter`] that remembers every call, for unit tests.

    use super::*;

    #[derive(Debug, Clone)]
    pub enum Call {
        Started(Run),
        Finished(Run, Box<Outcome>),
    }

    #[derive(Default)]
    pub struct Recorder {
        pub calls: Mutex<Vec<Call>>,
    }

    impl Recorder {
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// The one outcome reported, after at most one start; panics
        /// otherwise.
        pub fn single_outcome(&self) -> (usize, Outcome) {
            let calls = self.calls();
            let starts = calls
                .iter()
                .filter(|c| matches!(c, Call::Started(_)))
                .count();
            let finished: Vec<(&Run, &Outcome)> = calls
                .iter()
                .filter_map(|c| match c {
                    Call::Finished(run, o) => Some((run, &**o)),
                    Call::Started(_) => None,
                })
                .collect();
            assert_eq!(finished.len(), 1, "exactly one outcome: {calls:?}");
            assert!(
                matches!(calls.last(), Some(Call::Finished(..))),
                "the outcome comes last: {calls:?}"
            );
            let (run, outcome) = finished[0];
            assert!(
                calls
                    .iter()
                    .all(|c| !matches!(c, Call::Started(r) if r.kind != run.kind)),
                "one run: {calls:?}"
            );
            (starts, outcome.clone())
        }
    }

    impl Reporter for Recorder {
        fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
            self.calls.lock().unwrap().push(Call::Started(run.clone()));
            Box::pin(std::future::ready(None))
        }

        fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
            self.calls
                .lock()
                .unwrap()
                .push(Call::Finished(run.clone(), Box::new(outcome.clone())));
            Box::pin(std::future::ready(()))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each run kind, run for real against fs repositories with the
    //! catalog down (so no execution row exists), reports through a
    //! recording double: one start at most, then exactly one outcome.

    use std::collections::HashMap;
    use std::path::Path;

    use tokio_util::sync::CancellationToken;

    use super::recording::{Call, Recorder};
    use super::*;
    use crate::jobs::backup::{BackupError, Progress};
    use crate::jobs::restore::{RestoreError, RestoreRequest};
    use crate::jobs::{backup, mirror, prune, restore};
    use crate::journal::{Journal, JournalOptions};

    /// `tree` (files), `offsite` (mirror of its repository), `orders`
    /// (postgres, its source on a closed port); the catalog's pool closed.
    struct Fixture {
        dir: tempfile::TempDir,
        config: crate::config::Config,
        journal: Journal,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with_retention("")
        }

        /// `retention` is more `[jobs.tree.retention]` lines.
        fn with_retention(retention: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            std::fs::create_dir_all(root.join("src/sub")).unwrap();
            std::fs::write(root.join("src/a.txt"), b"alpha").unwrap();
            std::fs::write(root.join("src/sub/b.txt"), b"beta").unwrap();
            let text = format!(
                "[daemon]\nstate_dir = \"{r}/state\"\n\
                 [catalog]\nurl = \"postgres://vigil@127.0.0.1:1/vigil\"\n\
                 [repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{r}/repo\" }}\n\
                 [repositories.copy]\nscheme = \"fs\"\noptions = {{ root = \"{r}/copy\" }}\n\
                 [jobs.tree]\nkind = \"files\"\npaths = [\"{r}/src\"]\nrepository = \"local\"\nevery = \"1h\"\n\
                 [jobs.tree.retention]\nkeep_last = 1\n{retention}\n\
                 [jobs.offsite]\nkind = \"mirror\"\nrepository = \"local\"\nmirror_to = \"copy\"\nevery = \"1h\"\n\
                 [jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://u@127.0.0.1:1/orders\"\n\
                 databases = [\"orders\"]\nrepository = \"local\"\nevery = \"1h\"\n",
                r = root.display()
            );
            let config =
                crate::config::parse(&text, &root.join("config.toml"), &HashMap::new()).unwrap();
            let options = JournalOptions::from_config(&config, false);
            let journal = Journal::open(options, Default::default()).unwrap();
            Fixture {
                dir,
                config,
                journal,
            }
        }

        fn ctx(&self, job: &str) -> JobContext {
            let pool = crate::catalog::pool(&self.config.catalog).unwrap();
            pool.close();
            JobContext::new(
                &self.config,
                job,
                pool,
                "test-host",
                self.journal.clone(),
                crate::journal::cli_actor(),
            )
            .unwrap()
        }

        fn path(&self, rel: &str) -> std::path::PathBuf {
            self.dir.path().join(rel)
        }
    }

    async fn files_backup(
        ctx: &JobContext,
        report: &dyn Reporter,
    ) -> Result<Manifest, BackupError> {
        let cancel = CancellationToken::new();
        let progress = Progress::default();
        backup::run_scheduled(ctx, Trigger::Cli, None, &progress, &cancel, report).await
    }

    /// Two committed backups: `keep_last = 1` forgets the older.
    async fn two_backups(ctx: &JobContext) {
        for _ in 0..2 {
            files_backup(ctx, &Recorder::default()).await.unwrap();
            // Backup ids have a one-second resolution.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }

    fn started_runs(recorder: &Recorder) -> Vec<Run> {
        recorder
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Started(run) => Some(run),
                Call::Finished(..) => None,
            })
            .collect()
    }

    fn event_name(outcome: &Outcome) -> Option<&'static str> {
        outcome.event.as_ref().map(|e| e.name)
    }

    #[tokio::test]
    async fn a_files_backup_reports_its_commit_once() {
        let fx = Fixture::new();
        let ctx = fx.ctx("tree");
        let recorder = Recorder::default();
        let manifest = files_backup(&ctx, &recorder).await.unwrap();
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 1);
        let run = &started_runs(&recorder)[0];
        assert_eq!(
            (run.kind, run.repository.as_str()),
            (RunKind::Backup, "local")
        );
        assert_eq!(run.started.as_ref().map(|e| e.name), Some("backup.started"));
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(
            outcome.backup_id.as_deref(),
            Some(manifest.backup_id.as_str())
        );
        assert_eq!(outcome.source_bytes, Some(manifest.raw_bytes()));
        assert_eq!(event_name(&outcome), Some("backup.succeeded"));
        assert!(matches!(&outcome.fact, Fact::Backup(m) if m.backup_id == manifest.backup_id));
        assert!(outcome.details.is_some(), "a files run reports its report");
    }

    #[tokio::test]
    async fn a_failed_pg_backup_reports_its_failure_once() {
        let fx = Fixture::new();
        let ctx = fx.ctx("orders");
        let recorder = Recorder::default();
        let error = files_backup(&ctx, &recorder).await.unwrap_err();
        assert!(
            matches!(error, BackupError::SourceUnreachable { .. }),
            "{error}"
        );
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 1);
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(outcome.error.as_deref(), Some(error.to_string().as_str()));
        assert_eq!(event_name(&outcome), Some("backup.failed"));
        assert!(matches!(outcome.fact, Fact::None));
        assert_eq!(outcome.backup_id, None);
    }

    #[tokio::test]
    async fn a_prune_reports_its_deletions_once() {
        // The catalog is down, so the last run's outcome is unknown.
        let fx = Fixture::with_retention("prune_after_failure = true");
        let ctx = fx.ctx("tree");
        two_backups(&ctx).await;
        let recorder = Recorder::default();
        let done = prune::run_reported(&ctx, Trigger::Cli, false, &recorder)
            .await
            .unwrap();
        assert_eq!(done.deleted.len(), 1, "keep_last = 1 of 2");
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 1);
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(outcome.stored_bytes, Some(done.deleted[0].1));
        let event = outcome.event.as_ref().unwrap();
        assert_eq!((event.name, event.durable), ("prune.deleted", true));
        assert!(matches!(&outcome.fact, Fact::Prune(p) if p.deleted == done.deleted));
    }

    #[tokio::test]
    async fn a_refused_prune_reports_one_failure_and_no_start() {
        // Shipped defaults: with the last run unknown, nothing is pruned.
        let fx = Fixture::new();
        let ctx = fx.ctx("tree");
        two_backups(&ctx).await;
        let recorder = Recorder::default();
        let error = prune::run_reported(&ctx, Trigger::Cli, false, &recorder)
            .await
            .unwrap_err();
        assert!(matches!(error, prune::PruneError::Refused(_)), "{error}");
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 0, "refused before it began");
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(outcome.event, None, "no temp files: nothing deleted");
    }

    #[tokio::test]
    async fn a_dry_run_prune_reports_nothing() {
        let fx = Fixture::new();
        let ctx = fx.ctx("tree");
        let recorder = Recorder::default();
        prune::run_reported(&ctx, Trigger::Cli, true, &recorder)
            .await
            .unwrap();
        assert!(recorder.calls().is_empty(), "{:?}", recorder.calls());
    }

    #[tokio::test]
    async fn a_mirror_reports_its_copy_once() {
        let fx = Fixture::new();
        files_backup(&fx.ctx("tree"), &Recorder::default())
            .await
            .unwrap();
        let ctx = fx.ctx("offsite");
        let recorder = Recorder::default();
        let copied = mirror::run_reported(&ctx, Trigger::Cli, &CancellationToken::new(), &recorder)
            .await
            .unwrap();
        assert_eq!(copied.backups_completed, 1);
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 1);
        assert_eq!(started_runs(&recorder)[0].repository, "copy");
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(outcome.stored_bytes, Some(copied.copied_bytes));
        assert_eq!(event_name(&outcome), Some("mirror.succeeded"));
        assert!(matches!(&outcome.fact, Fact::Mirror(r) if *r == copied));
    }

    #[tokio::test]
    async fn a_files_restore_reports_once_and_a_refusal_says_so() {
        let fx = Fixture::new();
        let ctx = fx.ctx("tree");
        let manifest = files_backup(&ctx, &Recorder::default()).await.unwrap();
        let cancel = CancellationToken::new();
        let to = fx.path("restored");
        let request = RestoreRequest {
            to_dir: Some(to.clone()),
            ..RestoreRequest::default()
        };
        let recorder = Recorder::default();
        restore::run_reported(&ctx, &request, &cancel, &recorder)
            .await
            .unwrap();
        assert!(restored(&to).join("a.txt").is_file());
        let (starts, outcome) = recorder.single_outcome();
        assert_eq!(starts, 1);
        assert_eq!(outcome.status, Status::Succeeded);
        assert_eq!(
            outcome.backup_id.as_deref(),
            Some(manifest.backup_id.as_str())
        );
        assert_eq!(event_name(&outcome), Some("restore.succeeded"));

        // The directory is no longer empty: refused before it began.
        let recorder = Recorder::default();
        let error = restore::run_reported(&ctx, &request, &cancel, &recorder)
            .await
            .unwrap_err();
        assert!(matches!(error, RestoreError::TargetDir { .. }), "{error}");
        let (_, outcome) = recorder.single_outcome();
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(event_name(&outcome), Some("restore.refused"));
    }

    /// The directory under `to` that holds the restored `a.txt`.
    fn restored(to: &Path) -> std::path::PathBuf {
        let mut dirs = vec![to.to_owned()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                if entry.file_name() == "a.txt" {
                    return dir;
                }
                if entry.path().is_dir() {
                    dirs.push(entry.path());
                }
            }
        }
        to.to_owned()
    }

    #[test]
    fn the_board_folds_each_kind_of_outcome() {
        let board = JobBoard::default();
        let sink = BoardSink {
            board: &board,
            job: "tree",
            started_at: Mutex::new(None),
        };
        let fail = |kind| {
            sink.fold(kind, &Outcome::failed(Status::Failed, "boom".into(), None));
        };
        fail(RunKind::Backup);
        fail(RunKind::Prune);
        fail(RunKind::Restore);
        let state = board.get("tree").unwrap();
        assert_eq!((state.runs_total, state.failures_total), (1, 1));
        assert_eq!(state.prune.last_error.as_deref(), Some("boom"));
        let manifest = crate::core::manifest::tests::sample();
        let outcome = Outcome::succeeded(Fact::Backup(Box::new(manifest.clone())), None);
        sink.fold(RunKind::Backup, &outcome);
        let state = board.get("tree").unwrap();
        assert_eq!(state.last_success, Some(manifest.finished_at));
        assert_eq!(state.consecutive_failures, 0);
    }

    /// The status page's recent runs: every finished run, a skipped one
    /// too, newest first, with its start time and redacted error.
    #[tokio::test]
    async fn the_board_lists_every_finished_run_newest_first() {
        let board = JobBoard::default();
        let sinks = Sinks { sinks: vec![] }.with_board(&board, "tree");
        let run = Run {
            kind: RunKind::Backup,
            trigger: Trigger::Schedule,
            repository: "local".into(),
            started: None,
        };
        sinks.started(&run).await;
        let failed = Outcome::failed(Status::Failed, "connection refused".into(), None);
        sinks.finished(&run, &failed).await;
        let skipped = Outcome::failed(Status::Skipped, "locked".into(), None);
        sinks.finished(&run, &skipped).await;
        let runs = board.runs.list();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!((runs[0].status, runs[1].status), ("skipped", "failed"));
        assert_eq!(
            (runs[1].job.as_str(), runs[1].kind, runs[1].trigger),
            ("tree", "backup", "schedule")
        );
        assert_eq!(runs[1].error.as_deref(), Some("connection refused"));
        assert!(runs[1].started_at.is_some_and(|t| t <= runs[1].finished_at));
        // The skipped run is listed but leaves the job's counters alone.
        assert_eq!(board.get("tree").unwrap().runs_total, 1);
    }
}
