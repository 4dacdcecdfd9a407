//! One journal record and the chain rules. Pure: no clock (callers pass
//! the time), no I/O.
//!
//! A record's `hash` is the SHA-256 (lowercase hex) of its canonical
//! serialisation without `hash`: JSON with object keys sorted and no
//! insignificant whitespace (serde_json's map is ordered by key). `prev` is
//! the previous record's hash; `seq` has no gaps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Format version of a record.
pub const RECORD_VERSION: u32 = 1;

/// The `prev` of the very first record of a journal.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub v: u32,
    /// The journal's identity (uuid), fixed for its whole life.
    pub journal: String,
    pub seq: u64,
    /// UTC, microseconds.
    pub ts: DateTime<Utc>,
    pub event: String,
    pub actor: Actor,
    #[serde(default)]
    pub request_id: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
    pub prev: String,
    #[serde(default)]
    pub hash: String,
}

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `scheduler`, `daemon`, `cli` or `token`.
    pub kind: String,
    /// The token's name, the CLI's user, or the kind again.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// CLI only: the user the environment names (`SUDO_USER`, `USER`,
    /// `LOGNAME`) when it differs from `name`; anyone can set it, so it
    /// is a claim, never the actor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed: Option<String>,
}

impl Actor {
    pub fn scheduler() -> Actor {
        Actor::from("scheduler")
    }

    pub fn daemon() -> Actor {
        Actor::from("daemon")
    }

    /// A CLI actor for `name`, keeping `claimed` only when it says something else.
    pub fn cli_as(name: String, claimed: Option<String>) -> Actor {
        Actor {
            kind: "cli".into(),
            claimed: claimed.filter(|c| *c != name),
            name,
            role: None,
        }
    }

    pub fn token(name: &str, role: &str) -> Actor {
        Actor {
            kind: "token".into(),
            name: name.into(),
            role: Some(role.into()),
            claimed: None,
        }
    }
}

impl From<&str> for Actor {
    fn from(kind: &str) -> Actor {
        Actor {
            kind: kind.into(),
            name: kind.into(),
            role: None,
            claimed: None,
        }
    }
}

impl From<String> for Actor {
    fn from(kind: String) -> Actor {
        Actor::from(kind.as_str())
    }
}

/// What happened, before it is chained.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub ts: DateTime<Utc>,
    pub event: String,
    pub actor: Actor,
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

impl Entry {
    /// An event that happened at `ts` (the caller reads the clock).
    pub fn at(ts: DateTime<Utc>, event: &str, actor: Actor, data: serde_json::Value) -> Entry {
        Entry {
            ts,
            event: event.into(),
            actor,
            request_id: None,
            data,
        }
    }

    pub fn with_request_id(mut self, id: Option<String>) -> Entry {
        self.request_id = id;
        self
    }
}

impl Record {
    /// The record chained after `prev` (`(seq, hash)`; `None` for the
    /// journal's first record, which links to [`GENESIS`]), hashed.
    pub fn next(journal: &str, prev: Option<(u64, &str)>, entry: Entry) -> Record {
        let mut record = Record {
            v: RECORD_VERSION,
            journal: journal.to_owned(),
            seq: prev.map_or(1, |(s, _)| s + 1),
            ts: micros(entry.ts),
            event: entry.event,
            actor: entry.actor,
            request_id: entry.request_id,
            data: entry.data,
            prev: prev.map_or(GENESIS, |(_, h)| h).to_owned(),
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        record
    }

    /// SHA-256 of the canonical form without `hash`.
    pub fn compute_hash(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("hash");
        }
        let canonical = serde_json::to_vec(&canonicalise(value)).unwrap_or_default();
        hex::encode(Sha256::digest(&canonical))
    }
}

/// Timestamps are kept to the microsecond so they survive a round trip.
fn micros(ts: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(ts.timestamp_micros()).unwrap_or(ts)
}

/// Rebuilds every object so its keys are in sorted order, whatever the
/// source (serde_json's default map is already a BTreeMap; this keeps the
/// guarantee explicit should the `preserve_order` feature ever be enabled).
fn canonicalise(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, canonicalise(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(canonicalise).collect())
        }
        other => other,
    }
}

