//! The fuzz targets' bodies live in `targets.rs`, shared with the
//! regression test that replays `regressions/` on stable.

pub mod targets;
