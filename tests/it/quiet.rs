//! A quiet CLI, on the shipped defaults (config.toml.example with only the
//! machine's own paths and credentials): on success a command prints its
//! result on stdout and nothing on stderr; `-v`, `-vv` and `VIGIL_LOG` bring
//! the log lines back; a failure still says what failed.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::*;

/// The example config on a fresh catalog and a source the `backup_*` role
/// may read, secrets 0600 as the README asks.
struct Example {
    _catalog: TestDb,
    _source: TestDb,
    dir: tempfile::TempDir,
    config: PathBuf,
    text: String,
}

fn example() -> Example {
    let crate::truth::ShippedExample {
        catalog,
        source,
        dir,
        text,
    } = crate::truth::shipped_example(
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, &text).unwrap();
    Example {
        _catalog: catalog,
        _source: source,
        dir,
        config,
        text,
    }
}

/// Runs `args`, expects exit 0 and an empty stderr; returns stdout.
fn quiet(config: &std::path::Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = vigil_cli(config, args, &[]);
    assert_eq!(code, 0, "{args:?} failed:\n{stdout}\n{stderr}");
    assert_eq!(stderr, "", "{args:?} wrote on stderr");
    stdout
}

#[test]
fn every_command_on_the_shipped_defaults_prints_its_result_and_nothing_on_stderr() {
    let e = example();
    assert!(quiet(&e.config, &["migrate"]).contains("catalog schema at version"));
    assert!(quiet(&e.config, &["backup", "orders"]).contains("orders"));
    let listed = quiet(&e.config, &["list", "orders"]);
    // One backup row (the job's proofs line follows the table).
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("orders ")).count(),
        1,
        "{listed}"
    );
    assert!(
        listed.contains("orders: last verify: never; last drill: never"),
        "{listed}"
    );
    assert!(!quiet(&e.config, &["list"]).is_empty());
    assert!(!quiet(&e.config, &["prune", "orders", "--dry-run"]).is_empty());
    assert!(quiet(&e.config, &["check-config"]).contains("is valid"));
    assert!(!quiet(&e.config, &["audit", "verify"]).is_empty());
    assert!(!quiet(&e.config, &["audit", "show"]).is_empty());

    // `status` asks the running daemon.
    let options = VigilOptions {
        env: Default::default(),
        ..VigilOptions::default()
    };
    let vigil = Vigil::start_text(e.dir, &e.text, options);
    vigil.wait_ready();
    assert!(!quiet(&vigil.config_path_with_addr(), &["status"]).is_empty());
}

#[test]
fn verbose_flags_and_vigil_log_bring_the_log_lines_back() {
    let e = example();
    quiet(&e.config, &["migrate"]);

    let (code, _, stderr) = vigil_cli(&e.config, &["-v", "migrate"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("catalog is accepting connections"),
        "{stderr}"
    );

    let (code, _, stderr) = vigil_cli(&e.config, &["backup", "orders", "--verbose"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("INFO") && stderr.contains("backup committed"),
        "{stderr}"
    );
    assert!(!stderr.contains("DEBUG"), "-v is info, not debug: {stderr}");

    let (code, _, stderr) = vigil_cli(&e.config, &["-vv", "list", "orders"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("DEBUG"), "-vv is debug: {stderr}");

    let (code, _, stderr) = vigil_cli(&e.config, &["backup", "orders"], &[("VIGIL_LOG", "debug")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("backup committed") && stderr.contains("DEBUG"),
        "{stderr}"
    );

    // A filter by target: only what it names.
    let (code, _, stderr) = vigil_cli(
        &e.config,
        &["backup", "orders"],
        &[("VIGIL_LOG", "warn,vigil::jobs=info")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("backup committed") && !stderr.contains("DEBUG"),
        "{stderr}"
    );
}

#[test]
fn a_failing_command_still_says_what_failed() {
    let e = example();
    let (code, stdout, stderr) = vigil_cli(&e.config, &["backup", "nope"], &[]);
    assert_eq!(code, 64, "{stdout}");
    assert!(stderr.contains("no job `nope`"), "{stderr}");

    // The source refuses the backup role: the error, on the quiet default.
    std::fs::write(e.dir.path().join("orders.password"), "wrong-pw-31").unwrap();
    let (code, _, stderr) = vigil_cli(&e.config, &["backup", "orders"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong-pw-31"), "{stderr}");

    let (code, _, stderr) = vigil_cli(&e.config, &["list"], &[("VIGIL_LOG", "vigil=loud")]);
    assert_eq!(code, 64);
    assert!(
        stderr.contains("VIGIL_LOG=\"vigil=loud\" is not a log filter"),
        "{stderr}"
    );
}

#[test]
fn completion_scripts_parse_and_the_man_page_names_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("absent.toml");
    for (shell, checker) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let script = quiet(&config, &["completions", shell]);
        assert!(script.contains("vigil"), "{shell}: {script}");
        let path = dir.path().join(format!("vigil.{shell}"));
        std::fs::write(&path, &script).unwrap();
        // zsh and fish may be missing here; bash is always present.
        let Ok(status) = Command::new(checker).arg("-n").arg(&path).status() else {
            assert_ne!(shell, "bash", "bash is needed to check the script");
            continue;
        };
        assert!(status.success(), "{shell} -n rejects the completion script");
    }

    let roff = quiet(&config, &["man"]);
    let page = roff.replace("\\-", "-");
    for sub in [
        "run",
        "check-config",
        "migrate",
        "status",
        "backup",
        "list",
        "restore",
        "prune",
        "pin",
        "unpin",
        "audit",
        "demo",
        "completions",
        "man",
    ] {
        assert!(
            page.contains(&format!("vigil-{sub}(1)")),
            "{sub} missing from the man page"
        );
    }
    if let Ok(groff) = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::fs::File::open(write(&dir, "vigil.1", &roff)).unwrap())
        .output()
    {
        assert!(groff.status.success());
        assert_eq!(String::from_utf8_lossy(&groff.stderr), "", "groff warns");
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_daemon_ignores_vigil_log_and_logs_as_its_config_says() {
    let e = example();
    quiet(&e.config, &["migrate"]);
    let options = VigilOptions {
        env: [("VIGIL_LOG".to_owned(), "error".to_owned())].into(),
        ..VigilOptions::default()
    };
    // start_text waits for the INFO line "admin port listening": `[log]`'s
    // level = "info" still rules.
    let vigil = Vigil::start_text(e.dir, &e.text, options);
    vigil.wait_ready();
    assert!(vigil.log_text().contains(" INFO "), "{}", vigil.log_text());
}
