//! Samples this process's CPU, memory and file descriptors from
//! /proc/self only (systemd's `ProcSubset=pid` hides the rest of /proc).

use crate::state::ProcessStats;

/// Best effort: fields that cannot be read stay zero.
pub fn sample() -> ProcessStats {
    let mut stats = ProcessStats::default();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name, which may contain spaces.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // Indices are field numbers minus 3 (pid and comm come before).
            stats.cpu_seconds = (num(11) + num(12)) / ticks;
            stats.threads = num(17) as u64;
            stats.virtual_bytes = num(20) as u64;
            stats.resident_bytes = num(21) as u64 * page;
        }
    }
    stats.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    stats.max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    stats
}

#[cfg(test)]
mod tests {
    #[test]
    fn samples_this_process() {
        let s = super::sample();
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.open_fds > 0 && s.max_fds >= s.open_fds);
    }
}
