//! One JSON convention (README "JSON output"): every JSON document vigil
//! prints (`--json`) or serves (`/api/v1/*`, `/health/detailed`, the admin
//! port's errors) has camelCase keys, and every failure has the one shape
//! `{"error": {"code", "message", "requestId"?}}`. Walked on a daemon with
//! backups, a pin and a prune behind it, so no list is empty.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{
    PASSWORD, Response, Vigil, VigilOptions, fresh_catalog, fresh_db, http_with, vigil_cli,
};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];
const ADMIN: &str = "admin-token-json-5e1c07";

/// Objects whose keys are data, not schema (check names, start-up steps):
/// their keys are not checked, their values are.
const DATA_MAPS: [&str; 2] = ["checks", "vigil.startup"];

/// The health+json draft's `^[a-z][a-zA-Z0-9]*$`.
fn camel(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Every key under `v` that is not camelCase, with its path (`a.b[].c`).
fn bad_keys(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let data = DATA_MAPS.contains(&path);
            for (key, child) in map {
                if !data && !camel(key) {
                    out.push(format!("{path}.{key}"));
                }
                let step = if data { "*" } else { key.as_str() };
                let child_path = if path.is_empty() {
                    step.to_owned()
                } else {
                    format!("{path}.{step}")
                };
                bad_keys(child, &child_path, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                bad_keys(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

fn assert_camel(what: &str, v: &Value) {
    let mut bad = Vec::new();
    bad_keys(v, "", &mut bad);
    assert!(
        bad.is_empty(),
        "{what}: keys not camelCase: {bad:?} in {v:#}"
    );
}

/// The one error shape: `code` and `message`, `requestId` only from the API.
fn assert_error_shape(what: &str, v: &Value, api: bool) {
    assert_camel(what, v);
    let error = v["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no error object in {v}"));
    assert!(
        error["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{what}: {v}"
    );
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {v}"
    );
    assert_eq!(error.contains_key("requestId"), api, "{what}: {v}");
    let expected = if api { 3 } else { 2 };
    assert_eq!(
        error.len(),
        expected,
        "{what}: only code, message(, requestId): {v}"
    );
}

fn cli_json(config: &Path, args: &[&str], want: i32) -> Value {
    let (code, stdout, stderr) = vigil_cli(config, args, &ENV);
    assert_eq!(code, want, "vigil {args:?}: {stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("vigil {args:?} printed {stdout}: {e}"))
}

fn call(vigil: &Vigil, method: &str, path: &str, token: Option<&str>) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(vigil.addr, method, path, &headers).unwrap()
}

/// A daemon on the shipped defaults (no optional safety key), one admin
/// token, and a job `orders` keeping its last backup.
fn start() -> Vigil {
    let catalog = fresh_catalog();
    let source = fresh_db();
    source.psql("CREATE TABLE t AS SELECT 1 AS x").unwrap();
    let repo = tempfile::tempdir().unwrap().keep();
    let job = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\ncatch_up = false\n\
         [jobs.orders.retention]\nkeep_last = 1\n",
        repo.display(),
        source.url(),
        source.name,
    );
    let admin = format!(
        "[[admin.tokens]]\nname = \"oncall\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
        hex::encode(Sha256::digest(ADMIN.as_bytes()))
    );
    let options = VigilOptions {
        admin,
        ..Default::default()
    };
    let vigil = Vigil::start_with(&catalog.url(), &job, options);
    vigil.wait_ready();
    vigil
}

/// Three backups, the oldest pinned, then a prune: the listing, the plan
/// and the journal all have entries.
fn backups_pin_prune(config: &Path) -> Vec<String> {
    for _ in 0..3 {
        let (code, _, stderr) = vigil_cli(config, &["backup", "orders"], &ENV);
        assert_eq!(code, 0, "{stderr}");
        // Ids read as start seconds: keep them distinct.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let list = cli_json(config, &["list", "orders", "--json"], 0);
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backupId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "{list}");
    let oldest = ids.iter().min().unwrap();
    let (code, _, stderr) = vigil_cli(config, &["pin", "orders", oldest], &ENV);
    assert_eq!(code, 0, "{stderr}");
    ids
}

#[test]
fn every_json_output_is_camel_case_with_one_error_shape() {
    let vigil = start();
    let config = vigil.config_path_with_addr();
    backups_pin_prune(&config);

    // The CLI's documents.
    let dry = cli_json(&config, &["prune", "orders", "--dry-run", "--json"], 0);
    assert_camel("prune --dry-run --json", &dry);
    assert_eq!(dry[0]["dryRun"], true, "{dry}");
    assert!(
        dry[0]["plan"]["decisions"][0]["finishedAt"].is_string(),
        "{dry}"
    );
    let pruned = cli_json(&config, &["prune", "orders", "--json"], 0);
    assert_camel("prune --json", &pruned);
    assert_eq!(
        pruned[0]["deleted"].as_array().unwrap().len(),
        1,
        "{pruned}"
    );
    let list = cli_json(&config, &["list", "orders", "--json"], 0);
    assert_camel("list orders --json", &list);
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "newest and pinned: {list}"
    );
    assert!(list[0]["backupId"].is_string(), "{list}");
    assert_camel("list --json", &cli_json(&config, &["list", "--json"], 0));
    let verify = cli_json(&config, &["audit", "verify", "--json"], 0);
    assert_camel("audit verify --json", &verify);
    assert!(verify["anchorsChecked"].as_u64().unwrap() > 0, "{verify}");
    let status = cli_json(&config, &["status", "--json"], 0);
    assert_camel("status --json", &status);

    // The API's bodies and /health/detailed.
    let detailed = vigil.get("/health/detailed").json();
    assert_camel("/health/detailed", &detailed);
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/orders",
        "/api/v1/jobs/orders/backups",
        "/api/v1/executions",
    ] {
        let r = call(&vigil, "GET", path, Some(ADMIN));
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert_camel(path, &r.json());
    }
    let backups = call(&vigil, "GET", "/api/v1/jobs/orders/backups", Some(ADMIN)).json();
    assert_eq!(backups["backups"].as_array().unwrap().len(), 2, "{backups}");
    let job = call(&vigil, "GET", "/api/v1/jobs/orders", Some(ADMIN)).json();
    assert_eq!(job["retention"]["keepLast"], 1, "{job}");
    let prune = call(&vigil, "POST", "/api/v1/jobs/orders/prune", Some(ADMIN));
    assert_eq!(prune.status, 200, "{}", prune.body);
    assert_camel("POST prune", &prune.json());
    assert_eq!(prune.json()["dryRun"], true);
    let reload = call(&vigil, "POST", "/api/v1/reload", Some(ADMIN));
    assert_eq!(reload.status, 200, "{}", reload.body);
    assert_camel("POST reload", &reload.json());
    // The audit records are the journal's own lines (a storage format of
    // its own); the envelope around them follows the convention.
    let mut audit = call(&vigil, "GET", "/api/v1/audit", Some(ADMIN)).json();
    assert!(!audit["records"].as_array().unwrap().is_empty(), "{audit}");
    audit["records"] = Value::Array(vec![]);
    assert_camel("/api/v1/audit", &audit);
    let started = call(&vigil, "POST", "/api/v1/jobs/orders/backup", Some(ADMIN));
    assert_eq!(started.status, 202, "{}", started.body);
    assert_camel("POST backup", &started.json());
    assert!(started.json()["requestId"].is_string(), "{}", started.body);

    // Failures: one shape everywhere.
    let api_errors = [
        call(&vigil, "GET", "/api/v1/jobs/nope", Some(ADMIN)),
        call(&vigil, "GET", "/api/v1/jobs", None),
        call(&vigil, "GET", "/api/v1/reload", Some(ADMIN)),
        call(&vigil, "GET", "/api/v1/nope", Some(ADMIN)),
    ];
    for r in &api_errors {
        assert!(r.status >= 400, "{}", r.body);
        assert_error_shape(&format!("API {}", r.status), &r.json(), true);
    }
    let off_api = vigil.get("/nowhere");
    assert_eq!(off_api.status, 404);
    assert_error_shape("admin port 404", &off_api.json(), false);
    let unknown = cli_json(&config, &["list", "nope", "--json"], 64);
    assert_error_shape("list nope --json", &unknown, false);
    assert_eq!(unknown["error"]["code"], "unknown_job");
}

#[test]
fn a_json_command_that_cannot_reach_the_daemon_prints_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    // Port 1 on loopback: nothing listens there.
    let text = crate::harness::config_text(dir.path(), "postgres://u@127.0.0.1:1/x", "")
        .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    std::fs::write(&config, text).unwrap();
    let down = cli_json(&config, &["status", "--json"], 3);
    assert_error_shape("status --json, daemon down", &down, false);
    assert_eq!(down["error"]["code"], "daemon_unreachable");
    let (code, stdout, _) = vigil_cli(&config, &["status"], &ENV);
    assert_eq!(code, 3);
    assert!(
        stdout.is_empty(),
        "without --json stdout stays empty: {stdout}"
    );
}
