//! The operator API's endpoints: routing and what each one does.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::call::{Answer, Api, ApiError, Call, ReloadRequest};
use crate::core::auth::Permission;
use crate::core::retention::RetentionPolicy;
use crate::jobs::prune::PruneError;
use crate::jobs::prune_report::PruneReport;
use crate::jobs::{JobContext, Trigger};
use crate::state::JobState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Jobs,
    Job(String),
    Backups(String),
    Executions,
    RunBackup(String),
    RunPrune(String),
    Reload,
    Audit,
}

impl Endpoint {
    pub fn permission(&self) -> Permission {
        match self {
            Endpoint::Jobs | Endpoint::Job(_) => Permission::ReadJobs,
            Endpoint::Backups(_) => Permission::ReadBackups,
            Endpoint::Executions => Permission::ReadExecutions,
            Endpoint::RunBackup(_) => Permission::TriggerBackup,
            Endpoint::RunPrune(_) => Permission::TriggerPrune,
            Endpoint::Reload => Permission::Reload,
            Endpoint::Audit => Permission::ReadAudit,
        }
    }
}

/// `None`: no such path; `Err(allow)`: the path exists for other methods.
pub fn resolve(method: &Method, path: &str) -> Option<Result<Endpoint, &'static str>> {
    let rest = path.strip_prefix("/api/v1/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let (endpoint, wants_post) = match parts.as_slice() {
        ["jobs"] => (Endpoint::Jobs, false),
        ["jobs", job] if !job.is_empty() => (Endpoint::Job((*job).into()), false),
        ["jobs", job, "backups"] => (Endpoint::Backups((*job).into()), false),
        ["jobs", job, "backup"] => (Endpoint::RunBackup((*job).into()), true),
        ["jobs", job, "prune"] => (Endpoint::RunPrune((*job).into()), true),
        ["executions"] => (Endpoint::Executions, false),
        ["reload"] => (Endpoint::Reload, true),
        ["audit"] => (Endpoint::Audit, false),
        _ => return None,
    };
    Some(match (wants_post, get, post) {
        (false, true, _) | (true, _, true) => Ok(endpoint),
        (false, ..) => Err("GET, HEAD"),
        (true, ..) => Err("POST"),
    })
}

pub async fn serve(api: &Arc<Api>, call: &Call, endpoint: Endpoint, query: &str) -> Answer {
    let q = Query(query);
    match endpoint {
        Endpoint::Jobs => {
            let board = api.shared.jobs.snapshot();
            let jobs: Vec<Value> = api
                .jobs
                .values()
                .map(|ctx| job_summary(ctx, board.get(ctx.name.as_str())))
                .collect();
            Ok((StatusCode::OK, json!({ "jobs": jobs })))
        }
        Endpoint::Job(name) => {
            let ctx = job(api, &name)?;
            let mut body = job_summary(ctx, api.shared.jobs.get(&name).as_ref());
            body["retention"] = retention(&ctx.job.retention);
            Ok((StatusCode::OK, body))
        }
        Endpoint::Backups(name) => backups(job(api, &name)?).await,
        Endpoint::Executions => executions(api, &q).await,
        Endpoint::RunBackup(name) => run_backup(api, call, job(api, &name)?),
        Endpoint::RunPrune(name) => {
            let dry_run = !matches!(q.get("dry_run"), Some("false" | "0"));
            run_prune(api, call, job(api, &name)?, dry_run).await
        }
        Endpoint::Reload => reload(api, call).await,
        Endpoint::Audit => audit(api, &q).await,
    }
}

struct Query<'a>(&'a str);

impl Query<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == key).then_some(v)
        })
    }

    fn number(&self, key: &str, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(default),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| (0..=max).contains(n))
                .ok_or_else(|| bad_request(format!("`{key}` must be a number from 0 to {max}"))),
        }
    }

    fn word(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v)
                if v.len() <= 64
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                Ok(Some(v.to_owned()))
            }
            Some(_) => Err(bad_request(format!("`{key}` must be a plain name"))),
        }
    }
}

