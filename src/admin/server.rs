//! Accept loop: connection limits (overall and per client address), a
//! probe lane that keeps `/health*` answerable when they are reached, a
//! header-read timeout, graceful drain.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::response::Body;
use super::routes::{AdminState, route};

/// A bound but not yet serving admin listener.
pub struct AdminServer {
    listener: TcpListener,
    pub local_addr: SocketAddr,
}

/// Binds before anything else starts, so a taken port fails start-up early.
pub async fn bind(addr: SocketAddr) -> Result<AdminServer, BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok(AdminServer {
        listener,
        local_addr,
    })
}

/// The admin port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {addr} (`admin.listen`): {source}; is another vigil running, or is the port taken?"
)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// How the accept loop shares the port between clients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionLimits {
    /// Connections served at once in the general pool.
    pub max_connections: usize,
    /// General-pool connections one client address may hold.
    pub max_per_client: usize,
    /// Time to send request headers; hyper also applies it to the idle gap
    /// between keep-alive requests, so an idle connection frees its slot.
    pub header_read_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_config(admin: &crate::config::AdminConfig) -> Self {
        ConnectionLimits {
            max_connections: admin.max_connections,
            max_per_client: admin.max_connections_per_client,
            header_read_timeout: admin.header_read_timeout,
        }
    }

    /// Connections past the limits that may wait for a probe request at once.
    fn probe_lane(&self) -> usize {
        self.max_connections.saturating_mul(PROBE_LANE_FACTOR)
    }
}

/// How long a connection past the limits may take to show a probe request
/// line before it is closed; monitors send theirs at once.
const PROBE_WAIT: Duration = Duration::from_millis(100);
/// The probe lane holds this many times `max_connections` waiting sockets:
/// each costs a task and a descriptor for at most [`PROBE_WAIT`].
const PROBE_LANE_FACTOR: usize = 4;
/// Paths a connection in the probe lane may ask for.
const PROBE_PATHS: [&str; 4] = [
    "/health",
    "/health/live",
    "/health/ready",
    "/health/detailed",
];

