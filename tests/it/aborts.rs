//! A source that fails mid-stream: the upload in flight is finished and
//! then aborted, never dropped half-way (which left opendal's retrying
//! writer "in bad state" and the abort failing), on an object store
//! (issue 12).

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

#[test]
fn a_failing_source_aborts_its_object_store_upload_cleanly() {
    let source = fresh_db();
    let catalog = fresh_catalog();
    let s3 = s3_server();
    let prefix = s3.unique_prefix("aborts");
    let dir = tempfile::tempdir().unwrap();
    // A pg_dump that streams 12 MiB of noise (several 5 MiB parts) and fails.
    let real = binaries().bin_dir.join("pg_dump");
    let spy = dir.path().join("pg_dump");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec '{}' --version;; esac\n\
             head -c 12582912 /dev/urandom\necho 'pg_dump: error: connection lost' >&2\nexit 1\n",
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let extra = format!(
        "{}[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\n\
         databases = [\"{}\"]\nrepository = \"remote\"\nevery = \"1h\"\npg_dump = \"{}\"\n",
        // Throttled, so a part is still being written when the source fails.
        s3.repository_toml("remote", &prefix, "max_upload_rate = \"4MiB\"\n"),
        source.url(),
        source.name,
        spy.display()
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (key, secret) = s3.env();
    for round in 0..3 {
        let (code, stdout, stderr) = vigil_cli(
            &config,
            &["backup", "orders"],
            &[("TEST_PGPASSWORD", PASSWORD), (key, secret)],
        );
        assert_eq!(code, 1, "round {round}: {stdout}\n{stderr}");
        assert!(
            stderr.contains("connection lost"),
            "round {round}: {stderr}"
        );
        assert!(
            !stderr.contains("cannot abort") && !stderr.contains("bad state"),
            "round {round}: the abort failed:\n{stderr}"
        );
    }
}
