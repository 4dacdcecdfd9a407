//! Named task registry over `TaskTracker`, so a slow shutdown can say
//! which tasks did not stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    running: Arc<Mutex<BTreeMap<u64, String>>>,
    next: Arc<AtomicU64>,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn spawn<F>(&self, name: impl Into<String>, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, name.into());
        let running = Arc::clone(&self.running);
        self.tracker.spawn(async move {
            future.await;
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        });
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Names of the tasks still running.
    pub fn running(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    /// Stops accepting tasks and waits for the running ones.
    pub async fn close_and_wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_tasks_until_they_finish() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn("waiter", async move {
            let _ = rx.await;
        });
        tasks.spawn("quick", async {});
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(tasks.running(), ["waiter"]);
        tx.send(()).unwrap();
        tasks.close_and_wait().await;
        assert!(tasks.running().is_empty());
    }
}
