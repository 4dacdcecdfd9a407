//! How one object upload is bounded: the source's stall timeout (the
//! job's) and the repository service's part sizes.

use std::time::Duration;

use crate::repo::{PartLimits, Repository};

#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// The source may stay silent this long before the run fails.
    pub stall_timeout: Duration,
    pub parts: PartLimits,
}

impl UploadLimits {
    /// The limits for an object of `repo`, from a source that may stay
    /// silent for `stall_timeout`.
    pub fn for_repo(repo: &Repository, stall_timeout: Duration) -> UploadLimits {
        UploadLimits {
            stall_timeout,
            parts: repo.part_limits(),
        }
    }
}
