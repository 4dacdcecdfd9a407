//! Hostile clients on the admin port: idle and trickling (slowloris)
//! connections must not starve `/health`; one address cannot take the pool.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness::{Vigil, VigilOptions, fresh_db, http};

const IDLE_CONNECTIONS: usize = 1_000;
const SLOWLORIS_CONNECTIONS: usize = 1_000;
const PROBES: usize = 200;
const P99_LIMIT: Duration = Duration::from_millis(250);

/// 200 sequential `/health` requests: each must answer 200; returns the
/// sorted latencies.
fn measure_health(addr: SocketAddr, what: &str) -> Vec<Duration> {
    let mut latencies: Vec<Duration> = (0..PROBES)
        .map(|i| {
            let started = Instant::now();
            let response = http(addr, "GET", "/health")
                .unwrap_or_else(|e| panic!("{what}: /health #{i} failed: {e}"));
            assert_eq!(response.status, 200, "{what}: /health #{i}");
            started.elapsed()
        })
        .collect();
    latencies.sort();
    let p50 = latencies[PROBES / 2];
    let p99 = latencies[PROBES * 99 / 100];
    println!("{what}: /health p50 {p50:?} p99 {p99:?} over {PROBES} requests");
    assert!(p99 < P99_LIMIT, "{what}: /health p99 {p99:?}");
    latencies
}

fn open_idle(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect()
}

/// `count` keep-alive connections, each served one `/health` in the
/// general pool and then left idle: unlike [`open_idle`], the server has
/// counted every one of them when this returns, however loaded the host.
fn open_served(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut buf = [0u8; 8192];
            let n = stream.read(&mut buf).unwrap();
            let head = String::from_utf8_lossy(&buf[..n]);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            // The probe lane answers with `connection: close`.
            assert!(!head.contains("connection: close"), "{head}");
            stream
        })
        .collect()
}

/// Runs `attack` on a thread while `/health` is measured, then stops it.
fn under_attack(vigil: &Vigil, what: &str, count: usize, trickle: bool) {
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = Arc::clone(&stop);
        let addr = vigil.addr;
        thread::spawn(move || attack(addr, count, trickle, &stop))
    };
    // Let the attack reach its size (and the trickle start) first.
    thread::sleep(Duration::from_secs(3));
    measure_health(vigil.addr, what);
    stop.store(true, Ordering::Relaxed);
    let (rounds, peak, opened) = attacker.join().unwrap();
    println!(
        "{what}: {rounds} attack rounds, {opened} connections opened, up to {peak} open at once"
    );
    assert!(rounds >= 2, "the attack ran {rounds} rounds");
    assert!(
        opened >= count,
        "the attack opened only {opened} connections"
    );
}

/// Holds `count` connections from 127.0.0.1 until `stop` (at most 20 s),
/// reopening those the server closes; with `trickle`, each sends one header
/// byte a second (slowloris). Returns the rounds run, the most connections
/// open at once, and the connections opened in all.
fn attack(
    addr: SocketAddr,
    count: usize,
    trickle: bool,
    stop: &AtomicBool,
) -> (usize, usize, usize) {
    let header = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut conns: Vec<(TcpStream, usize)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last_byte = Instant::now();
    let (mut rounds, mut peak, mut opened) = (0, 0, 0);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        while conns.len() < count {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                Ok(s) if s.set_nonblocking(true).is_ok() => {
                    conns.push((s, 0));
                    opened += 1;
                }
                _ => break,
            }
        }
        peak = peak.max(conns.len());
        let send = trickle && last_byte.elapsed() >= Duration::from_secs(1);
        if send {
            last_byte = Instant::now();
        }
        conns.retain_mut(|(stream, sent)| {
            if send {
                let byte = header[*sent % header.len()];
                *sent += 1;
                if stream.write_all(&[byte]).is_err() {
                    return false;
                }
            }
            still_open(stream)
        });
        rounds += 1;
        thread::sleep(Duration::from_millis(200));
    }
    (rounds, peak, opened)
}

