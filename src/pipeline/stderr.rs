//! The last lines a child process wrote to stderr, for its error message
//! (pg_dump, pg_restore): kept in memory, bounded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

/// Lines kept.
const KEPT: usize = 20;

/// The tail of one child's stderr, filled by a background task.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    /// Takes `child`'s stderr (if piped) and keeps its last lines.
    pub fn of(child: &mut Child) -> Tail {
        let tail = Tail::default();
        if let Some(stderr) = child.stderr.take() {
            let lines = Arc::clone(&tail.0);
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() == KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            });
        }
        tail
    }

    /// The lines so far, joined with ` | `.
    pub fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter().cloned().collect::<Vec<_>>().join(" | ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_last_twenty_lines_joined() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "for i in $(seq 1 25); do echo line$i >&2; done"])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let tail = Tail::of(&mut child);
        child.wait().await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !tail.text().ends_with("line25") && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let expected: Vec<String> = (6..=25).map(|i| format!("line{i}")).collect();
        assert_eq!(tail.text(), expected.join(" | "));
    }
}