/// The line written for a record: canonical JSON plus `\n` (one `write`).
pub fn encode_line(record: &Record) -> Vec<u8> {
    let value = canonicalise(serde_json::to_value(record).unwrap_or(serde_json::Value::Null));
    let mut line = serde_json::to_vec(&value).unwrap_or_default();
    line.push(b'\n');
    line
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("line {line}: not a journal record: {detail}")]
    Malformed { line: usize, detail: String },
    #[error("seq {seq}: expected seq {expected} (a gap or a reorder)")]
    Gap { seq: u64, expected: u64 },
    #[error(
        "seq {seq}: hash mismatch (recorded {recorded}, computed {computed}): the record was altered"
    )]
    Altered {
        seq: u64,
        recorded: String,
        computed: String,
    },
    #[error("seq {seq}: prev {prev} does not link to the previous record's hash {expected}")]
    Unlinked {
        seq: u64,
        prev: String,
        expected: String,
    },
    #[error("seq {seq}: belongs to journal {found}, not {expected}")]
    ForeignJournal {
        seq: u64,
        found: String,
        expected: String,
    },
}

/// Checks a run of lines: JSON, `seq` contiguity, each hash, each link.
/// `after` is the `(seq, hash)` the run must continue from, if known.
/// Returns the last `(seq, hash)`; the error names the first bad record.
pub fn verify_chain<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    after: Option<(u64, &str)>,
) -> Result<Option<(u64, String)>, VerifyError> {
    let mut chain = ChainCheck::new(after);
    for line in lines {
        chain.push(line)?;
    }
    Ok(chain.last().cloned())
}

/// The chain rules, one record at a time.
#[derive(Debug, Default)]
pub struct ChainCheck {
    last: Option<(u64, String)>,
    journal: Option<String>,
    lines: usize,
}

impl ChainCheck {
    pub fn new(after: Option<(u64, &str)>) -> ChainCheck {
        ChainCheck {
            last: after.map(|(s, h)| (s, h.to_owned())),
            journal: None,
            lines: 0,
        }
    }

    pub fn last(&self) -> Option<&(u64, String)> {
        self.last.as_ref()
    }

