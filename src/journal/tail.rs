//! Reads records in order from a position, across segments: what the
//! shippers, `vigil audit show` and `GET /api/v1/audit` use.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::segment::{self, segment_name};
use crate::core::journal_record::Record;

pub struct Tail {
    dir: PathBuf,
    segment: u32,
    offset: u64,
    /// Records at or below this are skipped.
    after: u64,
}

impl Tail {
    /// Positioned at the first record after `seq` (0: the oldest kept).
    pub fn after(dir: &Path, seq: u64) -> io::Result<Tail> {
        let segments = segment::list(dir)?;
        // The last segment whose first record is at or before seq + 1.
        let mut start = segments.first().map_or(1, |(n, _)| *n);
        for (n, path) in &segments {
            match first_seq(path)? {
                Some(first) if first <= seq + 1 => start = *n,
                Some(_) => break,
                None => {}
            }
        }
        Ok(Tail {
            dir: dir.to_owned(),
            segment: start,
            offset: 0,
            after: seq,
        })
    }

    /// Up to `max` complete records with their exact lines; a torn tail or
    /// a line still being written is not returned.
    pub fn read(&mut self, max: usize) -> io::Result<Vec<(Record, String)>> {
        self.read_upto(max, u64::MAX)
    }

    /// Like [`Tail::read`], stopping before records above `upto` (the
    /// shippers ship only what is on disk for good).
    pub fn read_upto(&mut self, max: usize, upto: u64) -> io::Result<Vec<(Record, String)>> {
        let mut out = Vec::new();
        while out.len() < max {
            let path = self.dir.join(segment_name(self.segment));
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let mut reader = BufReader::new(file);
            reader.seek(SeekFrom::Start(self.offset))?;
            let mut line = Vec::new();
            let mut reached_end = false;
            while out.len() < max {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    reached_end = true;
                    break;
                }
                let text = String::from_utf8_lossy(&line[..n - 1]).into_owned();
                let record: Record = serde_json::from_str(&text).map_err(|e| {
                    io::Error::other(format!(
                        "{} is damaged at byte {}: {e}; run `vigil audit verify`",
                        path.display(),
                        self.offset
                    ))
                })?;
                if record.seq > upto {
                    // Not consumed: read again once it is durable.
                    return Ok(out);
                }
                self.offset += n as u64;
                if record.seq > self.after {
                    self.after = record.seq;
                    out.push((record, text));
                }
            }
            // Move on only once a later segment exists: until then more may come.
            let next = self.dir.join(segment_name(self.segment + 1));
            if reached_end && next.exists() {
                self.segment += 1;
                self.offset = 0;
            } else {
                break;
            }
        }
        Ok(out)
    }
}

fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    let mut line = String::new();
    BufReader::new(File::open(path)?).read_line(&mut line)?;
    Ok(serde_json::from_str::<Record>(line.trim_end())
        .ok()
        .map(|r| r.seq))
}

/// The last record of each closed segment, to decide what may be removed.
pub fn segment_first_seqs(dir: &Path) -> io::Result<Vec<(u32, PathBuf, Option<u64>)>> {
    segment::list(dir)?
        .into_iter()
        .map(|(n, p)| Ok((n, p.clone(), first_seq(&p)?)))
        .collect()
}
