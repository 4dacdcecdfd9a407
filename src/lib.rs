//! vigil: keeps PostgreSQL databases and file trees recoverable, and says so.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod files;
pub mod fsinfo;
pub mod health;
pub mod jobs;
pub mod journal;
pub mod logging;
pub mod notify;
pub mod pgconn;
pub mod pipeline;
pub mod repo;
pub mod state;
pub mod tasks;
