//! Bounds on one exec request and on all device work a service runs at once.
//!
//! Owns: the service's device slots (a fair semaphore shared by every
//! request, and by every inventory an integrated broker opens, since clones
//! of one [`ExecLimits`] share it) and the memory trimmer that returns freed
//! memory to the system after a burst.
//!
//! Takes: an exec request's device and command lists ([`ExecLimits::check`]
//! merges duplicate device names and enforces the per-request caps), then
//! one [`ExecLimits::slot`] per device for the time its driver runs.
//!
//! On failure: a request over a cap is refused as a whole before any device
//! is touched, with an error naming the cap and its config setting
//! ([`LimitError`]). A device waiting for a slot just waits, in arrival
//! order; the caller's deadline bounds the wait like the rest of the call.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::memory::Trimmer;
use crate::wire::messages::ErrorCode;

/// The configured caps (config section `[exec]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecCaps {
    /// Distinct devices one request may name (duplicates are merged first).
    pub max_devices: usize,
    /// Commands one request may run on each device.
    pub max_commands: usize,
    /// Bytes of command text (all commands of a request together).
    pub max_command_bytes: usize,
    /// Devices the whole service works on at once, across requests; the
    /// rest wait for a slot in arrival order.
    pub max_concurrent_devices: usize,
}

impl Default for ExecCaps {
    fn default() -> Self {
        Self {
            max_devices: 4096,
            max_commands: 256,
            max_command_bytes: 64 * 1024,
            max_concurrent_devices: 256,
        }
    }
}

/// Why an exec request was refused before it ran.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("name at least one device")]
    NoDevices,
    #[error("name at least one command")]
    NoCommands,
    #[error(
        "the request has {count} {what}; this service allows at most {max} per request \
         (setting exec.{setting})"
    )]
    OverCap {
        /// What was counted ("distinct devices", "commands", "bytes of command text").
        what: &'static str,
        count: usize,
        max: usize,
        /// The config key under `[exec]` that sets the cap.
        setting: &'static str,
    },
}

impl LimitError {
    /// `INVALID_ARGUMENT` for an empty list, `RESOURCE_EXHAUSTED` for a cap.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoDevices | Self::NoCommands => ErrorCode::InvalidArgument,
            Self::OverCap { .. } => ErrorCode::ResourceExhausted,
        }
    }
}

/// Caps plus the shared device slots. Cloning shares the slots.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    caps: ExecCaps,
    slots: Arc<Slots>,
}

#[derive(Debug)]
struct Slots {
    semaphore: Arc<Semaphore>,
    trimmer: Arc<Trimmer>,
}

impl Default for ExecLimits {
    fn default() -> Self {
        Self::new(ExecCaps::default())
    }
}

impl ExecLimits {
    /// New limits with their own slots. `max_concurrent_devices` of 0 is
    /// taken as 1 (config refuses 0 before this).
    pub fn new(caps: ExecCaps) -> Self {
        let slots = caps.max_concurrent_devices.max(1);
        Self {
            caps,
            slots: Arc::new(Slots {
                semaphore: Arc::new(Semaphore::new(slots)),
                trimmer: Arc::new(Trimmer::default()),
            }),
        }
    }

    pub fn caps(&self) -> &ExecCaps {
        &self.caps
    }

