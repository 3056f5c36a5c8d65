//! Returning freed memory to the system after a burst of device work.
//!
//! glibc's allocator keeps freed heap memory in its arenas (one per thread
//! that allocated), so a service that buffered a burst of device output or
//! opened many device connections would otherwise keep its peak size long
//! after the work ended. [`Trimmer`] counts the work done since the last
//! trim; when the service is idle again after at least [`BURST_BYTES`] of
//! it, it waits a moment and, if still idle, calls `malloc_trim(0)` on a
//! blocking thread; twice more later while it stays idle, since the last
//! results may still have been leaving through the transport's buffers
//! ([`SETTLE_ROUNDS`]).
//!
//! Owns: the one pending trim task (at most one at a time, aborted with the
//! trimmer). On other C libraries trimming is a no-op.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::task::AbortOnDrop;

/// Work since the last trim that makes a trim worth its cost, in bytes of
/// output (each device counts as [`DEVICE_WEIGHT`]).
pub const BURST_BYTES: u64 = 8 * 1024 * 1024;
/// What one device's work counts for (its connection, buffers, tasks).
pub const DEVICE_WEIGHT: u64 = 64 * 1024;
/// How long the service must stay idle before memory is trimmed, then
/// the waits before a second and a third trim while it stays idle.
pub const SETTLE_ROUNDS: [Duration; 3] = [
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

/// Decides when to trim; shared by everything that runs device work.
#[derive(Debug, Default)]
pub struct Trimmer {
    since_trim: Arc<AtomicU64>,
    pending: Mutex<Option<AbortOnDrop<()>>>,
}

impl Trimmer {
    /// Counts `bytes` of output towards the burst.
    pub fn record_output(&self, bytes: usize) {
        self.since_trim.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one device's work towards the burst.
    pub fn record_device(&self) {
        self.since_trim.fetch_add(DEVICE_WEIGHT, Ordering::Relaxed);
    }

    /// The service has no device work running. After a burst, schedules a
    /// trim that runs if `still_idle()` holds after each of [`SETTLE_ROUNDS`]. Outside a
    /// tokio runtime it does nothing.
    pub fn when_idle(&self, still_idle: impl Fn() -> bool + Send + 'static) {
        if self.since_trim.load(Ordering::Relaxed) < BURST_BYTES {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        // Work is counted again from the trim on; if the service is busy
        // again by then, the burst stays counted for its next idle moment.
        let since_trim = self.since_trim.clone();
        *pending = Some(AbortOnDrop::new(runtime.spawn(async move {
            // Results may still be leaving through the transport's buffers
            // at the first trim: trim again later while nothing runs.
            for (round, wait) in SETTLE_ROUNDS.iter().enumerate() {
                tokio::time::sleep(*wait).await;
                if !still_idle() {
                    return;
                }
                if round == 0 {
                    since_trim.store(0, Ordering::Relaxed);
                }
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        })));
    }
}

/// Returns the allocator's free memory to the system. Returns whether any
/// was released.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            /// glibc, `<malloc.h>`: releases free memory at the top of every
            /// arena and whole free pages inside them (glibc ≥ 2.8).
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it
        // locks each arena it trims).
        let released = unsafe { malloc_trim(0) };
        tracing::debug!(released, "returned free memory to the system");
        released != 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