fn bad_request(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn job<'a>(api: &'a Api, name: &str) -> Result<&'a JobContext, ApiError> {
    api.jobs.get(name).ok_or_else(|| {
        let known: Vec<&str> = api.jobs.keys().map(String::as_str).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_job",
            format!("no job `{name}` (configured: {})", known.join(", ")),
        )
    })
}

fn job_summary(ctx: &JobContext, state: Option<&JobState>) -> Value {
    let default = JobState::default();
    let s = state.unwrap_or(&default);
    json!({
        "name": ctx.name,
        "repository": ctx.repo.name,
        "schedule": ctx.job.schedule,
        "every": ctx.job.every.map(|d| humantime::format_duration(d).to_string()),
        "timezone": ctx.job.timezone,
        "running": s.running.as_ref().map(|r| json!({
            "startedAt": r.started_at, "trigger": r.trigger, "sourceBytes": s.running_bytes(),
        })),
        "lastSuccess": s.last_success,
        "lastError": s.last_error,
        "nextRun": s.next_run,
        "backups": s.backups,
        "oldest": s.oldest,
        "runsTotal": s.runs_total,
        "failuresTotal": s.failures_total,
        "lastDurationSeconds": s.last_duration_seconds,
        "lastStoredBytes": s.last_stored_bytes,
        "lastSourceBytes": s.last_source_bytes,
        "prune": {
            "lastSuccess": s.prune.last_success,
            "lastError": s.prune.last_error,
            "deletedTotal": s.prune.deleted_total,
            "freedBytesTotal": s.prune.freed_bytes_total,
        },
    })
}

/// The job's retention policy in the API's camelCase (the config's own
/// serialisation keeps the TOML keys); durations as in the config file.
fn retention(r: &RetentionPolicy) -> Value {
    let human =
        |d: Option<std::time::Duration>| d.map(|d| humantime::format_duration(d).to_string());
    json!({
        "keepLast": r.keep_last,
        "keepHourly": r.keep_hourly,
        "keepDaily": r.keep_daily,
        "keepWeekly": r.keep_weekly,
        "keepMonthly": r.keep_monthly,
        "keepYearly": r.keep_yearly,
        "keepWithin": human(r.keep_within),
        "minKeep": r.min_keep,
        "pruneAfterFailure": r.prune_after_failure,
        "afterBackup": r.after_backup,
        "orphanGrace": human(Some(r.orphan_grace)),
        "schedule": r.schedule,
        "every": human(r.every),
    })
}

async fn backups(ctx: &JobContext) -> Answer {
    let unavailable = |e: crate::repo::RepoError| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "repository_unavailable",
            ctx.redact(&e.to_string()),
        )
    };
    let listing = ctx.repo.list(&ctx.name).await.map_err(unavailable)?;
    let pins = ctx.repo.pins(&ctx.name).await.map_err(unavailable)?;
    let backups: Vec<Value> = listing
        .backups
        .iter()
        .map(|m| {
            json!({
                "backupId": m.backup_id,
                "startedAt": m.started_at,
                "finishedAt": m.finished_at,
                "storedBytes": m.stored_bytes(),
                "sourceBytes": m.raw_bytes(),
                "objects": m.objects.iter().map(|o| &o.name).collect::<Vec<_>>(),
                "encrypted": m.encryption.is_some(),
                "pinned": pins.contains(m.backup_id.as_str()),
                "journalHead": m.journal_head,
            })
        })
        .collect();
    let damaged: Vec<Value> = listing
        .damaged
        .iter()
        .map(|(id, why)| json!({ "backupId": id, "error": why }))
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "job": ctx.name, "backups": backups, "uncommitted": listing.uncommitted, "damaged": damaged }),
    ))
}

