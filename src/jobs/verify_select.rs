//! Which backups and objects one verification reads: those `vigil
//! verify` names (one, the newest, or all), or for a scheduled run the
//! objects due within its budget, planned from the job's record.

use std::collections::BTreeSet;

use super::JobContext;
use super::verify::{VerifyError, VerifyRequest};
use crate::core::manifest::Manifest;
use crate::core::proofs::object_key;
use crate::core::verification::{StoredObject, plan};
use crate::repo::Listing;

/// The backups `request` names, oldest first, and for a scheduled run
/// the keys of the objects due.
pub(super) async fn chosen(
    ctx: &JobContext,
    request: &VerifyRequest,
    listing: &Listing,
) -> Result<(Vec<Manifest>, Option<BTreeSet<String>>), VerifyError> {
    if let Some(budget) = &request.budget {
        let record = ctx.repo.read_verify_record(&ctx.name).await?;
        let objects = stored_objects(&listing.backups);
        let due: BTreeSet<String> = plan(&objects, &record, budget, chrono::Utc::now())
            .iter()
            .map(|o| o.key())
            .collect();
        let manifests = listing
            .backups
            .iter()
            .filter(|m| {
                m.objects
                    .iter()
                    .any(|o| due.contains(&object_key(m.backup_id.as_str(), &o.name)))
            })
            .cloned()
            .collect();
        return Ok((manifests, Some(due)));
    }
    if let Some(id) = &request.backup {
        let known = listing.backups.iter().find(|m| m.backup_id.as_str() == id);
        let manifest = match known {
            Some(m) => m.clone(),
            None => ctx.repo.read_manifest(&ctx.name, id).await?,
        };
        return Ok((vec![manifest], None));
    }
    let mut backups = listing.backups.clone();
    if !request.all {
        backups = backups.pop().into_iter().collect();
    }
    if backups.is_empty() {
        return Err(VerifyError::NoBackups {
            job: ctx.name.clone(),
            repo: ctx.repo.name.clone(),
        });
    }
    Ok((backups, None))
}

/// Every object of `manifests`, as planning sees it.
pub fn stored_objects(manifests: &[Manifest]) -> Vec<StoredObject> {
    manifests
        .iter()
        .flat_map(|m| {
            m.objects.iter().map(|o| StoredObject {
                backup_id: m.backup_id.to_string(),
                finished_at: m.finished_at,
                object: o.name.clone(),
                stored_bytes: o.stored_bytes,
            })
        })
        .collect()
}
