//! Leases: small create-only lock objects in the repository, the job lock
//! when the catalog cannot be reached (the policy lives in `jobs::lock`).
//!
//! A lease at `<prefix>/<job>/locks/<name>` names its holder (instance, pid,
//! a random token) and when it expires. Only the storage's create-only write
//! decides who holds it:
//!
//! - **Acquire**: create-only write. If the object exists and is live, the
//!   lease is busy. If its holder is gone (the lease expired more than
//!   [`CLOCK_SKEW`] ago, or its holder ran on this machine, same boot and
//!   pid namespace, and its pid no longer exists: kill -9), it is taken
//!   over (below), then create-only again: of several racers, exactly one
//!   creates it.
//! - **Take over** a stale lease with token `t`: deleting it is the
//!   dangerous step (a racer that read the same stale lease could delete
//!   the fresh lease another racer has just created). So the right to
//!   delete it is itself taken create-only: whoever creates
//!   `<name>.takeover-<t>` first re-reads the lease, deletes it only if it
//!   still carries token `t`, then removes its claim. A later racer that
//!   wins the claim re-reads and finds another token, and backs off. A
//!   claim abandoned by a crash is stale in turn and taken over the same
//!   way, one level deeper.
//! - **Renew** (overwrite) and **release** (delete) happen only while the
//!   lease is ours and unexpired by our own clock; a taker waits for
//!   expiry plus [`CLOCK_SKEW`], so the two never meet while clocks agree
//!   within that margin.
//!
//! Create-only is `If-None-Match: *` on object stores. On fs, opendal's
//! `if_not_exists` with `atomic_write_dir` is check-then-rename (two racers
//! both "win"), so a lease is written to a temp file and hard-linked into
//! place: `link(2)` fails atomically when the name exists. Services without
//! create-only writes (FTP) fall back to check-then-write, which narrows
//! but does not close the race.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opendal::ErrorKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{RepoError, Repository};

/// Leases are format-versioned like manifests.
pub const LEASE_FORMAT: u32 = 1;
/// How far apart two hosts' clocks may be: a lease is stale only this long
/// after its expiry.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);
/// Abandoned takeover claims followed before giving up (each level needs a
/// crash in the middle of a takeover).
const MAX_TAKEOVER_DEPTH: usize = 3;

