//! The run sinks that tell people ([`crate::notify`]): pings of each
//! backup, mirror, verification or drill run, and `backup.recovered` on the first success
//! after failed runs.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::JobContext;
use super::report::{Outcome, Reporter, Run, RunKind, Status};
use crate::notify::edges;
use crate::notify::ping::{Ping, RunPings};

/// `[jobs.<name>.ping]`: start, then success or fail, in that order.
pub struct PingSink<'a> {
    ctx: &'a JobContext,
    pings: Mutex<Option<RunPings>>,
}

impl<'a> PingSink<'a> {
    /// A sink when the job has a ping configured.
    pub fn of(ctx: &'a JobContext) -> Option<PingSink<'a>> {
        (!ctx.job.pings().is_empty()).then(|| PingSink {
            ctx,
            pings: Mutex::new(None),
        })
    }

    /// The ping watching runs of `kind`: `[ping]` the backups (or a
    /// mirror's copies), `[verify.ping]` and `[drill.ping]` their own.
    /// Prunes and restores are pinged by none.
    fn config(&self, kind: RunKind) -> Option<&'a crate::config::PingConfig> {
        let job = &self.ctx.job;
        match kind {
            RunKind::Backup | RunKind::Mirror => job.ping.as_ref(),
            RunKind::Verify => job.verify.as_ref()?.ping.as_ref(),
            RunKind::Drill => job.drill.as_ref()?.ping.as_ref(),
            RunKind::Prune | RunKind::Restore => None,
        }
    }

    fn send(&self, run: &Run, ping: Ping) {
        let Some(config) = self.config(run.kind) else {
            return;
        };
        let mut pings = self.pings.lock().unwrap_or_else(|p| p.into_inner());
        pings
            .get_or_insert_with(|| self.ctx.pings.run(&self.ctx.name, config))
            .send(ping);
    }
}

impl Reporter for PingSink<'_> {
    fn started<'a>(&'a self, run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        self.send(run, Ping::Start);
        Box::pin(std::future::ready(None))
    }

    fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        match outcome.status {
            Status::Succeeded => self.send(run, Ping::Success),
            Status::Failed | Status::Aborted => {
                let error = outcome.error.as_deref().unwrap_or("unknown error");
                let reason = format!(
                    "vigil: {} of job `{}` {}: {}",
                    run.kind.as_str(),
                    self.ctx.name,
                    outcome.status.as_str(),
                    self.ctx.redact(error)
                );
                self.send(run, Ping::Fail(reason));
            }
            // Another vigil ran it; that one pings.
            Status::Skipped => {}
        }
        // The run is over: its task ends once its pings are sent.
        self.pings.lock().unwrap_or_else(|p| p.into_inner()).take();
        Box::pin(std::future::ready(()))
    }
}

/// `backup.recovered`: the failed-run streak is kept in `state_dir`, so
/// the edge is seen whether the daemon or a CLI command ran either side.
pub struct RecoverySink<'a> {
    pub ctx: &'a JobContext,
}

impl Reporter for RecoverySink<'_> {
    fn started<'a>(&'a self, _run: &'a Run) -> BoxFuture<'a, Option<i64>> {
        Box::pin(std::future::ready(None))
    }

    fn finished<'a>(&'a self, run: &'a Run, outcome: &'a Outcome) -> BoxFuture<'a, ()> {
        if run.kind == RunKind::Backup {
            self.fold(outcome);
        }
        Box::pin(std::future::ready(()))
    }
}

impl RecoverySink<'_> {
    fn fold(&self, outcome: &Outcome) {
        let (dir, job) = (&self.ctx.state_dir, &self.ctx.name);
        let result = match outcome.status {
            Status::Failed => edges::backup_failed(dir, job).map(|_| ()),
            Status::Succeeded => edges::backup_succeeded(dir, job).map(|ended| {
                if let Some(failed_runs) = ended {
                    let data = serde_json::json!({
                        "failed_runs": failed_runs,
                        "backup_id": outcome.backup_id,
                    });
                    self.ctx
                        .journal
                        .emit(self.ctx.event("backup.recovered", data));
                }
            }),
            Status::Skipped | Status::Aborted => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(job = %job, dir = %dir.display(), error = %e, "cannot keep the job's failed-run streak; `backup.recovered` may be missed");
        }
    }
}
