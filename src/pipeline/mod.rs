//! Backup and restore streams: source → compress → encrypt → hash → storage
//! (`upload`, bounded by `limits`), and back (`download`). Bounded channels
//! between the stages keep memory flat. Uses `repo` below it; `repo` never
//! uses it.

pub mod codec;
pub mod download;
pub mod feed;
pub mod limits;
pub mod pgtools;
mod source;
mod stderr;
pub mod upload;
pub mod verify;
pub mod wal;
