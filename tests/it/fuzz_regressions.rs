//! Replays every input the fuzzers ever crashed on (`fuzz/regressions/<target>/`)
//! and the seed corpus (`fuzz/seeds/<target>/`) through the fuzz targets'
//! own bodies, on stable and without libFuzzer: a fixed crash stays fixed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[path = "../../fuzz/src/targets.rs"]
mod targets;

/// Every file under `dir`, sorted (a missing directory holds none).
fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_kept_fuzz_input_runs_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (name, target) in targets::TARGETS {
        let seeds = inputs(&fuzz.join("seeds").join(name));
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} holds no seed");
        for file in seeds
            .into_iter()
            .chain(inputs(&fuzz.join("regressions").join(name)))
        {
            let data = std::fs::read(&file).unwrap();
            replayed += 1;
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failed.push(file.display().to_string());
            }
        }
    }
    assert!(failed.is_empty(), "panicked on: {failed:?}");
    println!("fuzz inputs replayed: {replayed}");
}
