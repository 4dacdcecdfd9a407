//! vigil: keeps PostgreSQL databases and file trees recoverable, and says so.

pub mod admin;
pub mod audit_cmd;
pub mod catalog;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod exit;
pub mod files;
pub mod fsinfo;
pub mod health;
pub mod jobs;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod out;
pub mod pgcluster;
pub mod pipeline;
pub mod reach;
pub mod redact;
pub mod repo;
pub mod retention;
pub mod schedule;
pub mod state;
pub mod status_cmd;
pub mod tasks;