/// What a lease object holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    pub format_version: u32,
    /// The holder's instance name (`daemon.instance`, else the hostname).
    pub instance: String,
    pub pid: u32,
    /// Which kernel and pid namespace `pid` belongs to (boot id and pid
    /// namespace): a holder on this same machine is known dead at once.
    #[serde(default)]
    pub machine: String,
    /// Random per acquisition: tells this holding apart from any other.
    pub token: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl LeaseRecord {
    /// A fresh record for this process, valid for `ttl` from now.
    pub fn new(instance: &str, ttl: Duration) -> LeaseRecord {
        let now = Utc::now();
        LeaseRecord {
            format_version: LEASE_FORMAT,
            instance: instance.to_owned(),
            pid: std::process::id(),
            machine: this_machine(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            acquired_at: now,
            expires_at: now + ttl,
        }
    }

    /// Expired, and by more than the clock skew we allow between hosts.
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        now > self.expires_at + CLOCK_SKEW
    }

    /// Its holder is gone: stale, or a process of this machine that no
    /// longer exists (killed; no need to wait for the expiry).
    pub fn is_abandoned(&self, now: DateTime<Utc>) -> bool {
        self.is_stale(now) || self.holder_died_here()
    }

    /// Held by this very process, yet not by any of its live runs: an
    /// earlier run's lease whose release failed (the service was down).
    fn left_by_this_process(&self) -> bool {
        let here = this_machine();
        !here.is_empty()
            && self.machine == here
            && self.pid == std::process::id()
            && !holds(&self.token)
    }

    fn holder_died_here(&self) -> bool {
        let here = this_machine();
        !here.is_empty()
            && self.machine == here
            && !std::path::Path::new("/proc")
                .join(self.pid.to_string())
                .exists()
    }

    /// Still ours to renew or release by our own clock.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// "instance (pid N, until T)" for logs and errors.
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, lease until {})",
            self.instance,
            self.pid,
            self.expires_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    fn encode(&self) -> Vec<u8> {
        // A plain struct of strings, numbers and times always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// The tokens of the leases this process holds now.
static HELD: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn hold(token: &str) {
    if let Ok(mut held) = HELD.lock() {
        held.insert(token.to_owned());
    }
}

fn unhold(token: &str) {
    if let Ok(mut held) = HELD.lock() {
        held.remove(token);
    }
}

/// Whether a live run of this process holds `token` (when unsure: yes,
/// so the lease is waited for rather than taken from a live run).
fn holds(token: &str) -> bool {
    HELD.lock().map_or(true, |held| held.contains(token))
}

/// This kernel's boot id and our pid namespace; empty where unknown (then
/// only expiry tells a dead holder). A pid means the same process only
/// within one namespace of one boot.
fn this_machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id");
    let pidns = std::fs::read_link("/proc/self/ns/pid");
    match (boot, pidns) {
        (Ok(boot), Ok(ns)) => format!("{}/{}", boot.trim(), ns.display()),
        _ => String::new(),
    }
}

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(
        "repository `{repo}`: lease {path} is unreadable ({detail}); if no vigil is running this job, delete that object"
    )]
    Damaged {
        repo: String,
        path: String,
        detail: String,
    },
    #[error(
        "repository `{repo}`: lease {path} is no longer ours (now: {holder}); the run stops so that two never run at once"
    )]
    Lost {
        repo: String,
        path: String,
        holder: String,
    },
    #[error(
        "repository `{repo}`: lease {path} has {depth} abandoned takeover claims in a row; if no vigil is running this job, delete {path}.takeover-*"
    )]
    Abandoned {
        repo: String,
        path: String,
        depth: usize,
    },
}

/// The outcome of [`acquire`].
#[derive(Debug)]
pub enum Acquired {
    /// Ours, until renewed or released.
    Held(LeaseRecord),
    /// Someone else's live lease.
    Busy(LeaseRecord),
}

/// `<prefix>/<job>/locks/<name>`.
pub fn lease_path(repo: &Repository, job: &str, name: &str) -> String {
    repo.join(&[job, "locks", name])
}

/// Takes the lease at `path` for `ours`, taking over a stale one.
pub async fn acquire(
    repo: &Repository,
    path: &str,
    ours: &LeaseRecord,
) -> Result<Acquired, LeaseError> {
    // Held before it is created: no other run of ours sees it unheld.
    hold(&ours.token);
    let acquired = try_acquire(repo, path, ours).await;
    if !matches!(acquired, Ok(Acquired::Held(_))) {
        unhold(&ours.token);
    }
    acquired
}

async fn try_acquire(
    repo: &Repository,
    path: &str,
    ours: &LeaseRecord,
) -> Result<Acquired, LeaseError> {
    // A few rounds: a holder may release between our create and our read.
    for _ in 0..3 {
        if create_only(repo, path, &ours.encode()).await? {
            return Ok(Acquired::Held(ours.clone()));
        }
        let Some(current) = read(repo, path).await? else {
            continue;
        };
        // A retried PUT whose first attempt landed answers "exists".
        if current.token == ours.token {
            return Ok(Acquired::Held(current));
        }
        // Takeover claims are never checked this way: a claim is no
        // lease, its token is never held.
        if !current.is_abandoned(Utc::now()) && !current.left_by_this_process() {
            return Ok(Acquired::Busy(current));
        }
        tracing::warn!(path, holder = %current.describe(), "taking over the lease of a holder that is gone");
        // Won or not, the next round says who holds it now.
        take_over(repo, path, &current, ours, 0).await?;
    }
    match read(repo, path).await? {
        Some(current) if current.token == ours.token => Ok(Acquired::Held(current)),
        Some(current) => Ok(Acquired::Busy(current)),
        None => Ok(Acquired::Busy(ours.clone())),
    }
}

