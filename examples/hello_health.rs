//! Baseline for `bench/health.sh`: the smallest hyper 1.x server built the
//! same way as vigil's admin server (tokio multi-thread runtime, one task per
//! connection, hyper's HTTP/1 connection builder), answering every request
//! with `200 {"status":"pass"}` and no routing, state or logging.
//!
//! ```text
//! cargo run --release --example hello_health -- [ADDR]    # default 127.0.0.1:0
//! ```
//!
//! Prints `listening on ADDR` on stdout once bound.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = br#"{"status":"pass"}"#;

async fn health(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    let headers = resp.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/health+json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:0")
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    // stdout is line-buffered: the line is visible at once, even through a pipe.
    println!("listening on {}", listener.local_addr()?);

    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Responses are single small writes; do not let Nagle hold them back.
        if let Err(err) = stream.set_nodelay(true) {
            eprintln!("set_nodelay: {err}");
        }
        tokio::spawn(async move {
            // Errors here are clients going away mid-request (wrk does at the
            // end of a run); there is nothing to do about them.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(health))
                .await;
        });
    }
}
