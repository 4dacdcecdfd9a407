//! The admin HTTP port: health endpoints, metrics, status page (handlers
//! read the shared snapshot in `state` only: no I/O, no awaits), and the
//! authenticated operator API under `/api/v1`. Inside, the router
//! (`routes`) and the handlers share `response` (bodies, content types);
//! the API's front (`api`) and its `endpoints` share `call`; no file
//! imports one that imports it back.

pub mod api;
pub mod auth;
mod call;
mod endpoints;
mod exposition;
mod health;
mod metrics;
mod metrics_drill;
mod metrics_notify;
mod metrics_verify;
mod metrics_wal;
mod page;
mod response;
mod routes;
mod server;

pub use api::AuthSettings;
pub use call::{Api, ReloadError, ReloadRequest};
pub use routes::{AdminState, route};
pub use server::{AdminServer, BindError, ConnectionLimits, bind, handle};
