//! `switchyard known-services list|forget`: the service certificates the
//! broker learned on first use for this user (direct connections).
//!
//! The broker owns the pins (`broker::known_services`, in its state
//! directory, possibly root's), so these are calls to it: a user sees and
//! forgets only their own (or their sharing group's) entries.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::remote::broker_client;
use super::{CliError, outln};
use crate::api::pb;

#[derive(Debug, Subcommand)]
pub enum KnownServicesCommand {
    /// List the remembered certificates: HOST:PORT and fingerprint.
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Forget a remembered certificate (after checking that the service's
    /// certificate really changed, e.g. with `switchyard service info` on
    /// its host); the next connection trusts the one it meets. To pin the
    /// new one instead, pass `connect direct ... --fingerprint NEW`.
    Forget {
        /// The service as `list` shows it: HOST:PORT (HOST alone means
        /// port 8181).
        target: String,
    },
}

/// Runs a `known-services` command against the broker at `socket`.
pub async fn run(socket: &Path, cmd: KnownServicesCommand) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    match cmd {
        KnownServicesCommand::List { json } => {
            let known = broker
                .list_known_services(pb::ListKnownServicesRequest {})
                .await?
                .into_inner()
                .services;
            if json {
                let list: Vec<_> = known
                    .iter()
                    .map(|k| serde_json::json!({"target": k.target, "fingerprint": k.fingerprint}))
                    .collect();
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
            } else if known.is_empty() {
                outln!("no remembered service certificates");
            } else {
                for k in &known {
                    outln!("{}  {}", k.target, k.fingerprint);
                }
            }
        }
        KnownServicesCommand::Forget { target } => {
            let forgotten = broker
                .forget_known_service(pb::ForgetKnownServiceRequest { target })
                .await?
                .into_inner();
            outln!(
                "forgot {} ({}); the next connection trusts the certificate it meets",
                forgotten.target,
                forgotten.fingerprint
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