/// Deletes the stale object at `path` (token `stale.token`) if we win the
/// right to; `false` when another racer did or is doing it.
async fn take_over(
    repo: &Repository,
    path: &str,
    stale: &LeaseRecord,
    ours: &LeaseRecord,
    depth: usize,
) -> Result<bool, LeaseError> {
    if depth >= MAX_TAKEOVER_DEPTH {
        return Err(LeaseError::Abandoned {
            repo: repo.name.clone(),
            path: path.to_owned(),
            depth,
        });
    }
    let claim_path = format!("{path}.takeover-{}", stale.token);
    if !claim(repo, &claim_path, ours, depth).await? {
        return Ok(false);
    }
    let won = match read(repo, path).await? {
        Some(current) if current.token == stale.token => {
            delete(repo, path).await?;
            true
        }
        Some(_) => false,
        None => true,
    };
    // Safe to drop: a later claimant re-reads and finds the token gone.
    delete(repo, &claim_path).await?;
    Ok(won)
}

/// Creates the takeover claim at `claim_path`, taking over an abandoned one.
async fn claim(
    repo: &Repository,
    claim_path: &str,
    ours: &LeaseRecord,
    depth: usize,
) -> Result<bool, LeaseError> {
    if create_only(repo, claim_path, &ours.encode()).await? {
        return Ok(true);
    }
    let Some(other) = read(repo, claim_path).await? else {
        // The other claimant finished; the lease is fresh or free again.
        return Ok(false);
    };
    if !other.is_abandoned(Utc::now()) {
        return Ok(false);
    }
    if !Box::pin(take_over(repo, claim_path, &other, ours, depth + 1)).await? {
        return Ok(false);
    }
    create_only(repo, claim_path, &ours.encode()).await
}

/// Extends our lease to `ttl` from now; [`LeaseError::Lost`] if it is no
/// longer ours or has expired by our clock (a taker may be on its way).
pub async fn renew(
    repo: &Repository,
    path: &str,
    ours: &LeaseRecord,
    ttl: Duration,
) -> Result<LeaseRecord, LeaseError> {
    let lost = |holder: String| LeaseError::Lost {
        repo: repo.name.clone(),
        path: path.to_owned(),
        holder,
    };
    if !ours.is_live(Utc::now()) {
        return Err(lost(format!("expired at {}", ours.expires_at.to_rfc3339())));
    }
    match read(repo, path).await? {
        Some(current) if current.token == ours.token => {}
        Some(other) => return Err(lost(other.describe())),
        None => return Err(lost("nobody (deleted)".into())),
    }
    let renewed = LeaseRecord {
        expires_at: Utc::now() + ttl,
        ..ours.clone()
    };
    repo.op()
        .write(path, renewed.encode())
        .await
        .map_err(|e| repo.storage_err("cannot renew", path, e))?;
    Ok(renewed)
}

/// Deletes our lease if it is still ours and live; otherwise leaves it
/// (someone may have taken it over).
pub async fn release(repo: &Repository, path: &str, ours: &LeaseRecord) -> Result<(), LeaseError> {
    // Released or not, no run of ours holds it any more: if the delete
    // fails, our next run takes it over instead of waiting for its expiry.
    unhold(&ours.token);
    if !ours.is_live(Utc::now()) {
        return Ok(());
    }
    match read(repo, path).await? {
        Some(current) if current.token == ours.token => delete(repo, path).await,
        _ => Ok(()),
    }
}