    /// Checks the next line; returns its record if it holds.
    pub fn push(&mut self, line: &str) -> Result<Record, VerifyError> {
        self.lines += 1;
        let record: Record = serde_json::from_str(line).map_err(|e| VerifyError::Malformed {
            line: self.lines,
            detail: e.to_string(),
        })?;
        if let Some(expected) = &self.journal
            && &record.journal != expected
        {
            return Err(VerifyError::ForeignJournal {
                seq: record.seq,
                found: record.journal,
                expected: expected.clone(),
            });
        }
        let computed = record.compute_hash();
        // The hash covers the parsed record; the bytes must also be exactly
        // its canonical form, or an edit that parses the same would pass.
        let canonical = encode_line(&record);
        if computed != record.hash || canonical[..canonical.len() - 1] != *line.as_bytes() {
            return Err(VerifyError::Altered {
                seq: record.seq,
                recorded: record.hash,
                computed,
            });
        }
        let (expected_seq, expected_prev) = match &self.last {
            Some((seq, hash)) => (seq + 1, hash.clone()),
            None if record.seq == 1 => (1, GENESIS.to_owned()),
            // A run starting mid-journal without an anchor: accept its first link.
            None => (record.seq, record.prev.clone()),
        };
        if record.seq != expected_seq {
            return Err(VerifyError::Gap {
                seq: record.seq,
                expected: expected_seq,
            });
        }
        if record.prev != expected_prev {
            return Err(VerifyError::Unlinked {
                seq: record.seq,
                prev: record.prev,
                expected: expected_prev,
            });
        }
        self.journal = Some(record.journal.clone());
        self.last = Some((record.seq, record.hash.clone()));
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cli_actor_keeps_a_differing_claim_beside_the_real_user() {
        let actor = super::Actor::cli_as("root".into(), Some("alice".into()));
        assert_eq!(actor.name, "root");
        assert_eq!(actor.claimed.as_deref(), Some("alice"));
        let same = super::Actor::cli_as("alice".into(), Some("alice".into()));
        assert_eq!(
            same.claimed, None,
            "a claim that says the same adds nothing"
        );
        // Records without a claim serialise (and so hash) as before the field existed.
        let json = serde_json::to_string(&same).unwrap();
        assert_eq!(json, r#"{"kind":"cli","name":"alice"}"#);
    }

    use proptest::prelude::*;

    use super::*;

    fn chain(n: usize) -> Vec<String> {
        let t0: DateTime<Utc> = "2026-11-23T07:32:44.123456789Z".parse().unwrap();
        let mut prev: Option<(u64, String)> = None;
        (0..n)
            .map(|i| {
                let entry = Entry {
                    ts: t0 + chrono::Duration::seconds(i as i64),
                    event: "backup.succeeded".into(),
                    actor: "scheduler".into(),
                    request_id: None,
                    data: serde_json::json!({ "job": "orders", "bytes": i, "z": { "b": 1, "a": [2, 1] } }),
                };
                let r = Record::next("7f1c0d2e-journal", prev.as_ref().map(|(s, h)| (*s, h.as_str())), entry);
                prev = Some((r.seq, r.hash.clone()));
                String::from_utf8(encode_line(&r)).unwrap().trim_end().to_owned()
            })
            .collect()
    }

    #[test]
    fn a_fresh_chain_verifies_and_round_trips() {
        let lines = chain(5);
        let last = verify_chain(lines.iter().map(String::as_str), None)
            .unwrap()
            .unwrap();
        assert_eq!(last.0, 5);
        let record: Record = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(record.seq, 1);
        assert_eq!(record.prev, GENESIS);
        assert_eq!(
            record.ts.timestamp_subsec_nanos() % 1000,
            0,
            "microsecond precision"
        );
        // Keys are sorted in the written line (canonical form).
        assert!(lines[0].starts_with("{\"actor\":{\"kind\""), "{}", lines[0]);
        assert!(
            lines[0].contains("\"z\":{\"a\":[2,1],\"b\":1}"),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn tampering_is_named_by_seq() {
        let mut lines = chain(4);
        lines[2] = lines[2].replace("\"bytes\":2", "\"bytes\":3");
        let err = verify_chain(lines.iter().map(String::as_str), None).unwrap_err();
        assert!(matches!(err, VerifyError::Altered { seq: 3, .. }), "{err}");

        let mut lines = chain(4);
        lines.remove(1);
        let err = verify_chain(lines.iter().map(String::as_str), None).unwrap_err();
        assert_eq!(
            err,
            VerifyError::Gap {
                seq: 3,
                expected: 2
            }
        );

        let lines = chain(3);
        let err = verify_chain(lines.iter().map(String::as_str), Some((7, "ab"))).unwrap_err();
        assert!(
            matches!(
                err,
                VerifyError::Gap {
                    seq: 1,
                    expected: 8
                }
            ),
            "{err}"
        );

        let err = verify_chain(["{\"v\":1"], None).unwrap_err();
        assert!(matches!(err, VerifyError::Malformed { line: 1, .. }));
    }

    #[test]
    fn a_rehashed_forgery_breaks_the_link() {
        let lines = chain(3);
        let mut forged: Record = serde_json::from_str(&lines[1]).unwrap();
        forged.data = serde_json::json!({ "job": "evil" });
        forged.hash = forged.compute_hash();
        let forged_line = String::from_utf8(encode_line(&forged)).unwrap();
        let tampered = [lines[0].as_str(), forged_line.trim_end(), lines[2].as_str()];
        let err = verify_chain(tampered, None).unwrap_err();
        assert!(matches!(err, VerifyError::Unlinked { seq: 3, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(event in "[a-z]{1,12}\\.[a-z]{1,12}", actor in "\\PC{0,20}", n in any::<i64>(), s in "\\PC{0,40}") {
            let entry = Entry { ts: Utc::now(), event, actor: actor.into(), request_id: Some("req-1".into()), data: serde_json::json!({ "n": n, "s": s }) };
            let r = Record::next("j", Some((41, GENESIS)), entry);
            let line = encode_line(&r);
            prop_assert_eq!(*line.last().unwrap(), b'\n');
            prop_assert!(!line[..line.len() - 1].contains(&b'\n'), "one line");
            let back: Record = serde_json::from_slice(&line).unwrap();
            prop_assert_eq!(&back, &r);
            prop_assert_eq!(back.compute_hash(), r.hash);
        }
    }
}
