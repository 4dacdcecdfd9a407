//! Integration tests against real PostgreSQL clusters and the real binary.
//! One binary, so it links once.

mod audit;
mod backends;
mod backup;
mod catalog;
mod cli;
mod cli_truths;
mod files;
mod harness;
mod health;
mod logrotate;
mod mirror;
mod prune;
mod s3;
mod scheduler;
mod signals;
