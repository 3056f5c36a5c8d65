//! Task ownership helpers: every spawned task has an owner that stops it.

use tokio::task::JoinHandle;

/// Aborts the wrapped task when dropped, so a background task never
/// outlives the value that owns it.
#[derive(Debug)]
pub struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    pub fn new(handle: JoinHandle<T>) -> Self {
        Self(handle)
    }

    /// Whether the task has ended (finished, panicked or aborted).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits for the task to end on its own (after its owner told it to
    /// stop), so what it holds (sockets) is released before this returns.
    pub async fn finished(&mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
