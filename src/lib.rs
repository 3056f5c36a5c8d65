//! Switchyard: a connection broker for remote access to network devices.
//!
//! The binary (`src/main.rs`) is a thin edge; everything lives here. See
//! `ARCHITECTURE.md` at the repository root for the code map.

pub mod api;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod error_chain;
pub mod fsutil;
pub mod label;
pub mod logging;
pub mod metrics;
pub mod password;
pub mod proxy;
pub mod pump;
pub mod relay;
pub mod relay_url;
pub mod secret;
pub mod service;
pub mod sim;
pub mod task;
pub mod tls;
pub mod transport_policy;
pub mod uds;
pub mod wire;