async fn executions(api: &Api, q: &Query<'_>) -> Answer {
    let job = q.word("job")?;
    let kind = q.word("kind")?;
    let status = q.word("status")?;
    let limit = q.number("limit", 50, 500)?;
    let before = match q.get("before") {
        None | Some("") => None,
        Some(_) => Some(q.number("before", 0, i64::MAX)?),
    };
    let catalog =
        |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable", e);
    let client = api
        .pool
        .get()
        .await
        .map_err(|e| catalog(crate::catalog::describe(&e)))?;
    let rows = client
        .query(
            "SELECT id, job, kind, trigger, status, host, repository, backup_id, started_at, \
             finished_at, source_bytes, stored_bytes, error FROM vigil.executions \
             WHERE ($1::text IS NULL OR job = $1) AND ($2::text IS NULL OR kind = $2) \
             AND ($3::text IS NULL OR status = $3) AND ($4::int8 IS NULL OR id < $4) \
             ORDER BY id DESC LIMIT $5",
            &[&job, &kind, &status, &before, &limit],
        )
        .await
        .map_err(|e| catalog(crate::catalog::describe_postgres(&e)))?;
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "job": r.get::<_, String>(1),
                "kind": r.get::<_, String>(2),
                "trigger": r.get::<_, String>(3),
                "status": r.get::<_, String>(4),
                "host": r.get::<_, String>(5),
                "repository": r.get::<_, Option<String>>(6),
                "backupId": r.get::<_, Option<String>>(7),
                "startedAt": r.get::<_, chrono::DateTime<chrono::Utc>>(8),
                "finishedAt": r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(9),
                "sourceBytes": r.get::<_, Option<i64>>(10),
                "storedBytes": r.get::<_, Option<i64>>(11),
                "error": r.get::<_, Option<String>>(12),
            })
        })
        .collect();
    // A full page may have more behind it: `before` the last id fetches it.
    let next = (items.len() as i64 == limit && limit > 0)
        .then(|| rows.last().map(|r| r.get::<_, i64>(0)))
        .flatten();
    Ok((
        StatusCode::OK,
        json!({ "executions": items, "nextBefore": next }),
    ))
}

/// The context a call acts through: the token is the actor.
fn acting(ctx: &JobContext, call: &Call) -> JobContext {
    let mut ctx = ctx.clone();
    ctx.actor = call.actor();
    ctx.request_id = Some(call.request_id.clone());
    ctx
}

fn run_backup(api: &Arc<Api>, call: &Call, ctx: &JobContext) -> Answer {
    // Claimed here, not in the task: two requests arriving together must
    // not both be accepted (the second would only find the job locked).
    let claim = crate::state::Running {
        started_at: chrono::Utc::now(),
        trigger: Trigger::Api.as_str(),
        source_bytes: Default::default(),
    };
    if let Err(running) = api.shared.jobs.claim_run(&ctx.name, claim) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_running",
            format!(
                "job `{}` is already running (started {} by {})",
                ctx.name, running.started_at, running.trigger
            ),
        ));
    }
    let ctx = acting(ctx, call);
    let (shared, cancel) = (Arc::clone(&api.shared), api.cancel.child_token());
    let job = ctx.name.clone();
    api.tasks.spawn(async move {
        crate::jobs::scheduler::run_once(&ctx, &shared, Trigger::Api, None, &cancel).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        json!({ "job": job, "status": "started", "requestId": call.request_id, "follow": format!("/api/v1/jobs/{job}") }),
    ))
}

async fn run_prune(api: &Arc<Api>, call: &Call, ctx: &JobContext, dry_run: bool) -> Answer {
    let ctx = acting(ctx, call);
    let outcome = if dry_run {
        crate::jobs::prune::run(&ctx, Trigger::Api, true).await
    } else {
        crate::jobs::scheduler::prune_and_record(&ctx, &api.shared, Trigger::Api).await
    };
    let outcome = outcome.map_err(|e| {
        ApiError::new(
            prune_status(&e),
            "prune_refused",
            ctx.redact(&e.to_string()),
        )
    })?;
    let report = PruneReport::new(&ctx.name, &outcome);
    Ok((StatusCode::OK, json!(report)))
}

/// 503 when the journal cannot record the deletions (retry once it can),
/// 409 when the prune itself was refused (lock held, plan refused, ...).
fn prune_status(error: &PruneError) -> StatusCode {
    match error {
        PruneError::Journal(_) => StatusCode::SERVICE_UNAVAILABLE,
        PruneError::Repo(_)
        | PruneError::Locked(_)
        | PruneError::Lock(_)
        | PruneError::Refused(_) => StatusCode::CONFLICT,
    }
}

