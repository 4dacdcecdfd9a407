//! Names that cross module boundaries (the board, manifests, the API) as
//! types, so a job name cannot be passed where a backup id is expected.
//! Serialised as the bare string (`serde(transparent)`): no JSON, manifest
//! or catalog form changes.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One string newtype with the conversions every id needs: read as `&str`
/// (deref, borrow, display, path), built from `String`/`&str`, compared
/// with both either way round.
macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: width and alignment (`{:<12}`,
                // as `vigil list` uses) apply as they did to the String.
                f.pad(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        /// Ids name directories in a repository's layout.
        impl AsRef<std::path::Path> for $name {
            fn as_ref(&self) -> &std::path::Path {
                self.0.as_ref()
            }
        }
    };
}

string_id!(
    /// A configured job's name (`[jobs.<name>]`).
    JobName
);

string_id!(
    /// A backup's id: the name of its directory under `<job>/backups/`.
    BackupId
);

impl BackupId {
    /// A backup id reads as its start time in UTC; `-N` keeps it unique when
    /// two start in the same second. Never parsed for ordering.
    pub fn at(started: DateTime<Utc>, attempt: u32) -> BackupId {
        let base = started.format("%Y%m%dT%H%M%SZ").to_string();
        if attempt == 0 {
            BackupId(base)
        } else {
            BackupId(format!("{base}-{attempt}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_honour_width_and_alignment_like_strings() {
        assert_eq!(format!("{:<8}|", JobName::from("orders")), "orders  |");
        assert_eq!(format!("{:>8}|", BackupId::from("x")), "       x|");
        assert_eq!(JobName::from("orders").to_string(), "orders");
    }

    #[test]
    fn ids_serialise_as_bare_strings() {
        let job = JobName::from("orders");
        assert_eq!(serde_json::to_string(&job).unwrap(), "\"orders\"");
        let back: JobName = serde_json::from_str("\"orders\"").unwrap();
        assert_eq!(back, job);
        assert_eq!(back, "orders");
        let id = BackupId::from("20261123T073244Z");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"20261123T073244Z\"");
    }

    #[test]
    fn backup_ids_read_as_the_start_time() {
        let t: DateTime<Utc> = "2026-11-23T07:32:44.9Z".parse().unwrap();
        assert_eq!(BackupId::at(t, 0), "20261123T073244Z");
        assert_eq!(BackupId::at(t, 2), "20261123T073244Z-2");
    }
}
