//! Accept loop: a connection limit, a header-read timeout, graceful drain.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::routes::{AdminState, Body, route};

/// A bound but not yet serving admin listener.
pub struct AdminServer {
    listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// Binds before anything else starts, so a taken port fails start-up early.
pub async fn bind(addr: SocketAddr) -> std::io::Result<AdminServer> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} (`admin.listen`): {e}; is another vigil running, or is the port taken?"),
        )
    })?;
    let local_addr = listener.local_addr()?;
    Ok(AdminServer {
        listener,
        local_addr,
    })
}

impl AdminServer {
    /// Serves until `cancel`, then lets open connections finish for up to `drain`.
    pub async fn serve(
        self,
        state: Arc<AdminState>,
        max_connections: usize,
        header_read_timeout: Duration,
        cancel: CancellationToken,
        drain: Duration,
    ) {
        let limit = Arc::new(Semaphore::new(max_connections));
        let graceful = GracefulShutdown::new();
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        tracing::info!(addr = %self.local_addr, "admin port listening");
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                permit = Arc::clone(&limit).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            let service = service_fn(move |req: Request<Incoming>| {
                let state = Arc::clone(&state);
                async move { Ok::<Response<Body>, Infallible>(handle(&state, req, peer).await) }
            });
            let connection =
                graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(self.listener);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("admin connections still open after the drain period; closing them");
        }
    }
}

async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    if req.uri().path().starts_with("/api/") {
        let settings = state.auth.load_full();
        return super::api::handle(&settings, &state.limiter, state.api.get(), req, peer).await;
    }
    let response = route(state, &req, peer);
    tracing::debug!(
        %peer,
        method = %req.method(),
        uri = %req.uri(),
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "admin request"
    );
    response
}
