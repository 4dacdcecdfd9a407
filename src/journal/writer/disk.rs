//! The writer's view of the disk: finding the head at start, adopting what
//! another writer appended, and starting segments (with the record of a
//! torn tail).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;

use chrono::Utc;
use serde_json::json;

use super::super::handle::Head;
use super::super::segment::{self, Fragment, segment_name};
use super::{Writer, parse_line, with_path};
use crate::core::journal_record::Record;

impl Writer {
    /// Finds the head on disk; starts a segment if there is none, or if the
    /// newest ends in a torn write.
    pub(super) fn open_existing(&mut self) -> io::Result<()> {
        let segments = segment::list(&self.opts.dir)?;
        // The newest non-empty segment and its torn tail, if any.
        let mut newest: Option<(u32, Option<Fragment>)> = None;
        // Identity and head come from the newest segment holding a complete
        // record: the newest may be empty (a crash right after creating it)
        // or hold nothing but a torn write.
        for (n, path) in segments.iter().rev() {
            if std::fs::metadata(path)?.len() == 0 {
                continue;
            }
            let (lines, fragment) = segment::read_from(path, 0)?;
            let is_newest = newest.is_none();
            if is_newest {
                newest = Some((*n, fragment));
            }
            let (Some(first), Some(last)) = (lines.first(), lines.last()) else {
                continue;
            };
            let first = parse_line(path, first)?;
            let last_record = parse_line(path, last)?;
            self.id = first.journal;
            self.head = Some(Head {
                seq: last_record.seq,
                hash: last_record.hash,
            });
            self.head_segment = *n;
            self.durable = self.head.clone();
            if is_newest {
                self.segment = *n;
                self.offset = last.offset + last.text.len() as u64 + 1;
                self.segment_started = first.ts;
            }
            break;
        }
        if self.id.is_empty() {
            // A new journal (or one whose only write was torn).
            self.id = uuid::Uuid::new_v4().to_string();
        }
        match newest {
            None => {
                let first = segments.first().map_or(1, |(n, _)| *n);
                self.start_segment(first, "new journal", None)
            }
            Some((n, Some(fragment))) => {
                // Reuse an empty newer segment left by a crash, else the next number.
                let next = segments
                    .last()
                    .map_or(n + 1, |(last, _)| if *last > n { *last } else { n + 1 });
                tracing::warn!(segment = %segment_name(n), offset = fragment.offset, length = fragment.length, "the journal ends in a torn write; it is kept as it is and recorded in a new segment");
                self.start_segment(next, "recovery", Some((segment_name(n), fragment)))
            }
            Some((_, None)) => Ok(()),
        }
    }

    /// Creates segment `n` with its `journal.segment_started` record (and a
    /// `journal.recovered` one when the previous segment's tail was torn),
    /// synced. On failure the writer stays on the old segment and the new
    /// file is removed, so a retry starts it cleanly.
    pub(super) fn start_segment(
        &mut self,
        n: u32,
        reason: &str,
        torn: Option<(String, Fragment)>,
    ) -> io::Result<()> {
        let previous = self.head.clone().map(
            |h| json!({ "segment": segment_name(self.head_segment), "seq": h.seq, "hash": h.hash }),
        );
        let path = self.path(n);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| with_path(e, "cannot create", &path))?;
        if file.metadata()?.len() != 0 {
            return Err(io::Error::other(format!(
                "{} already holds data; another writer is using this journal directory",
                path.display()
            )));
        }
        let saved = (
            self.segment,
            self.offset,
            self.segment_started,
            self.head.clone(),
        );
        self.segment = n;
        self.offset = 0;
        self.segment_started = Utc::now();
        let data = json!({ "segment": segment_name(n), "previous": previous, "reason": reason });
        let written = self.write_opening(&mut file, data, torn);
        match written {
            Ok(()) => {
                self.head_segment = n;
                self.durable = self.head.clone();
                self.dirty_since = None;
                Ok(())
            }
            Err(e) => {
                (self.segment, self.offset, self.segment_started, self.head) = saved;
                drop(file);
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn write_opening(
        &mut self,
        file: &mut File,
        data: serde_json::Value,
        torn: Option<(String, Fragment)>,
    ) -> io::Result<()> {
        let started = self.system_entry("journal.segment_started", data);
        self.write_record(file, started)?;
        if let Some((segment, fragment)) = torn {
            let recovered = self.system_entry(
                "journal.recovered",
                json!({ "segment": segment, "offset": fragment.offset, "length": fragment.length, "sha256": fragment.sha256 }),
            );
            self.write_record(file, recovered)?;
        }
        file.sync_data()?;
        File::open(&self.opts.dir)?.sync_all()
    }

    /// Another writer (a CLI command) may have appended or rotated since
    /// our last batch; a crashed one may have left a torn tail. Adopt what
    /// it wrote, recover what it tore.
    pub(super) fn catch_up_with_disk(&mut self) -> io::Result<()> {
        let mut moved = false;
        // An empty newer segment is a crash right after creating it: not moved into.
        while std::fs::metadata(self.path(self.segment + 1)).is_ok_and(|m| m.len() > 0) {
            self.segment += 1;
            self.offset = 0;
            moved = true;
        }
        let path = self.path(self.segment);
        let size = std::fs::metadata(&path)
            .map_err(|e| with_path(e, "the current segment is gone:", &path))?
            .len();
        if size == self.offset && !moved {
            return Ok(());
        }
        let (lines, fragment) = segment::read_from(&path, self.offset)?;
        for line in &lines {
            let record: Record = serde_json::from_str(&line.text).map_err(|e| {
                io::Error::other(format!(
                    "{} is damaged at byte {}: {e}; run `vigil audit verify`",
                    path.display(),
                    line.offset
                ))
            })?;
            let expected = self.head.as_ref().map_or(1, |h| h.seq + 1);
            if record.journal != self.id || record.seq != expected {
                return Err(io::Error::other(format!(
                    "{} holds seq {} of journal {} where seq {expected} of {} was expected; run `vigil audit verify`",
                    path.display(),
                    record.seq,
                    record.journal,
                    self.id
                )));
            }
            if line.offset == 0 {
                self.segment_started = record.ts;
            }
            self.head = Some(Head {
                seq: record.seq,
                hash: record.hash,
            });
            self.head_segment = self.segment;
            self.offset = line.offset + line.text.len() as u64 + 1;
        }
        if let Some(fragment) = fragment {
            tracing::warn!(segment = %path.display(), offset = fragment.offset, length = fragment.length, "torn write in the journal; kept as it is and recorded in a new segment");
            let torn = segment_name(self.segment);
            self.dirty_since = None;
            self.start_segment(self.segment + 1, "recovery", Some((torn, fragment)))?;
        }
        Ok(())
    }
}
