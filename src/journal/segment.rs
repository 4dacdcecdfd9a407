//! Segment files: naming, listing, and splitting a segment's bytes into
//! complete lines and a torn tail.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Serialises writers (the daemon and CLI commands) on one journal.
pub const LOCK_FILE: &str = "journal.lock";

pub fn segment_name(n: u32) -> String {
    format!("journal-{n:06}.jsonl")
}

pub fn parse_segment_name(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("journal-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. A missing directory has none.
pub fn list(dir: &Path) -> io::Result<Vec<(u32, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(n) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Bytes after a segment's last newline: a write cut short by a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub offset: u64,
    pub length: u64,
    pub sha256: String,
}

/// One complete line: where it starts and its text (without `\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub offset: u64,
    pub text: String,
}

/// Splits bytes read from `base` into complete lines and a torn tail.
pub fn split(bytes: &[u8], base: u64) -> (Vec<Line>, Option<Fragment>) {
    let mut lines = Vec::new();
    let mut start = 0;
    while let Some(pos) = bytes[start..].iter().position(|&b| b == b'\n') {
        let end = start + pos;
        lines.push(Line {
            offset: base + start as u64,
            // A flipped bit may leave invalid UTF-8: it then fails to parse
            // or to hash, and verification names the line.
            text: String::from_utf8_lossy(&bytes[start..end]).into_owned(),
        });
        start = end + 1;
    }
    let fragment = (start < bytes.len()).then(|| Fragment {
        offset: base + start as u64,
        length: (bytes.len() - start) as u64,
        sha256: hex::encode(Sha256::digest(&bytes[start..])),
    });
    (lines, fragment)
}

/// Reads a segment from `offset` on.
pub fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<Line>, Option<Fragment>)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(split(&bytes, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(segment_name(7), "journal-000007.jsonl");
        assert_eq!(parse_segment_name("journal-000007.jsonl"), Some(7));
        assert_eq!(parse_segment_name("journal-1234567.jsonl"), Some(1234567));
        assert_eq!(parse_segment_name("journal-7.jsonl"), None);
        assert_eq!(parse_segment_name("journal-000007.jsonl.gz"), None);
        assert_eq!(parse_segment_name("journal.lock"), None);
    }

    #[test]
    fn split_keeps_offsets_and_the_torn_tail() {
        let (lines, fragment) = split(b"{\"a\":1}\n{\"b\":2}\n{\"c\"", 100);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].offset, 108);
        assert_eq!(lines[1].text, "{\"b\":2}");
        let fragment = fragment.unwrap();
        assert_eq!((fragment.offset, fragment.length), (116, 4));
        assert_eq!(fragment.sha256, hex::encode(Sha256::digest(b"{\"c\"")));
        let (lines, fragment) = split(b"x\n", 0);
        assert_eq!(lines.len(), 1);
        assert!(fragment.is_none());
    }
}
