//! `switchyard service`: the remote side that sits next to the devices.
//!
//! It owns the inventory (devices, remote users, sealed credentials) and the
//! device drivers. **Invariant:** nothing here imports `crate::broker` or the
//! CLI; the service is a library the broker may also run in-process.

pub mod drivers;
pub mod enroll;
pub mod exec_limits;
pub mod forward;
pub mod identity;
pub mod inventory;
pub mod memory;
pub mod ops;
pub mod ratelimit;
pub mod relay_agent;
pub mod rpc;
pub mod seal;
pub mod subsystem;
pub mod transfer;
