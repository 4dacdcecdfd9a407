//! The logical backup hot path (issue 18) end to end on the shipped
//! defaults: a text-heavy database several pipe-fulls large goes through
//! the pump (pg_dump's pipe read in blocks, zstd with the default workers)
//! and back through the restore's blocking writes into pg_restore.

use crate::harness::*;

/// The table's rows in order, hashed: equal means the same data.
fn content(db: &TestDb) -> String {
    db.psql("SELECT md5(string_agg(id || ':' || t, ',' ORDER BY id)) || ' ' || count(*) FROM notes")
        .unwrap()
}

#[test]
fn a_text_heavy_database_round_trips_on_the_shipped_defaults() {
    // ~24 MiB dumped, about 3:1 with zstd: many 1 MiB blocks and zstd jobs,
    // and a last block that is not whole.
    let crate::truth::ShippedExample {
        catalog: _catalog,
        source,
        dir,
        text,
    } = crate::truth::shipped_example(
        "CREATE TABLE notes AS SELECT g AS id,
             md5(random()::text) || md5(random()::text) || repeat(md5(random()::text), 3) AS t
             FROM generate_series(1, 150001) g",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, text).unwrap();
    for args in [&["migrate"][..], &["backup", "orders"]] {
        let (code, stdout, stderr) = vigil_cli(&config, args, &[]);
        assert_eq!(code, 0, "{args:?}:\n{stdout}\n{stderr}");
    }

    let target = format!("{}_restored", source.name);
    let to = format!("postgres://postgres@127.0.0.1:{}/{target}", source.port);
    let (code, stdout, stderr) = vigil_cli(
        &config,
        &["restore", "orders", "--latest", "--to", &to, "--create"],
        &[("PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0, "restore:\n{stdout}\n{stderr}");
    let restored = TestDb {
        name: target,
        port: source.port,
    };
    let expected = content(&source);
    assert!(expected.ends_with(" 150001"), "{expected}");
    assert_eq!(content(&restored), expected);
}

/// A job whose `pg_dump` is `script`, on a source database; returns the
/// backup's exit code and stderr.
fn backup_with_pg_dump(source_url: &str, database: &str, script: &str) -> (i32, String) {
    use std::os::unix::fs::PermissionsExt;
    let catalog = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let tool = dir.path().join("pg_dump");
    std::fs::write(&tool, script).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\n[repositories.local.options]\nroot = \"{}\"\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{source_url}\"\n\
         password = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{database}\"]\n\
         repository = \"local\"\nevery = \"1h\"\npg_dump = \"{}\"\n",
        dir.path().join("repo").display(),
        tool.display(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (code, _, stderr) = vigil_cli(
        &config,
        &["backup", "orders"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    (code, stderr)
}

#[test]
fn the_pg_dump_version_check_runs_beside_the_source_facts_and_keeps_its_order() {
    let source = fresh_db();
    // An old client is refused, naming both versions.
    let (code, stderr) = backup_with_pg_dump(
        &source.url(),
        &source.name,
        "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("is version 9.6.24, older than the server (15."),
        "{stderr}"
    );
    // An unreachable source is the first complaint, whatever the client.
    let (code, stderr) = backup_with_pg_dump(
        "postgres://postgres@127.0.0.1:9/nowhere",
        "nowhere",
        "#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n",
    );
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("cannot reach the source 127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!stderr.contains("9.6.24"), "{stderr}");
}