impl AdminServer {
    /// Serves until `cancel`, then lets open connections finish for up to `drain`.
    ///
    /// The loop never waits for a slot before accepting: a full pool would
    /// otherwise leave probes queued in the kernel behind idle sockets.
    pub async fn serve(
        self,
        state: Arc<AdminState>,
        limits: ConnectionLimits,
        cancel: CancellationToken,
        drain: Duration,
    ) {
        let gate = Gate::new(&limits);
        let refused = Arc::clone(&state.refused);
        let graceful = GracefulShutdown::new();
        let mut general = http1::Builder::new();
        general
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        let mut probe = general.clone();
        probe.keep_alive(false);
        tracing::info!(addr = %self.local_addr, "admin port listening");
        loop {
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
            let service = service_for(&state, peer);
            match gate.admit(peer.ip()) {
                Admission::General(slot) => {
                    let connection =
                        graceful.watch(general.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Admission::ProbeLane(permit, why) => {
                    let builder = probe.clone();
                    let refused = Arc::clone(&refused);
                    tokio::spawn(async move {
                        let is_probe = matches!(
                            tokio::time::timeout(PROBE_WAIT, wait_for_probe(&stream)).await,
                            Ok(Ok(true))
                        );
                        if !is_probe {
                            refused.note(why);
                        } else if let Err(e) = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(%peer, error = %e, "admin probe connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                // Dropping the socket closes it before anything is read.
                Admission::Refused(why) => {
                    refused.note(why);
                    drop(stream);
                }
            }
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

fn service_for(
    state: &Arc<AdminState>,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let state = Arc::clone(state);
    service_fn(move |req: Request<Incoming>| {
        let state = Arc::clone(&state);
        async move { Ok::<Response<Body>, Infallible>(handle(&state, req, peer).await) }
    })
}

/// Whether the first request on `stream` asks for a probe path; peeks only,
/// so hyper reads the request afterwards.
async fn wait_for_probe(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 64];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(false);
        }
        match classify_request_line(&buf[..n]) {
            Verdict::Probe => return Ok(true),
            Verdict::Other => return Ok(false),
            // peek returns at once while bytes wait unread: pace the retries.
            Verdict::NeedMore => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Probe,
    Other,
    NeedMore,
}

/// Classifies the start of a request: `GET`/`HEAD` of a probe path.
fn classify_request_line(head: &[u8]) -> Verdict {
    let Some(rest) = [&b"GET "[..], &b"HEAD "[..]]
        .iter()
        .find_map(|method| head.strip_prefix(*method))
    else {
        let could_be = [&b"GET "[..], &b"HEAD "[..]]
            .iter()
            .any(|method| method.starts_with(head));
        return if could_be {
            Verdict::NeedMore
        } else {
            Verdict::Other
        };
    };
    match rest.iter().position(|b| *b == b' ' || *b == b'?') {
        Some(end) => {
            if PROBE_PATHS.iter().any(|p| p.as_bytes() == &rest[..end]) {
                Verdict::Probe
            } else {
                Verdict::Other
            }
        }
        None if PROBE_PATHS.iter().any(|p| p.as_bytes().starts_with(rest)) => Verdict::NeedMore,
        None => Verdict::Other,
    }
}

/// Why a connection got no general slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its address held `max_connections_per_client` already.
    PerClient,
    /// All `max_connections` were taken.
    Pool,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::PerClient, Refusal::Pool];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerClient => "per_client",
            Refusal::Pool => "pool",
        }
    }
}

/// Connections closed unserved (past the limits and not a probe), by
/// [`Refusal`]: `vigil_admin_connections_refused_total`.
#[derive(Debug, Default)]
pub struct RefusedConnections {
    per_client: AtomicU64,
    pool: AtomicU64,
}

impl RefusedConnections {
    fn counter(&self, why: Refusal) -> &AtomicU64 {
        match why {
            Refusal::PerClient => &self.per_client,
            Refusal::Pool => &self.pool,
        }
    }

    fn note(&self, why: Refusal) {
        self.counter(why).fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self, why: Refusal) -> u64 {
        self.counter(why).load(Ordering::Relaxed)
    }
}

/// Where an accepted connection goes.
enum Admission {
    /// A general slot (held until the connection ends).
    General(ClientSlot),
    /// Past a limit: served only if its first request is a probe.
    ProbeLane(OwnedSemaphorePermit, Refusal),
    /// Past every limit: closed at once.
    Refused(Refusal),
}

/// The connection slots: a general pool with a share per client address,
/// and the probe lane.
struct Gate {
    general: Arc<Semaphore>,
    probe_lane: Arc<Semaphore>,
    clients: Arc<Clients>,
}

impl Gate {
    fn new(limits: &ConnectionLimits) -> Self {
        Gate {
            general: Arc::new(Semaphore::new(limits.max_connections)),
            probe_lane: Arc::new(Semaphore::new(limits.probe_lane())),
            clients: Arc::new(Clients {
                open: Mutex::new(HashMap::new()),
                max_per_client: limits.max_per_client,
            }),
        }
    }

    fn admit(&self, ip: IpAddr) -> Admission {
        let why = match Clients::take(&self.clients, ip) {
            None => Refusal::PerClient,
            Some(client) => match Arc::clone(&self.general).try_acquire_owned() {
                Ok(permit) => {
                    return Admission::General(ClientSlot {
                        _permit: permit,
                        _client: client,
                    });
                }
                Err(_) => Refusal::Pool,
            },
        };
        match Arc::clone(&self.probe_lane).try_acquire_owned() {
            Ok(permit) => Admission::ProbeLane(permit, why),
            Err(_) => Admission::Refused(why),
        }
    }
}

/// A general-pool slot: the pool permit and the client's share.
struct ClientSlot {
    _permit: OwnedSemaphorePermit,
    _client: ClientShare,
}

/// Open general-pool connections per client address.
struct Clients {
    open: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
}

impl Clients {
    fn take(this: &Arc<Self>, ip: IpAddr) -> Option<ClientShare> {
        let mut open = this.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= this.max_per_client {
            return None;
        }
        *count += 1;
        Some(ClientShare {
            clients: Arc::clone(this),
            ip,
        })
    }
}

/// One connection's share of its client's limit; released on drop.
struct ClientShare {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Forget idle addresses so the map stays as small as the live set.
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// One request to its response, as the accept loop serves it; needs no
/// socket, so the fuzz targets drive it with bodies built in memory.
pub async fn handle<B>(state: &AdminState, req: Request<B>, peer: SocketAddr) -> Response<Body> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_request_lines_are_recognised() {
        for line in [
            "GET /health HTTP/1.1\r\n",
            "GET /health/live HTTP/1.1",
            "HEAD /health/ready HTTP/1.0",
            "GET /health/detailed?x=1 HTTP/1.1",
        ] {
            assert_eq!(
                classify_request_line(line.as_bytes()),
                Verdict::Probe,
                "{line}"
            );
        }
    }

    #[test]
    fn other_requests_are_refused_and_prefixes_wait() {
        for line in [
            "GET /metrics HTTP/1.1",
            "GET /healthz HTTP/1.1",
            "POST /health HTTP/1.1",
            "GET / HTTP/1.1",
            "\x16\x03\x01",
        ] {
            assert_eq!(
                classify_request_line(line.as_bytes()),
                Verdict::Other,
                "{line}"
            );
        }
        for partial in ["", "G", "GET", "HEAD /hea", "GET /health/de"] {
            assert_eq!(
                classify_request_line(partial.as_bytes()),
                Verdict::NeedMore,
                "{partial}"
            );
        }
    }

    fn limits(max_connections: usize, max_per_client: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            max_per_client,
            header_read_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_client_past_its_share_goes_to_the_probe_lane_then_is_refused() {
        let gate = Gate::new(&limits(1, 2));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = gate.admit(a);
        assert!(matches!(first, Admission::General(_)));
        // The pool (1) is full: b waits in the lane (4 places).
        let lane: Vec<_> = (0..4).map(|_| gate.admit(b)).collect();
        assert!(lane.iter().all(|x| matches!(x, Admission::ProbeLane(..))));
        assert!(matches!(gate.admit(b), Admission::Refused(Refusal::Pool)));
        drop(first);
        drop(lane);
        assert!(matches!(gate.admit(b), Admission::General(_)));
    }

    #[test]
    fn the_share_per_client_is_released_when_a_connection_ends() {
        let gate = Gate::new(&limits(10, 1));
        let a: IpAddr = [10, 0, 0, 1].into();
        let held = gate.admit(a);
        assert!(matches!(held, Admission::General(_)));
        assert!(matches!(gate.admit(a), Admission::ProbeLane(..)));
        drop(held);
        assert!(matches!(gate.admit(a), Admission::General(_)));
        // The temporary connection above has ended: the address is forgotten.
        assert!(gate.clients.open.lock().unwrap().is_empty());
    }
}
