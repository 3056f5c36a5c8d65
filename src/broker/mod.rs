//! `switchyard broker`: the per-host daemon.

pub mod direct_client;
pub mod link;
