//! What each fuzz target does with its input. Every path into vigil the
//! fuzzers take is in this file (modules move; one file to update), and
//! the same functions replay `fuzz/regressions/<target>/` in the ordinary
//! test suite (tests/it/fuzz_regressions.rs includes this file), so a
//! crash once found stays fixed without libFuzzer.
//!
//! A target panics only on a bug: a panic inside vigil, or a broken
//! invariant checked here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;

use vigil::admin::{AdminState, handle};
use vigil::config::{Config, diff, parse};
use vigil::core::journal_record::{ChainCheck, Record};
use vigil::core::manifest::Manifest;
use vigil::journal::segment::split;
use vigil::journal::verify::{
    SegmentInput, TableRow, check_signatures, signing_key_named, verify_segments, verify_table,
};
use vigil::state::{Phase, Shared};

/// A target's body: panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay test.
pub const TARGETS: [(&str, Target); 4] = [
    ("config", config),
    ("manifest", manifest),
    ("journal", journal),
    ("admin", admin),
];

/// TOML text → expanded, deserialised, validated `Config`; a valid one is
/// redacted and diffed against itself (no changes).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative `*_file` paths resolve under a directory that does not exist.
    let origin = Path::new("/nonexistent-vigil-fuzz/config.toml");
    let env: HashMap<String, String> = [("PGPASSWORD", "fuzz-secret"), ("EMPTY", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let Ok(config) = parse(text, origin, &env) else {
        return;
    };
    let _ = config.to_redacted_toml();
    let _ = config.named_secrets();
    assert!(
        diff(&config, &config).is_empty(),
        "a config differs from itself"
    );
}

/// Bytes → `Manifest`; a manifest that decodes encodes to one that
/// decodes to the same value, and its accessors hold.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    let again = Manifest::decode(&manifest.encode()).expect("an encoded manifest decodes");
    assert_eq!(again, manifest, "decode(encode(m)) != m");
    let _ = manifest.check_place("job", "20261127T000000Z", chrono::Utc::now());
    let _ = manifest.stored_bytes();
    let _ = manifest.raw_bytes();
    let _ = manifest.database_object(None);
    for name in manifest.database_names() {
        let _ = manifest.database_object(Some(&name));
    }
}

/// Bytes → one journal segment: split into lines and a torn tail,
/// verified as files, as catalog rows, and for signatures.
pub fn journal(data: &[u8]) {
    let (lines, fragment) = split(data, 0);
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    let rows: Vec<TableRow> = texts
        .iter()
        .filter_map(|t| serde_json::from_str::<Record>(t).ok())
        .zip(&texts)
        .map(|(r, t)| TableRow {
            seq: r.seq,
            record: (*t).to_owned(),
        })
        .collect();
    let segment = SegmentInput {
        name: "journal-000001.jsonl".into(),
        lines: lines.clone(),
        fragment,
    };
    let mut report = verify_segments(std::slice::from_ref(&segment), Some(&rows), &[]);
    let _ = verify_table(&rows, &[]);
    let key = ed25519_key();
    check_signatures(
        &mut report,
        texts.iter().copied(),
        &key,
        std::time::Duration::from_secs(60),
        "fuzz",
    );
    let _ = signing_key_named(texts.iter().copied());
    // Record by record, as the shipper reads a tail.
    let mut chain = ChainCheck::new(None);
    for text in &texts {
        let _ = chain.push(text);
    }
}

fn ed25519_key() -> ed25519_dalek::VerifyingKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key()
}

/// A request (`METHOD URI` line, `Name: value` lines, a blank line, the
/// body) through the admin router and the API's auth, without a socket,
/// on a state built in memory (`protect_detailed`, two tokens, a trusted
/// proxy range, no API behind it).
pub fn admin(data: &[u8]) {
    let Some(req) = request(data) else {
        return;
    };
    let api = req.uri().path().starts_with("/api/");
    let peer: SocketAddr = ([10, 1, 2, 3], 40000).into();
    let response = futures::executor::block_on(handle(admin_state(), req, peer));
    let status = response.status();
    assert!(
        !status.is_server_error() || status == 503,
        "admin answered {status}"
    );
    assert!(
        response.headers().contains_key(hyper::header::CONTENT_TYPE),
        "a response without a content type"
    );
    if api {
        let body = response.into_body();
        let bytes = futures::executor::block_on(http_body_util::BodyExt::collect(body))
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("the API answers JSON");
    }
}

fn request(data: &[u8]) -> Option<Request<Full<Bytes>>> {
    let split_at = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split_at {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = lines.next()?;
    let space = first.iter().position(|b| *b == b' ')?;
    let mut builder = Request::builder()
        .method(&first[..space])
        .uri(&first[space + 1..]);
    for line in lines {
        let colon = line.iter().position(|b| *b == b':')?;
        let value = line[colon + 1..].trim_ascii_start();
        builder = builder.header(&line[..colon], value);
    }
    builder.body(Full::new(Bytes::copy_from_slice(body))).ok()
}

/// Tokens the seeds use: `viewer-token-fuzz` and `admin-token-fuzz`.
const ADMIN_CONFIG: &str = r#"
[catalog]
url = "postgres://vigil@127.0.0.1/vigil"
[admin]
protect_detailed = true
trusted_proxies = ["10.0.0.0/8"]
auth_failures_per_minute = 5
[[admin.tokens]]
name = "grafana"
role = "viewer"
token_sha256 = "72755d674c6ff8e13f4a86d5fac3bb00da50f9395cb531ea42e7e3bcda8979a2"
[[admin.tokens]]
name = "oncall"
role = "admin"
token_sha256 = "075616d98143348194142e0ffe72f9c28c3055c704b440b16cf8864b1942a596"
"#;

fn admin_state() -> &'static AdminState {
    static STATE: OnceLock<AdminState> = OnceLock::new();
    STATE.get_or_init(|| {
        let config: Config = parse(
            ADMIN_CONFIG,
            Path::new("/nonexistent-vigil-fuzz/config.toml"),
            &HashMap::new(),
        )
        .expect("the fuzz admin config is valid");
        let shared: Arc<Shared> = Shared::new("vigil-fuzz".into(), None);
        shared.set_phase(Phase::Ready);
        AdminState::new(shared, &config)
    })
}
