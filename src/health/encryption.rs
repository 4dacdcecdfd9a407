//! `<repo>:encryption`: whether the configured `identity_file` can decrypt
//! the backups in the repository. Manifests record the recipients' public
//! keys, so this needs no secret beyond the identity's own public key: a
//! backup written to another key (a rotated config, another vigil writing
//! to the same place) warns here instead of failing its restore.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::Check;
use crate::config::HealthConfig;
use crate::config::identity::{can_decrypt, public_keys, read_identities};
use crate::core::health::{CheckSpec, Observation, Status};
use crate::core::manifest::Manifest;
use crate::repo::Repository;

/// Names at most this many undecryptable backups in the output.
const NAMED: usize = 5;

pub struct EncryptionCheck {
    pub repo: Repository,
    /// The jobs that back up into this repository.
    pub jobs: Vec<String>,
    pub identity_file: PathBuf,
}

/// The check for `ctx`'s repository, when it has an identity to check.
pub fn for_repository(
    config: &crate::config::Config,
    ctx: &crate::jobs::JobContext,
) -> Option<std::sync::Arc<dyn Check>> {
    let identity_file = ctx.identity_file.clone()?;
    let jobs = config
        .jobs
        .iter()
        .filter(|(_, j)| j.repository == ctx.repo.name && j.kind != crate::config::JobKind::Mirror)
        .map(|(name, _)| name.clone())
        .collect();
    Some(std::sync::Arc::new(EncryptionCheck {
        repo: ctx.repo.clone(),
        jobs,
        identity_file,
    }))
}

impl Check for EncryptionCheck {
    fn spec(&self, config: &HealthConfig) -> CheckSpec {
        CheckSpec {
            key: format!("{}:encryption", self.repo.name),
            component_id: self.repo.name.clone(),
            component_type: "datastore",
            // Reads every manifest: on the write probe's cadence, not every round.
            interval: self.repo.writable_interval,
            timeout: config.timeout.max(Duration::from_secs(30)),
            critical: true,
            periodic: true,
        }
    }

    fn run<'a>(&'a self, _config: &'a HealthConfig) -> BoxFuture<'a, Observation> {
        async move {
            let keys = match read_identities(&self.identity_file) {
                Ok(identities) => public_keys(&identities),
                Err(e) => return Observation::fail(e.to_string()),
            };
            let mut manifests = Vec::new();
            for job in &self.jobs {
                match self.repo.list(job).await {
                    Ok(listing) => manifests.extend(listing.backups),
                    Err(e) => return Observation::fail(e.to_string()),
                }
            }
            grade(&manifests, &keys, &self.identity_file)
        }
        .boxed()
    }
}

/// `warn` naming the backups `keys` cannot decrypt; the count is the value.
pub fn grade(manifests: &[Manifest], keys: &[String], identity_file: &Path) -> Observation {
    let unreadable: Vec<(&Manifest, &[String])> = manifests
        .iter()
        .filter_map(|m| {
            let recipients = &m.encryption.as_ref()?.recipients;
            (!can_decrypt(keys, recipients)).then_some((m, recipients.as_slice()))
        })
        .collect();
    let observation = Observation::new(
        if unreadable.is_empty() {
            Status::Pass
        } else {
            Status::Warn
        },
        Some(unreadable.len() as f64),
        None,
    );
    if unreadable.is_empty() {
        return observation;
    }
    let named: Vec<String> = unreadable
        .iter()
        .take(NAMED)
        .map(|(m, recipients)| format!("{}/{} (to {})", m.job, m.backup_id, recipients.join(", ")))
        .collect();
    observation.with_output(format!(
        "{} backup(s) were encrypted to recipients that identity_file {} ({}) cannot decrypt, so they cannot be restored with it: {}{}; keep the key they were encrypted to and point identity_file at it",
        unreadable.len(),
        identity_file.display(),
        keys.join(", "),
        named.join(", "),
        if unreadable.len() > NAMED { ", …" } else { "" },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(id: &str, recipients: Option<&[&str]>) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "job": "orders", "backupId": id, "kind": "postgres",
            "startedAt": "2026-11-23T07:32:44Z", "finishedAt": "2026-11-23T07:33:00Z",
            "source": {"serverVersion": "15", "serverVersionNum": 150000, "pgDumpVersion": "15", "host": "h:5432"},
            "compression": {"algorithm": "zstd", "level": 3}, "encryption": null, "objects": [], "vigilVersion": "0"
        }))
        .unwrap();
        m.encryption = recipients.map(|r| crate::core::manifest::EncryptionFacts {
            scheme: "age".into(),
            recipients: r.iter().map(|s| s.to_string()).collect(),
        });
        m
    }

    #[test]
    fn warns_naming_backups_sent_to_other_keys() {
        let keys = vec!["age1mine".to_owned()];
        let file = PathBuf::from("/etc/vigil/age.key");
        let ok = [
            manifest("a", Some(&["age1mine", "age1other"])),
            manifest("b", None),
        ];
        let observation = grade(&ok, &keys, &file);
        assert_eq!(observation.status, Status::Pass);
        assert_eq!(observation.value, Some(0.0));

        let mixed = [ok[0].clone(), manifest("c", Some(&["age1old"]))];
        let observation = grade(&mixed, &keys, &file);
        assert_eq!(observation.status, Status::Warn);
        assert_eq!(observation.value, Some(1.0));
        let output = observation.output.unwrap();
        assert!(
            output.contains("orders/c (to age1old)")
                && output.contains("/etc/vigil/age.key (age1mine)")
                && !output.contains("orders/a"),
            "{output}"
        );
    }
}