    /// Checks a request against the caps and merges duplicate device names:
    /// returns each distinct device once, with the index of its first
    /// occurrence in `devices` (the index results are reported under).
    pub fn check<'a>(
        &self,
        devices: &'a [String],
        commands: &[String],
    ) -> Result<Vec<(u32, &'a str)>, LimitError> {
        if devices.is_empty() {
            return Err(LimitError::NoDevices);
        }
        if commands.is_empty() {
            return Err(LimitError::NoCommands);
        }
        over(
            "commands",
            commands.len(),
            self.caps.max_commands,
            "max_commands_per_request",
        )?;
        let bytes = commands.iter().map(String::len).sum();
        over(
            "bytes of command text",
            bytes,
            self.caps.max_command_bytes,
            "max_command_bytes_per_request",
        )?;
        let mut seen = HashSet::new();
        let distinct: Vec<(u32, &str)> = devices
            .iter()
            .enumerate()
            .filter(|(_, name)| seen.insert(name.as_str()))
            .map(|(index, name)| (index as u32, name.as_str()))
            .collect();
        over(
            "distinct devices",
            distinct.len(),
            self.caps.max_devices,
            "max_devices_per_request",
        )?;
        Ok(distinct)
    }

    /// Waits for one of the service's device slots (fair: in arrival order).
    pub async fn slot(&self) -> DeviceSlot {
        let permit = self
            .slots
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .expect("the device-slot semaphore is never closed");
        DeviceSlot {
            permit: Some(permit),
            slots: self.slots.clone(),
        }
    }

    /// Device work running now, across requests.
    pub fn busy_slots(&self) -> usize {
        self.caps.max_concurrent_devices.max(1) - self.slots.semaphore.available_permits()
    }

    /// Called when a request has handed over all its results: if no device
    /// work runs any more after a burst, freed memory is returned to the
    /// system shortly (see [`Trimmer`]).
    pub fn request_done(&self) {
        if self.busy_slots() == 0 {
            let semaphore = self.slots.semaphore.clone();
            let slots = self.caps.max_concurrent_devices.max(1);
            self.slots
                .trimmer
                .when_idle(move || semaphore.available_permits() == slots);
        }
    }
}

fn over(
    what: &'static str,
    count: usize,
    max: usize,
    setting: &'static str,
) -> Result<(), LimitError> {
    if count > max {
        return Err(LimitError::OverCap {
            what,
            count,
            max,
            setting,
        });
    }
    Ok(())
}

/// One running device's slot; freed on drop.
#[derive(Debug)]
pub struct DeviceSlot {
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Slots>,
}

impl DeviceSlot {
    /// Counts output this device produced towards the burst that decides
    /// when memory is trimmed.
    pub fn record_output(&self, bytes: usize) {
        self.slots.trimmer.record_output(bytes);
    }
}

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.slots.trimmer.record_device();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn duplicates_are_merged_under_their_first_index() {
        let limits = ExecLimits::default();
        let mut devices = vec!["a".to_string(); 10_000];
        devices.push("b".into());
        devices.push("a".into());
        let got = limits.check(&devices, &names(&["x"])).unwrap();
        assert_eq!(got, vec![(0, "a"), (10_000, "b")]);
    }

    #[test]
    fn each_cap_names_its_setting() {
        let limits = ExecLimits::new(ExecCaps {
            max_devices: 2,
            max_commands: 1,
            max_command_bytes: 4,
            max_concurrent_devices: 1,
        });
        let e = limits
            .check(&names(&["a", "b", "a", "c"]), &names(&["x"]))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::ResourceExhausted);
        assert!(
            e.to_string().contains("exec.max_devices_per_request"),
            "{e}"
        );
        let e = limits
            .check(&names(&["a"]), &names(&["x", "y"]))
            .unwrap_err();
        assert!(
            e.to_string().contains("exec.max_commands_per_request"),
            "{e}"
        );
        let e = limits
            .check(&names(&["a"]), &names(&["12345"]))
            .unwrap_err();
        assert!(e.to_string().contains("5 bytes of command text"), "{e}");
        assert!(
            e.to_string().contains("max_command_bytes_per_request"),
            "{e}"
        );
        assert_eq!(
            limits.check(&[], &names(&["x"])).unwrap_err().code(),
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            limits.check(&names(&["a"]), &[]).unwrap_err(),
            LimitError::NoCommands
        );
        assert!(
            limits
                .check(&names(&["a", "b", "a"]), &names(&["1234"]))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn slots_are_shared_by_clones_and_freed_on_drop() {
        let limits = ExecLimits::new(ExecCaps {
            max_concurrent_devices: 1,
            ..ExecCaps::default()
        });
        let other = limits.clone();
        let held = limits.slot().await;
        assert_eq!(other.busy_slots(), 1);
        let waiting = tokio::spawn(async move { other.slot().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a second device waits for the slot");
        drop(held);
        let second = waiting.await.unwrap();
        assert_eq!(limits.busy_slots(), 1);
        drop(second);
        assert_eq!(limits.busy_slots(), 0);
    }
}
