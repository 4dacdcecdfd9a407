//! Who runs a CLI command, as the journal records it (reads the process's
//! uid and environment, so it lives outside the pure record encoding).

use crate::core::journal_record::Actor;

/// The user running a CLI command: the real uid's login name (from the
/// password database), since the environment is the caller's to set.
pub fn cli_actor() -> Actor {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {uid}"), |user| user.name);
    let claimed = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    Actor::cli_as(name, claimed)
}
