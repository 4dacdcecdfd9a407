//! vigil: keeps PostgreSQL databases and file trees recoverable, and says so.

pub mod admin;
pub mod audit_cmd;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod core;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod files;
pub mod health;
pub mod jobs;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod out;
pub mod pgcluster;
pub mod pipeline;
pub mod process_stats;
pub mod reach;
pub mod repo;
pub mod signals;
pub mod status_cmd;
pub mod tasks;