/// A non-blocking socket the server has not closed.
fn still_open(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// On the shipped defaults (no admin key set): 1,000 idle connections,
/// reopened as the server closes them.
#[test]
fn idle_connections_do_not_starve_health() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    under_attack(&vigil, "1000 idle connections", IDLE_CONNECTIONS, false);
}

/// Connections that send one header byte a second, reopened when closed.
#[test]
fn slowloris_does_not_starve_health() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    under_attack(&vigil, "slowloris", SLOWLORIS_CONNECTIONS, true);
}

/// A client past `max_connections_per_client` gets `/health` but nothing
/// else; the old code served it all.
#[test]
fn a_client_past_its_share_is_served_probes_only() {
    let db = fresh_db();
    let options = VigilOptions {
        admin: "max_connections_per_client = 2\n".into(),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&db.url(), "", options);
    vigil.wait_ready();
    let held = open_idle(vigil.addr, 2);
    assert_eq!(held.len(), 2);
    // Give the accept loop time to count them.
    thread::sleep(Duration::from_millis(200));

    let health = http(vigil.addr, "GET", "/health").unwrap();
    assert_eq!(health.status, 200);
    let metrics = http(vigil.addr, "GET", "/metrics");
    assert!(
        metrics.is_err(),
        "a third connection got {:?}",
        metrics.map(|r| r.status)
    );

    drop(held);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(http(vigil.addr, "GET", "/metrics").unwrap().status, 200);
}

/// `vigil_admin_connections_refused_total{reason}` as `/metrics` serves it.
fn refused_count(addr: SocketAddr, reason: &str) -> u64 {
    let metrics = http(addr, "GET", "/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    let sample = format!("vigil_admin_connections_refused_total{{reason=\"{reason}\"}} ");
    metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix(sample.as_str()))
        .unwrap_or_else(|| panic!("no {sample}in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// On the shipped defaults (32 connections per client): connections past
/// the share that ask for something other than a probe, or send nothing,
/// are counted as refused `per_client`; probes answered are not.
#[test]
fn refused_connections_are_counted_by_reason() {
    let db = fresh_db();
    let vigil = Vigil::start(&db, "");
    vigil.wait_ready();
    assert_eq!(refused_count(vigil.addr, "per_client"), 0);
    let held = open_served(vigil.addr, 32);
    for _ in 0..5 {
        assert!(http(vigil.addr, "GET", "/metrics").is_err());
    }
    // Silent connections leave the lane after its 100 ms wait.
    let silent = open_idle(vigil.addr, 3);
    assert_eq!(http(vigil.addr, "GET", "/health").unwrap().status, 200);
    thread::sleep(Duration::from_millis(400));
    drop(silent);
    drop(held);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(refused_count(vigil.addr, "per_client"), 8);
    assert_eq!(refused_count(vigil.addr, "pool"), 0);
}

/// With the general pool full (here of one client's idle connections),
/// probes are still answered and other requests closed.
#[test]
fn a_full_pool_still_answers_probes_only() {
    let db = fresh_db();
    let options = VigilOptions {
        admin: "max_connections = 3\n".into(),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&db.url(), "", options);
    vigil.wait_ready();
    let held = open_served(vigil.addr, 3);

    for path in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(http(vigil.addr, "GET", path).unwrap().status, 200, "{path}");
    }
    assert!(
        http(vigil.addr, "GET", "/").is_err(),
        "the status page was served"
    );
    drop(held);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(refused_count(vigil.addr, "pool"), 1);
}

/// An idle keep-alive connection is closed after `header_read_timeout`, so
/// it cannot hold a slot for ever.
#[test]
fn an_idle_keep_alive_connection_is_closed() {
    let db = fresh_db();
    let options = VigilOptions {
        admin: "header_read_timeout = \"1s\"\n".into(),
        ..Default::default()
    };
    let vigil = Vigil::start_with(&db.url(), "", options);
    vigil.wait_ready();
    let mut stream = TcpStream::connect(vigil.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = stream.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let idle_since = Instant::now();
    // The connection is kept alive, then closed: read returns EOF.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let idle = idle_since.elapsed();
    println!("idle keep-alive connection closed after {idle:?}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after {idle:?}"
    );
}
