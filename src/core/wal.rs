//! PostgreSQL's write-ahead log as names and numbers: LSNs, timelines and
//! the file names the archiver hands to `archive_command`. Pure, so the
//! archive layout, retention and restore planning share one reading.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// PostgreSQL's default (and by far the most common) segment size.
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 * 1024 * 1024;

/// A log sequence number, written `16/B374D848` as PostgreSQL prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

#[derive(Debug, Error, PartialEq)]
#[error("`{0}` is not an LSN (write it as PostgreSQL prints it, e.g. 0/3000060)")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LsnParseError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let valid = |h: &str| !h.is_empty() && h.len() <= 8;
        if !valid(hi) || !valid(lo) {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A timeline id (1 for a cluster that was never promoted from a restore).
pub type Timeline = u32;

/// One WAL segment: its timeline and its number counted from LSN 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Segment {
    pub timeline: Timeline,
    pub number: u64,
}

impl Segment {
    /// The segment holding `lsn` on `timeline`.
    pub fn containing(timeline: Timeline, lsn: Lsn, segment_size: u64) -> Segment {
        Segment {
            timeline,
            number: lsn.0 / segment_size.max(1),
        }
    }

    /// The first LSN of this segment.
    pub fn start_lsn(self, segment_size: u64) -> Lsn {
        Lsn(self.number.saturating_mul(segment_size))
    }

    /// The 24-hex-digit file name (`000000010000000300000042`).
    pub fn file_name(self, segment_size: u64) -> String {
        let per_log = segments_per_log(segment_size);
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per_log,
            self.number % per_log
        )
    }

    pub fn next(self) -> Segment {
        Segment {
            number: self.number + 1,
            ..self
        }
    }
}

/// How many segments one "log" (the middle 8 hex digits) holds.
fn segments_per_log(segment_size: u64) -> u64 {
    (0x1_0000_0000 / segment_size.max(1)).max(1)
}

/// A file name PostgreSQL's archiver may hand to `archive_command`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WalFile {
    /// A complete segment, `000000010000000000000003`.
    Segment(Segment),
    /// A partial segment left at a timeline switch,
    /// `000000010000000000000003.partial`.
    Partial(Segment),
    /// A timeline history file, `00000002.history`.
    History(Timeline),
    /// A backup history file, `000000010000000000000003.00000028.backup`.
    BackupLabel { segment: Segment, offset: u32 },
}

#[derive(Debug, Error, PartialEq)]
#[error(
    "`{0}` is not a WAL file name (a segment such as 000000010000000000000003, or a .history, .backup or .partial file)"
)]
pub struct WalNameError(pub String);

impl WalFile {
    /// Parses a file name (no directory) as the archiver names it.
    pub fn parse(name: &str, segment_size: u64) -> Result<WalFile, WalNameError> {
        let bad = || WalNameError(name.to_owned());
        let hex = |s: &str, len: usize| -> Option<u64> {
            (s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(s, 16).ok())
                .flatten()
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let tli = hex(tli, 8).ok_or_else(bad)?;
            return Ok(WalFile::History(tli as Timeline));
        }
        let (base, rest) = name.split_at(name.len().min(24));
        let segment = parse_segment(base, segment_size).ok_or_else(bad)?;
        match rest {
            "" => Ok(WalFile::Segment(segment)),
            ".partial" => Ok(WalFile::Partial(segment)),
            _ => {
                let offset = rest
                    .strip_prefix('.')
                    .and_then(|r| r.strip_suffix(".backup"))
                    .and_then(|o| hex(o, 8))
                    .ok_or_else(bad)?;
                Ok(WalFile::BackupLabel {
                    segment,
                    offset: offset as u32,
                })
            }
        }
    }

    /// The name PostgreSQL gives this file.
    pub fn file_name(&self, segment_size: u64) -> String {
        match self {
            WalFile::Segment(s) => s.file_name(segment_size),
            WalFile::Partial(s) => format!("{}.partial", s.file_name(segment_size)),
            WalFile::History(tli) => format!("{tli:08X}.history"),
            WalFile::BackupLabel { segment, offset } => {
                format!("{}.{offset:08X}.backup", segment.file_name(segment_size))
            }
        }
    }

    pub fn timeline(&self) -> Timeline {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) => s.timeline,
            WalFile::BackupLabel { segment, .. } => segment.timeline,
            WalFile::History(tli) => *tli,
        }
    }
}

fn parse_segment(name: &str, segment_size: u64) -> Option<Segment> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let field = |i: usize| u64::from_str_radix(&name[i * 8..i * 8 + 8], 16).ok();
    let (tli, log, seg) = (field(0)?, field(1)?, field(2)?);
    let per_log = segments_per_log(segment_size);
    if seg >= per_log {
        return None;
    }
    Some(Segment {
        timeline: tli as Timeline,
        number: log * per_log + seg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = DEFAULT_SEGMENT_SIZE;

    #[test]
    fn lsn_round_trips_as_postgres_prints_it() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn(0));
        for bad in ["", "0", "/1", "1/", "g/0", "1/123456789", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_names_match_postgres() {
        // pg_walfile_name('0/3000060') on timeline 1 with 16 MiB segments.
        let lsn: Lsn = "0/3000060".parse().unwrap();
        let seg = Segment::containing(1, lsn, SEG);
        assert_eq!(seg.file_name(SEG), "000000010000000000000003");
        let high: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(
            Segment::containing(2, high, SEG).file_name(SEG),
            "0000000200000016000000B3"
        );
        assert_eq!(seg.start_lsn(SEG).to_string(), "0/3000000");
    }

    #[test]
    fn every_archived_name_parses_and_prints_back() {
        for name in [
            "000000010000000000000003",
            "0000000200000016000000B3",
            "000000010000000000000003.partial",
            "00000002.history",
            "000000010000000000000003.00000028.backup",
        ] {
            let file = WalFile::parse(name, SEG).unwrap();
            assert_eq!(file.file_name(SEG), name);
        }
        assert_eq!(
            WalFile::parse("00000002.history", SEG).unwrap().timeline(),
            2
        );
    }

    #[test]
    fn other_names_are_refused() {
        for bad in [
            "",
            "00000001000000000000003",
            "0000000100000000000000030",
            "000000010000000000000100", // segment 0x100 of a log of 256
            "x00000010000000000000003",
            "000000010000000000000003.backup",
            "000000010000000000000003.old",
            "0000002.history",
            "../00000002.history",
        ] {
            assert!(WalFile::parse(bad, SEG).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_order_by_timeline_then_number() {
        let a = Segment::containing(1, Lsn(5 * SEG), SEG);
        assert_eq!(a.next().number, 6);
        assert!(a < a.next());
        assert!(a.next() < Segment::containing(2, Lsn(0), SEG));
    }
}
