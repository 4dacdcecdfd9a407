//! Whether a signed journal stayed signed: once a checkpoint carried a
//! signature, an unsigned one after it is a re-hashed tail unless a
//! `journal.signing_stopped` record (a daemon started without the key)
//! came in between. Pure over records; `verify` reports what it finds.

use super::sign::SIGNING_STOPPED;
use crate::core::journal_record::Record;

/// Whether checkpoints are expected to carry a signature, from the records
/// read so far: once one was signed, the next ones must be, unless a
/// `journal.signing_stopped` record (a daemon started without the key)
/// came in between.
#[derive(Default)]
pub struct Signing {
    last_signed: Option<u64>,
    stopped_at: Option<u64>,
}

/// What an unsigned checkpoint means, given the records before it.
pub enum Unsigned {
    /// No checkpoint before it was signed.
    NeverSigned,
    /// Signing stopped on record: the key was removed (or the record forged).
    Stopped { last_signed: u64, stopped_at: u64 },
    /// Signed before, with no record of the key's removal: a re-hashed tail.
    Dropped { last_signed: u64 },
}

impl Signing {
    /// Takes in `record`; returns what it means when it is an unsigned checkpoint.
    pub fn see(&mut self, record: &Record) -> Option<Unsigned> {
        match record.event.as_str() {
            SIGNING_STOPPED if self.last_signed.is_some() => {
                self.stopped_at.get_or_insert(record.seq);
                None
            }
            "journal.checkpoint" if super::sign::is_signed(record) => {
                self.last_signed = Some(record.seq);
                self.stopped_at = None;
                None
            }
            "journal.checkpoint" => Some(match (self.last_signed, self.stopped_at) {
                (None, _) => Unsigned::NeverSigned,
                (Some(last_signed), Some(stopped_at)) => Unsigned::Stopped {
                    last_signed,
                    stopped_at,
                },
                (Some(last_signed), None) => Unsigned::Dropped { last_signed },
            }),
            _ => None,
        }
    }

    pub fn stopped(&self) -> bool {
        self.stopped_at.is_some()
    }
}

pub fn dropped_signing(seq: u64, last_signed: u64) -> String {
    format!(
        "checkpoint seq {seq} carries no signature although checkpoint seq {last_signed} before it was signed, and no `journal.signing_stopped` record says the key was removed: the records after seq {last_signed} were re-hashed without the key, or the signature stripped"
    )
}

pub fn stopped_signing(seq: u64, last_signed: u64, stopped_at: u64) -> String {
    format!(
        "checkpoints are unsigned from seq {seq} on: signing stopped at seq {stopped_at} (`journal.signing_stopped`: the daemon started without `journal.signing_key_file`), so the key vouches for the records up to the last signed checkpoint (seq {last_signed}) only; that record is not signed itself: if nobody removed the key, treat it as tampering"
    )
}

/// Without `--public-key`: the warning for the first unsigned checkpoint
/// after a signed one, naming it (the key would make it a failure).
pub fn unsigned_checkpoint_warning<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut signing = Signing::default();
    for line in lines
        .into_iter()
        .filter(|l| l.contains("\"journal.checkpoint\"") || l.contains(SIGNING_STOPPED))
    {
        let Ok(record) = serde_json::from_str::<Record>(line) else {
            continue;
        };
        let warning = match signing.see(&record) {
            Some(Unsigned::Dropped { last_signed }) => format!(
                "{} (pass --public-key to check the signatures)",
                dropped_signing(record.seq, last_signed)
            ),
            Some(Unsigned::Stopped {
                last_signed,
                stopped_at,
            }) => stopped_signing(record.seq, last_signed, stopped_at),
            Some(Unsigned::NeverSigned) | None => continue,
        };
        return Some(warning);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::journal_record::{Actor, Entry};

    fn lines(events: &[(&str, bool)]) -> Vec<String> {
        let mut prev: Option<(u64, String)> = None;
        events
            .iter()
            .map(|(event, signed)| {
                let data = if *signed {
                    serde_json::json!({ "signature": { "sig": "00" } })
                } else {
                    serde_json::json!({})
                };
                let entry = Entry::at(chrono::Utc::now(), event, Actor::daemon(), data);
                let record = Record::next("j", prev.as_ref().map(|(s, h)| (*s, h.as_str())), entry);
                prev = Some((record.seq, record.hash.clone()));
                serde_json::to_string(&record).unwrap()
            })
            .collect()
    }

    const CP: &str = "journal.checkpoint";

    #[test]
    fn an_unsigned_checkpoint_after_a_signed_one_is_named_unless_a_stop_came_between() {
        let never = lines(&[(CP, false), (CP, false)]);
        assert_eq!(
            unsigned_checkpoint_warning(never.iter().map(String::as_str)),
            None
        );
        let dropped = lines(&[
            (CP, false),
            (CP, true),
            ("daemon.started", false),
            (CP, false),
        ]);
        let warning = unsigned_checkpoint_warning(dropped.iter().map(String::as_str)).unwrap();
        assert!(
            warning.starts_with("checkpoint seq 4 carries no signature although checkpoint seq 2"),
            "{warning}"
        );
        let stopped = lines(&[(CP, true), (SIGNING_STOPPED, false), (CP, false)]);
        let warning = unsigned_checkpoint_warning(stopped.iter().map(String::as_str)).unwrap();
        assert!(
            warning.starts_with("checkpoints are unsigned from seq 3 on: signing stopped at seq 2"),
            "{warning}"
        );
        // A signed checkpoint after the stop: the next unsigned one is a forgery again.
        let resumed = lines(&[
            (CP, true),
            (SIGNING_STOPPED, false),
            (CP, true),
            (CP, false),
        ]);
        let warning = unsigned_checkpoint_warning(resumed.iter().map(String::as_str)).unwrap();
        assert!(
            warning.starts_with("checkpoint seq 4 carries no signature although checkpoint seq 3"),
            "{warning}"
        );
    }
}
