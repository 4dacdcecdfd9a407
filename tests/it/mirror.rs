//! `kind = "mirror"`: an fs repository mirrored to S3 (moto), with a
//! damaged object at the source, then resumed.

use crate::harness::{
    PASSWORD, S3Server, config_text, fresh_catalog, fresh_db, s3_server, vigil_cli,
};

#[test]
fn a_damaged_object_is_refused_and_a_rerun_copies_only_what_is_missing() {
    let source = fresh_db();
    source
        .psql(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g",
        )
        .unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let server: &S3Server = s3_server();
    let prefix = server.unique_prefix("mirror");
    let local = dir.path().join("repo");
    let job = |repository: &str| {
        format!(
            "[jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"{repository}\"\nevery = \"1h\"\n",
            source.url(),
            source.name
        )
    };
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n{}{}\
         [jobs.offsite]\nkind = \"mirror\"\nrepository = \"local\"\nmirror_to = \"remote\"\nevery = \"1h\"\n",
        local.display(),
        server.repository_toml("remote", &prefix, ""),
        job("local"),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (k, v) = server.env();
    let env = [
        ("TEST_PGPASSWORD", PASSWORD),
        ("PGPASSWORD", PASSWORD),
        (k, v),
    ];
    let cli = |args: &[&str]| vigil_cli(&config, args, &env);

    let mut ids = Vec::new();
    for _ in 0..2 {
        let (code, stdout, stderr) = cli(&["backup", "orders"]);
        assert_eq!(code, 0, "{stderr}");
        ids.push(stdout.split_whitespace().nth(1).unwrap().to_owned());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let (code, _, stderr) = cli(&["pin", "orders", &ids[1]]);
    assert_eq!(code, 0, "{stderr}");

    // One byte of the first backup's dump flipped at the source.
    let object = std::fs::read_dir(local.join(format!("orders/backups/{}", ids[0])))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap() != "manifest.json")
        .unwrap();
    let original = std::fs::read(&object).unwrap();
    let mut damaged = original.clone();
    damaged[original.len() / 2] ^= 0x01;
    std::fs::write(&object, &damaged).unwrap();

    let (code, _, stderr) = cli(&["backup", "offsite"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("damaged") && stderr.contains(&ids[0]),
        "{stderr}"
    );
    let rows = catalog
        .psql("SELECT kind || ' ' || status FROM vigil.executions WHERE job = 'offsite'")
        .unwrap();
    assert_eq!(rows, "mirror failed");

    // The destination lists the good backup only; the damaged one has no manifest.
    let remote_config = dir.path().join("remote.toml");
    let remote_extra = format!(
        "{}{}",
        server.repository_toml("remote", &prefix, ""),
        job("remote")
    );
    std::fs::write(
        &remote_config,
        config_text(dir.path(), &catalog.url(), &remote_extra),
    )
    .unwrap();
    let list = |config: &std::path::Path| -> Vec<String> {
        crate::harness::list_manifests(config, "orders", &env)
            .iter()
            .map(|m| m["backupId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list(&remote_config), vec![ids[1].clone()]);

    // Repaired at the source: the rerun copies the two missing objects
    // (dump and manifest) and leaves the verified ones alone.
    std::fs::write(&object, &original).unwrap();
    let (code, stdout, stderr) = cli(&["backup", "offsite"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("2 object(s) copied")
            && stdout.contains("3 already there")
            && stdout.contains("1 backup(s) completed"),
        "{stdout}"
    );
    // The mirror brought the destination's own listing index up to date.
    let index = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(
            server
                .operator()
                .read(&format!("{prefix}/orders/index.json.zst")),
        )
        .expect("the mirror writes the destination's index")
        .to_vec();
    let index: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(index.as_slice()).unwrap()).unwrap();
    let indexed: Vec<&str> = index["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manifest"]["backupId"].as_str().unwrap())
        .collect();
    assert_eq!(indexed, ids);
    assert_eq!(list(&remote_config), ids);

    // The mirror is a repository in its own right: restore from it.
    let target = format!("{}_from_mirror", source.name);
    let url = source.url().replace(&source.name, &target);
    let (code, _, stderr) = vigil_cli(
        &remote_config,
        &[
            "restore", "orders", "--backup", &ids[0], "--to", &url, "--create",
        ],
        &env,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        crate::harness::shared_psql(&target, "SELECT count(*) FROM t").unwrap(),
        "20000"
    );
    // The pin came across too.
    let (_, stdout, _) = vigil_cli(
        &remote_config,
        &["prune", "orders", "--dry-run", "--json"],
        &env,
    );
    assert!(stdout.contains("pinned"), "{stdout}");
}

#[test]
fn an_interrupted_mirror_resumes_without_recopying_what_was_verified() {
    let source = fresh_db();
    source
        .psql(
            "CREATE TABLE t AS SELECT g AS id, \
             (SELECT string_agg(md5(random()::text || g || s), '') FROM generate_series(1, 100) s) AS v \
             FROM generate_series(1, 3000) g",
        )
        .unwrap();
    let catalog = fresh_catalog();
    let dir = tempfile::tempdir().unwrap();
    let config_for = |rate: &str| {
        let extra = format!(
            "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
             [repositories.copy]\nscheme = \"fs\"\n{rate}[repositories.copy.options]\nroot = \"{}\"\n\
             [jobs.orders]\nkind = \"postgres\"\nsource = \"{}\"\npassword = \"${{TEST_PGPASSWORD}}\"\ndatabases = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\ncompression = \"none\"\n\
             [jobs.offsite]\nkind = \"mirror\"\nrepository = \"local\"\nmirror_to = \"copy\"\nevery = \"1h\"\n",
            dir.path().join("repo").display(),
            dir.path().join("copy").display(),
            source.url(),
            source.name
        );
        let path = dir.path().join(if rate.is_empty() {
            "config.toml"
        } else {
            "throttled.toml"
        });
        std::fs::write(&path, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
        path
    };
    let config = config_for("");
    let throttled = config_for("max_upload_rate = \"4MiB\"\n");
    let env = [("TEST_PGPASSWORD", PASSWORD)];
    for _ in 0..3 {
        let (code, _, stderr) = vigil_cli(&config, &["backup", "orders"], &env);
        assert_eq!(code, 0, "{stderr}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // About 3 × 10 MiB at 4 MiB/s: cut off after the first backup or two.
    let mut child = std::process::Command::new(crate::harness::VIGIL)
        .arg("--config")
        .arg(&throttled)
        .args(["backup", "offsite"])
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(4500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the throttled mirror finished early"
    );
    child.kill().unwrap();
    child.wait().unwrap();

    let (code, stdout, stderr) = vigil_cli(&config, &["backup", "offsite"], &env);
    assert_eq!(code, 0, "{stderr}");
    let number = |label: &str| -> u64 {
        let before = stdout.split(label).next().unwrap();
        before
            .split_whitespace()
            .last()
            .unwrap()
            .trim_start_matches('(')
            .parse()
            .unwrap()
    };
    let (copied, there, completed) = (
        number("object(s) copied"),
        number("already there"),
        number("backup(s) completed"),
    );
    assert!(
        there >= 2,
        "what the cut-off run verified is not copied again: {stdout}"
    );
    assert_eq!(copied + there, 6, "3 dumps and 3 manifests: {stdout}");
    assert!(completed < 3, "{stdout}");
}