async fn reload(api: &Api, call: &Call) -> Answer {
    let (answer, result) = tokio::sync::oneshot::channel();
    let request = ReloadRequest {
        actor: call.actor(),
        request_id: call.request_id.clone(),
        answer,
    };
    let gone = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "vigil is shutting down",
        )
    };
    api.reload.send(request).await.map_err(|_| gone())?;
    match result.await.map_err(|_| gone())? {
        Ok(changes) => {
            let changed: Vec<Value> = changes
                .iter()
                .map(|c| json!({ "key": c.key, "old": c.old, "new": c.new, "live": c.live }))
                .collect();
            Ok((
                StatusCode::OK,
                json!({ "reloaded": true, "changes": changed }),
            ))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reload_refused",
            e.to_string(),
        )),
    }
}

async fn audit(api: &Api, q: &Query<'_>) -> Answer {
    let since = q.number("since_seq", 0, i64::MAX)? as u64;
    let limit = q.number("limit", 100, 1000)? as usize;
    let dir = api.journal.dir().to_owned();
    let records = tokio::task::spawn_blocking(move || {
        crate::journal::tail::Tail::after(&dir, since).and_then(|mut t| t.read(limit))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "journal_unreadable",
            e.to_string(),
        )
    })?;
    let next = records.last().map(|(r, _)| r.seq);
    let records: Vec<_> = records.into_iter().map(|(r, _)| r).collect();
    Ok((
        StatusCode::OK,
        json!({ "journal": api.journal.id(), "records": records, "nextSinceSeq": next }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_status_is_chosen_by_variant_not_text() {
        let journal = PruneError::Journal(crate::journal::JournalError::Closed);
        assert_eq!(prune_status(&journal), StatusCode::SERVICE_UNAVAILABLE);
        // A job whose name says "journal" is still a plain refusal: the old
        // text match answered 503 here.
        let locked = PruneError::Locked("journal-sync".into());
        assert!(locked.to_string().contains("journal"));
        assert_eq!(prune_status(&locked), StatusCode::CONFLICT);
        let refused = PruneError::Refused("the journal says no".into());
        assert_eq!(prune_status(&refused), StatusCode::CONFLICT);
    }

    #[test]
    fn routes_and_methods() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(resolve(&get, "/api/v1/jobs"), Some(Ok(Endpoint::Jobs)));
        assert_eq!(
            resolve(&get, "/api/v1/jobs/orders/backups"),
            Some(Ok(Endpoint::Backups("orders".into())))
        );
        assert_eq!(
            resolve(&post, "/api/v1/jobs/orders/prune"),
            Some(Ok(Endpoint::RunPrune("orders".into())))
        );
        assert_eq!(
            resolve(&get, "/api/v1/jobs/orders/backup"),
            Some(Err("POST"))
        );
        assert_eq!(resolve(&post, "/api/v1/audit"), Some(Err("GET, HEAD")));
        assert_eq!(resolve(&get, "/api/v1/nope"), None);
        assert_eq!(resolve(&get, "/api/v2/jobs"), None);
    }

    #[test]
    fn every_endpoint_maps_to_a_permission_of_the_table() {
        use crate::core::auth::Role;
        let reload = Endpoint::Reload.permission();
        assert!(Role::Admin.allows(reload) && !Role::Operator.allows(reload));
        let backup = Endpoint::RunBackup("x".into()).permission();
        assert!(Role::Operator.allows(backup) && !Role::Viewer.allows(backup));
        assert!(Role::Viewer.allows(Endpoint::Jobs.permission()));
        assert!(!Role::Operator.allows(Endpoint::Audit.permission()));
    }

    #[test]
    fn query_parsing_is_strict() {
        let q = Query("job=orders&limit=20&kind=back%20up");
        assert_eq!(q.word("job").unwrap().as_deref(), Some("orders"));
        assert_eq!(q.number("limit", 50, 500).unwrap(), 20);
        assert!(q.word("kind").is_err());
        assert!(Query("limit=9999").number("limit", 50, 500).is_err());
        assert_eq!(Query("").number("limit", 50, 500).unwrap(), 50);
    }
}
