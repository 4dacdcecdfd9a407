//! Sizes and durations as people read them, shared by the CLI's output and
//! the status page.

use std::time::Duration;

/// `512 B`, `1.5 KiB`, `5.0 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in its two largest units (`45s`, `3m 12s`, `2h 5m`,
/// `3d 4h`): precise enough to compare with a threshold at a glance, short
/// enough for a table cell on a phone.
pub fn compact_duration(d: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut secs = d.as_secs();
    let mut parts = Vec::with_capacity(2);
    for (size, name) in UNITS {
        if secs >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", secs / size));
            secs %= size;
        } else if !parts.is_empty() {
            // Units below a skipped one would read as the next one up.
            break;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn durations_in_two_units() {
        let s = Duration::from_secs;
        assert_eq!(compact_duration(s(0)), "0s");
        assert_eq!(compact_duration(s(45)), "45s");
        assert_eq!(compact_duration(s(192)), "3m 12s");
        assert_eq!(compact_duration(s(3_600)), "1h");
        assert_eq!(compact_duration(s(7_500)), "2h 5m");
        assert_eq!(compact_duration(s(3 * 86_400 + 4 * 3_600 + 59)), "3d 4h");
        assert_eq!(compact_duration(s(86_400 + 59)), "1d");
        assert_eq!(compact_duration(Duration::from_millis(1_900)), "1s");
    }
}
