//! The admin HTTP port: health endpoints, metrics, status page.
//! Handlers read the shared snapshot only; no I/O, no awaits.

mod health;
mod metrics;
mod page;
mod routes;
mod server;

pub use routes::{AdminState, route};
pub use server::{AdminServer, bind};
