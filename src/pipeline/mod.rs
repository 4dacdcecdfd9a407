//! Backup and restore streams: source → compress → encrypt → hash → storage,
//! and back. Bounded channels between the stages keep memory flat.

pub mod codec;
pub mod download;
pub mod limits;
pub mod pgtools;
pub mod upload;