/// The lease at `path`, `None` if there is none.
pub async fn read(repo: &Repository, path: &str) -> Result<Option<LeaseRecord>, LeaseError> {
    let bytes = match repo.op().read(path).await {
        Ok(b) => b.to_vec(),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(repo.storage_err("cannot read", path, e).into()),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| LeaseError::Damaged {
            repo: repo.name.clone(),
            path: path.to_owned(),
            detail: e.to_string(),
        })
}

async fn delete(repo: &Repository, path: &str) -> Result<(), LeaseError> {
    repo.op()
        .delete(path)
        .await
        .map_err(|e| repo.storage_err("cannot delete", path, e).into())
}

/// Writes `bytes` at `path` only if nothing is there; `false` if something is.
async fn create_only(repo: &Repository, path: &str, bytes: &[u8]) -> Result<bool, LeaseError> {
    if let Some(root) = &repo.fs_root {
        return repo
            .fs_create_new(root, path, bytes.to_vec())
            .await
            .map_err(LeaseError::Repo);
    }
    if !repo.guarantees.create_only_commit {
        // The strongest this service allows: look, then write.
        match repo.op().exists(path).await {
            Ok(true) => return Ok(false),
            Ok(false) => {}
            Err(e) => return Err(repo.storage_err("cannot stat", path, e).into()),
        }
    }
    let written = repo
        .op()
        .write_with(path, bytes.to_vec())
        .if_not_exists(repo.guarantees.create_only_commit)
        .await;
    match written {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(false),
        Err(e) => Err(repo.storage_err("cannot create", path, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_repo(root: &std::path::Path) -> Repository {
        let config: crate::config::RepositoryConfig = toml::from_str(&format!(
            "scheme = \"fs\"\noptions = {{ root = \"{}\" }}\nlease_ttl = \"3s\"\n",
            root.display()
        ))
        .unwrap();
        Repository::open("local", &config).unwrap()
    }

    fn expired(instance: &str) -> LeaseRecord {
        let mut record = LeaseRecord::new(instance, Duration::from_secs(3));
        record.expires_at = Utc::now() - chrono::Duration::seconds(60);
        record
    }

    #[tokio::test]
    async fn a_live_lease_is_busy_and_released_only_by_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let a = LeaseRecord::new("a", Duration::from_secs(30));
        let b = LeaseRecord::new("b", Duration::from_secs(30));
        assert!(matches!(
            acquire(&repo, &path, &a).await.unwrap(),
            Acquired::Held(_)
        ));
        match acquire(&repo, &path, &b).await.unwrap() {
            Acquired::Busy(holder) => assert_eq!(holder.token, a.token),
            other => panic!("expected busy, got {other:?}"),
        }
        release(&repo, &path, &b).await.unwrap();
        assert_eq!(read(&repo, &path).await.unwrap().unwrap().token, a.token);
        release(&repo, &path, &a).await.unwrap();
        assert!(read(&repo, &path).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_stale_lease_is_taken_over_and_its_holder_learns_it_lost() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let dead = expired("dead");
        assert!(create_only(&repo, &path, &dead.encode()).await.unwrap());
        let ours = LeaseRecord::new("ours", Duration::from_secs(30));
        match acquire(&repo, &path, &ours).await.unwrap() {
            Acquired::Held(held) => assert_eq!(held.token, ours.token),
            other => panic!("expected the stale lease taken over, got {other:?}"),
        }
        // The old holder's clock says expired: it neither renews nor deletes.
        assert!(matches!(
            renew(&repo, &path, &dead, Duration::from_secs(30)).await,
            Err(LeaseError::Lost { .. })
        ));
        release(&repo, &path, &dead).await.unwrap();
        assert_eq!(read(&repo, &path).await.unwrap().unwrap().token, ours.token);
        // No takeover claim is left behind.
        let locks = std::fs::read_dir(dir.path().join("orders/locks")).unwrap();
        assert_eq!(locks.count(), 1);
    }

    #[tokio::test]
    async fn an_abandoned_takeover_claim_is_taken_over_too() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let dead = expired("dead");
        create_only(&repo, &path, &dead.encode()).await.unwrap();
        // A racer crashed after claiming the takeover, before deleting.
        let crashed = expired("crashed");
        let claim_path = format!("{path}.takeover-{}", dead.token);
        create_only(&repo, &claim_path, &crashed.encode())
            .await
            .unwrap();
        let ours = LeaseRecord::new("ours", Duration::from_secs(30));
        assert!(matches!(
            acquire(&repo, &path, &ours).await.unwrap(),
            Acquired::Held(_)
        ));
    }

    #[tokio::test]
    async fn a_dead_holder_on_this_machine_is_taken_over_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let mut exited = std::process::Command::new("true").spawn().unwrap();
        exited.wait().unwrap();
        let mut dead = LeaseRecord::new("here", Duration::from_secs(600));
        dead.pid = exited.id();
        create_only(&repo, &path, &dead.encode()).await.unwrap();
        let ours = LeaseRecord::new("ours", Duration::from_secs(30));
        assert!(matches!(
            acquire(&repo, &path, &ours).await.unwrap(),
            Acquired::Held(_)
        ));
        // The same dead pid on another machine may be a live process there.
        let elsewhere_path = lease_path(&repo, "other", "run");
        let elsewhere = LeaseRecord {
            machine: "another-boot/pid:[1]".into(),
            ..dead
        };
        create_only(&repo, &elsewhere_path, &elsewhere.encode())
            .await
            .unwrap();
        assert!(matches!(
            acquire(&repo, &elsewhere_path, &ours).await.unwrap(),
            Acquired::Busy(_)
        ));
    }

    #[tokio::test]
    async fn our_own_lease_that_failed_to_release_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let Acquired::Held(first) = acquire(
            &repo,
            &path,
            &LeaseRecord::new("here", Duration::from_secs(600)),
        )
        .await
        .unwrap() else {
            panic!("the first acquire must hold");
        };
        // A second run of ours while the first holds it: busy.
        let second = LeaseRecord::new("here", Duration::from_secs(600));
        assert!(matches!(
            acquire(&repo, &path, &second).await.unwrap(),
            Acquired::Busy(_)
        ));
        // The first run ends but its delete never reached the service.
        unhold(&first.token);
        assert!(matches!(
            acquire(&repo, &path, &second).await.unwrap(),
            Acquired::Held(_)
        ));
    }

    #[tokio::test]
    async fn renewal_extends_our_lease() {
        let dir = tempfile::tempdir().unwrap();
        let repo = fs_repo(dir.path());
        let path = lease_path(&repo, "orders", "run");
        let ours = LeaseRecord::new("ours", Duration::from_secs(5));
        acquire(&repo, &path, &ours).await.unwrap();
        let renewed = renew(&repo, &path, &ours, Duration::from_secs(600))
            .await
            .unwrap();
        assert!(renewed.expires_at > ours.expires_at + chrono::Duration::seconds(500));
        assert_eq!(read(&repo, &path).await.unwrap().unwrap(), renewed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racers_for_a_stale_lease_have_one_winner() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let repo = fs_repo(dir.path());
            let path = lease_path(&repo, "orders", "run");
            create_only(&repo, &path, &expired("dead").encode())
                .await
                .unwrap();
            let racers = (0..6).map(|i| {
                let (repo, path) = (repo.clone(), path.clone());
                tokio::spawn(async move {
                    let ours = LeaseRecord::new(&format!("racer{i}"), Duration::from_secs(30));
                    acquire(&repo, &path, &ours).await.unwrap()
                })
            });
            let outcomes = futures::future::join_all(racers).await;
            let winners: Vec<String> = outcomes
                .into_iter()
                .filter_map(|o| match o.unwrap() {
                    Acquired::Held(h) => Some(h.token),
                    Acquired::Busy(_) => None,
                })
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let stored = read(&repo, &path).await.unwrap().unwrap();
            assert_eq!(stored.token, winners[0], "round {round}");
        }
    }
}
