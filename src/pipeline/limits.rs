//! How one object upload is bounded: the source's stall timeout (the
//! job's), the repository service's part sizes, and how parts grow so
//! that a stream of unknown length fits the service's part count.

use std::time::Duration;

use crate::repo::{PartLimits, Repository};

/// S3's largest part.
const MAX_PART: usize = 5 << 30;

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

/// Part sizes that keep an unknown-length stream under `max_parts`: the
/// size doubles every `max_parts / 10` parts, up to S3's 5 GiB part limit.
#[derive(Debug, Clone)]
pub struct PartSizer {
    base: usize,
    max_parts: u64,
    parts: u64,
    cap: usize,
}

impl PartSizer {
    pub fn new(base: usize, max_parts: u64) -> Self {
        PartSizer {
            base,
            max_parts: max_parts.max(10),
            parts: 0,
            cap: MAX_PART,
        }
    }

    /// Parts stay at or below `cap` (and at least the base size).
    pub fn capped(mut self, cap: usize) -> Self {
        self.cap = cap.clamp(self.base, MAX_PART);
        self
    }

    /// Size of the next part, or `None` once `max_parts` are used.
    pub fn next_part(&mut self) -> Option<usize> {
        if self.parts >= self.max_parts {
            return None;
        }
        let doublings = (self.parts / (self.max_parts / 10)).min(40) as u32;
        self.parts += 1;
        let size = self
            .base
            .saturating_mul(1usize << doublings.min(usize::BITS - 1));
        Some(size.min(self.cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_double_every_tenth_of_max_parts() {
        let mut s = PartSizer::new(5, 100);
        let sizes: Vec<usize> = std::iter::from_fn(|| s.next_part()).collect();
        assert_eq!(sizes.len(), 100);
        assert_eq!(sizes[0], 5);
        assert_eq!(sizes[9], 5);
        assert_eq!(sizes[10], 10);
        assert_eq!(sizes[99], 5 << 9);
        assert_eq!(s.next_part(), None);
        // Capacity grows ~100x the naive base × max_parts.
        let capacity: usize = sizes.iter().sum();
        assert_eq!(capacity, 10 * 5 * ((1 << 10) - 1));
    }
}
