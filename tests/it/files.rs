//! File-tree backups (`kind = "files"`) end to end: backup, restore,
//! comparison, and the README's by-hand restore.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::{PASSWORD, config_text, fresh_catalog, vigil_cli};

const ENV: [(&str, &str); 1] = [("TEST_PGPASSWORD", PASSWORD)];

/// The tree the issue lists, with a file that grows while it is read.
fn build_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty/inner-empty")).unwrap();
    std::fs::write(root.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(root.join("secret.key"), b"private").unwrap();
    std::fs::set_permissions(
        root.join("secret.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", root.join("relative-link")).unwrap();
    std::os::unix::fs::symlink(root.join("run.sh"), root.join("absolute-link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", root.join("dangling-link")).unwrap();
    let odd = root.join(OsStr::from_bytes(b"caf\xe9-latin1.txt"));
    std::fs::write(&odd, b"not utf-8 name").unwrap();
    // 2 GB, all hole but one block in the middle.
    let sparse = std::fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(2 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_at(b"middle", 1 << 30).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    std::fs::File::open(root.join("a/b/c/deep.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::write(root.join("zz-growing.log"), vec![b'x'; 8 << 20]).unwrap();
    // An extended attribute (ext4 and tmpfs take user.* attributes).
    xattr::set(root.join("run.sh"), "user.vigil.note", b"kept").unwrap();
}

/// Path (relative) → (kind, mode, mtime, content hash or link target).
fn describe(root: &Path, skip: &[&str]) -> BTreeMap<PathBuf, (String, u32, i64, String)> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(root).unwrap().to_owned();
        if skip.iter().any(|s| rel == Path::new(s)) {
            continue;
        }
        let meta = std::fs::symlink_metadata(entry.path()).unwrap();
        let (kind, what) = if meta.file_type().is_symlink() {
            (
                "link",
                std::fs::read_link(entry.path())
                    .unwrap()
                    .display()
                    .to_string(),
            )
        } else if meta.is_dir() {
            ("dir", String::new())
        } else {
            ("file", fingerprint(entry.path(), meta.len()))
        };
        // Symlink modes and times are not restored by any tar; compare the target.
        let (mode, mtime) = if kind == "link" {
            (0, 0)
        } else {
            (meta.mode() & 0o7777, meta.mtime())
        };
        out.insert(rel, (kind.to_owned(), mode, mtime, what));
    }
    out
}

/// SHA-256 of the content; for big files (the sparse one), of the size and
/// three 1 MiB windows (start, middle, end): hashing 2 GB in a debug build
/// would take longer than the rest of the test.
fn fingerprint(path: &Path, len: u64) -> String {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let windows: Vec<u64> = if len <= 64 << 20 {
        (0..len.div_ceil(1 << 20)).map(|i| i << 20).collect()
    } else {
        hasher.update(len.to_le_bytes());
        vec![0, len / 2, len - (1 << 20)]
    };
    let mut buf = vec![0u8; 1 << 20];
    for offset in windows {
        let n = file.read_at(&mut buf, offset).unwrap();
        hasher.update(&buf[..n]);
    }
    hex::encode(hasher.finalize())
}

/// `vigil backup tree` while another thread appends to `growing`.
fn backup_while_growing(config: &Path, growing: &Path) -> (i32, String, String) {
    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let (stop, growing) = (Arc::clone(&stop), growing.to_owned());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(growing)
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                file.write_all(&[b'y'; 4096]).unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let outcome = vigil_cli(config, &["backup", "tree"], &ENV);
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();
    outcome
}

#[test]
fn a_tree_round_trips_with_modes_times_links_and_a_growing_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    build_tree(&root);
    let catalog = fresh_catalog();
    let identity = age::x25519::Identity::generate();
    let key = dir.path().join("age.key");
    {
        use age::secrecy::ExposeSecret;
        std::fs::write(&key, format!("{}\n", identity.to_string().expose_secret())).unwrap();
    }
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{repo}\" }}\n\
         [repositories.local.encryption]\nrecipients = [\"{recipient}\"]\nidentity_file = \"{key}\"\n\
         [jobs.tree]\nkind = \"files\"\npaths = [\"{root}\"]\nexclude = [\"**/*.tmp\"]\nrepository = \"local\"\nevery = \"1h\"\n",
        repo = dir.path().join("repo").display(),
        recipient = identity.to_public(),
        key = key.display(),
        root = root.display(),
    );
    std::fs::write(root.join("scratch.tmp"), b"left out").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();

    // A writer appends to the log for the whole backup.
    let growing = root.join("zz-growing.log");
    let (code, _, stderr) = backup_while_growing(&config, &growing);
    assert_eq!(code, 0, "{stderr}");

    let manifest = crate::harness::list_manifests(&config, "tree", &ENV)[0].clone();
    assert_eq!(manifest["kind"], "files");
    let report = &manifest["files"]["report"];
    assert!(
        report["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().ends_with("zz-growing.log")),
        "{report}"
    );
    assert_eq!(report["symlinks"], 3, "{report}");
    let details = catalog
        .psql("SELECT details->>'changedCount' FROM vigil.executions WHERE kind = 'backup'")
        .unwrap();
    assert!(details.parse::<u64>().unwrap() >= 1, "{details}");

    // Restore: refused into a non-empty directory, then into an empty one.
    let target = dir.path().join("restored");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("occupied"), b"x").unwrap();
    let to = target.display().to_string();
    let (code, _, stderr) = vigil_cli(&config, &["restore", "tree", "--to-dir", &to], &ENV);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    std::fs::remove_file(target.join("occupied")).unwrap();
    let (code, stdout, stderr) = vigil_cli(&config, &["restore", "tree", "--to-dir", &to], &ENV);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");

    let restored_root = target.join(root.strip_prefix("/").unwrap());
    let skip = ["zz-growing.log", "scratch.tmp"];
    let original = describe(&root, &skip);
    let restored = describe(&restored_root, &skip);
    assert_eq!(
        original.len(),
        restored.len(),
        "{:?}",
        restored.keys().collect::<Vec<_>>()
    );
    for (path, want) in &original {
        assert_eq!(restored.get(path), Some(want), "{}", path.display());
    }
    assert!(!restored_root.join("scratch.tmp").exists(), "excluded");
    assert_eq!(
        xattr::get(restored_root.join("run.sh"), "user.vigil.note")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..]),
        "extended attributes come back"
    );
    let sparse = std::fs::metadata(restored_root.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 2 << 30);
    assert!(
        sparse.blocks() * 512 < 64 << 20,
        "restored sparse: {} blocks",
        sparse.blocks()
    );

    // --force writes over a non-empty directory.
    let (code, _, stderr) = vigil_cli(
        &config,
        &["restore", "tree", "--to-dir", &to, "--force"],
        &ENV,
    );
    assert_eq!(code, 0, "{stderr}");

    // By hand, as the README says: age -d | zstd -d | tar x.
    let id = manifest["backupId"].as_str().unwrap();
    let object = dir
        .path()
        .join(format!("repo/tree/backups/{id}/files.tar.zst.age"));
    let by_hand = dir.path().join("by-hand");
    std::fs::create_dir_all(&by_hand).unwrap();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "age -d -i '{}' '{}' | zstd -d | tar -x -C '{}'",
            key.display(),
            object.display(),
            by_hand.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let deep = by_hand
        .join(root.strip_prefix("/").unwrap())
        .join("a/b/c/deep.txt");
    assert_eq!(std::fs::read(deep).unwrap(), b"deep");
}

#[test]
fn strict_fails_the_run_when_a_file_vanishes_or_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.log"), vec![b'x'; 16 << 20]).unwrap();
    let catalog = fresh_catalog();
    let extra = format!(
        "[repositories.local]\nscheme = \"fs\"\noptions = {{ root = \"{}\" }}\n\
         [jobs.tree]\nkind = \"files\"\npaths = [\"{}\"]\nrepository = \"local\"\nevery = \"1h\"\nstrict = true\n",
        dir.path().join("repo").display(),
        root.display(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(&config, config_text(dir.path(), &catalog.url(), &extra)).unwrap();
    let (code, _, stderr) = backup_while_growing(&config, &root.join("a.log"));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("strict = true") && stderr.contains("a.log"),
        "{stderr}"
    );
    let (_, stdout, _) = vigil_cli(&config, &["list", "tree", "--json"], &ENV);
    assert_eq!(stdout.trim(), "[]", "no backup committed");
}
