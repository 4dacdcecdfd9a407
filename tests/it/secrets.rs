//! Secrets handed to the PostgreSQL tools stay out of their environment
//! and command line (issue 12).

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

#[test]
fn pg_dump_reads_the_password_from_a_private_file_removed_after_the_run() {
    let source = fresh_db();
    source
        .psql("CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
        .unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("seen");
    std::fs::create_dir(&seen).unwrap();
    // A pg_dump that records what it was given, then runs the real one.
    let real = binaries().bin_dir.join("pg_dump");
    let spy = dir.path().join("pg_dump");
    std::fs::write(
        &spy,
        format!(
            "#!/bin/sh\nenv > '{seen}/env'\necho \"$@\" > '{seen}/argv'\n\
             if [ -n \"$PGPASSFILE\" ]; then cp \"$PGPASSFILE\" '{seen}/passfile'; \
             stat -c %a \"$PGPASSFILE\" > '{seen}/mode'; echo \"$PGPASSFILE\" > '{seen}/path'; fi\n\
             exec '{real}' \"$@\"\n",
            seen = seen.display(),
            real = real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let password_file = dir.path().join("pg.password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\n[repositories.local.options]\nroot = \"{}\"\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword_file = \"{pw}\"\n\
         databases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\npg_dump = \"{}\"\n",
        dir.path().join("repo").display(),
        source.url(),
        source.name,
        spy.display(),
        pw = password_file.display(),
    );
    // Secrets from files only, so that nothing in vigil's own environment
    // holds the password.
    let config = dir.path().join("config.toml");
    let text = config_text(dir.path(), &catalog.url(), &extra).replace(
        "password = \"${TEST_PGPASSWORD}\"",
        &format!("password_file = \"{}\"", password_file.display()),
    );
    std::fs::write(&config, text).unwrap();
    let (code, stdout, stderr) = vigil_cli(&config, &["backup", "orders"], &[]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");

    let read = |name: &str| std::fs::read_to_string(seen.join(name)).unwrap();
    let environment = read("env");
    assert!(
        !environment.contains("PGPASSWORD") && !environment.contains(PASSWORD),
        "the password reached pg_dump's environment:\n{environment}"
    );
    assert!(!read("argv").contains(PASSWORD));
    assert_eq!(read("passfile"), format!("*:*:*:*:{PASSWORD}\n"));
    assert_eq!(read("mode").trim(), "600");
    let path = read("path");
    assert!(
        !std::path::Path::new(path.trim()).exists(),
        "{path} was left behind"
    );
}

#[test]
fn secrets_readable_by_others_warn_and_refuse_production() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("ci.token");
    std::fs::write(&token, "ci-token-4f1b9e0c2d7a").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = |environment: &str| {
        format!(
            "[daemon]\nenvironment = \"{environment}\"\nstate_dir = \"{}\"\n\
             [catalog]\nurl = \"postgres://vigil@127.0.0.1:1/vigil\"\npassword = \"inline-catalog-pw-31\"\n\
             [[admin.tokens]]\nname = \"ci\"\nrole = \"viewer\"\ntoken_file = \"{}\"\n",
            dir.path().join("state").display(),
            token.display()
        )
    };
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, text("development")).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stdout, stderr) = vigil_cli(&config, &["check-config"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "holds `catalog.password` inline and is readable by group or others (mode 0644)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("(`admin.tokens[0].token_file`) is readable by group or others"),
        "{stderr}"
    );
    // Neither the secrets nor the token's digest are printed.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        b"ci-token-4f1b9e0c2d7a",
    ));
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("inline-catalog-pw-31") && !text.contains(&digest),
            "{text}"
        );
    }
    assert!(stdout.contains("token_sha256 = \"<redacted>\""), "{stdout}");

    std::fs::write(&config, text("production")).unwrap();
    let (code, _, stderr) = vigil_cli(&config, &["check-config"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("refusing to start in production"),
        "{stderr}"
    );

    // Private files: nothing to say.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, stderr) = vigil_cli(&config, &["check-config"], &[]);
    assert_eq!((code, stderr.as_str()), (0, ""));
}

#[test]
fn a_rotated_source_password_applies_on_reload_without_a_restart() {
    let source = fresh_db();
    let role = format!("rot_{}", source.name);
    source
        .psql(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'first-pw-5511';
             GRANT pg_read_all_data TO {role};
             CREATE TABLE t (id int); INSERT INTO t VALUES (1);"
        ))
        .unwrap();
    let catalog = fresh_db();
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("orders.password");
    std::fs::write(&password_file, "first-pw-5511").unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.orders]\nkind = \"postgres\"\nsource = \"postgres://{role}@127.0.0.1:{}/{}\"\n\
         password_file = \"{}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"2s\"\ncatch_up = false\n",
        dir.path().join("repo").display(),
        source.port,
        source.name,
        password_file.display(),
        source.name
    );
    let vigil = Vigil::start(&catalog, &extra);
    vigil.wait_ready();
    let freshness =
        |v: &Vigil| v.get("/health/detailed").json()["checks"]["orders:freshness"][0].clone();
    vigil.wait_for("a first backup", std::time::Duration::from_secs(30), || {
        freshness(&vigil)["vigil"]["backups"].as_u64() >= Some(1)
    });
    // The password is rotated on the server: runs fail…
    source
        .psql(&format!("ALTER ROLE {role} PASSWORD 'second-pw-7723'"))
        .unwrap();
    vigil.wait_for("a failing run", std::time::Duration::from_secs(30), || {
        freshness(&vigil)["vigil"]["consecutiveFailures"].as_u64() >= Some(1)
    });
    // …until the file is updated and vigil reloaded, with no restart.
    std::fs::write(&password_file, "second-pw-7723").unwrap();
    vigil.signal(nix::sys::signal::Signal::SIGHUP);
    vigil.wait_for_log("secrets applied", std::time::Duration::from_secs(10));
    vigil.wait_for(
        "a backup with the new password",
        std::time::Duration::from_secs(30),
        || freshness(&vigil)["vigil"]["consecutiveFailures"] == 0,
    );
    let (code, stdout, _) = vigil_cli(
        &vigil.config_path_with_addr(),
        &["audit", "show", "--event", "config.reloaded", "--json"],
        &[("TEST_PGPASSWORD", PASSWORD)],
    );
    assert_eq!(code, 0);
    let reloaded: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let diff = reloaded["data"]["diff"].as_array().unwrap();
    assert!(
        diff.iter().any(|c| c["key"] == "jobs.orders.password"
            && c["live"] == true
            && c["new"] == "<redacted>"),
        "{reloaded:#}"
    );
    for secret in ["first-pw-5511", "second-pw-7723"] {
        assert!(!stdout.contains(secret) && !vigil.log_text().contains(secret));
    }
}
