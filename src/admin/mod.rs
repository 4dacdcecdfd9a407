//! The admin HTTP port: health endpoints, metrics, status page (handlers
//! read the shared snapshot only: no I/O, no awaits), and the
//! authenticated operator API under `/api/v1`.

pub mod api;
pub mod auth;
mod endpoints;
mod exposition;
mod health;
mod metrics;
mod page;
mod routes;
mod server;

pub use api::{Api, AuthSettings, ReloadRequest};
pub use routes::{AdminState, route};
pub use server::{AdminServer, ConnectionLimits, bind, handle};
