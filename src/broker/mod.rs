//! `switchyard broker`: the per-host daemon.
//!
//! [`run`] binds the front-door socket, starts the actor system's registry,
//! serves gRPC (broker API, health, reflection) until `shutdown` fires,
//! then ends sessions, closes links and removes the socket.

pub mod backoff;
pub mod direct_client;
pub mod direct_link;
pub mod error;
pub mod front_door;
pub mod integrated;
pub mod known_services;
pub mod link;
pub mod link_actor;
pub mod peer;
pub mod registry;
pub mod routes;
pub mod session;
pub mod socket;

use std::path::PathBuf;
use std::time::Duration;

use actix::Actor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::FILE_DESCRIPTOR_SET;
use crate::api::pb::broker_server::BrokerServer;
use front_door::FrontDoor;
use registry::{RegistrySettings, SessionRegistry, Shutdown};

/// Everything the broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub socket: PathBuf,
    /// Group to give the socket (mode 0660), so its members may connect.
    pub socket_group: Option<u32>,
    pub registry: RegistrySettings,
    /// How long in-flight calls get to finish at shutdown.
    pub drain_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
}

/// Runs the broker until `shutdown` is cancelled. Must be called from
/// within an actix system running on a tokio runtime. `on_ready` is called
/// once the socket accepts calls.
pub async fn run(
    config: BrokerConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&std::path::Path),
) -> Result<(), BrokerStartError> {
    let listener = socket::bind(&config.socket, config.socket_group)?;
    let cancel = CancellationToken::new();
    let (registry, routes) = SessionRegistry::new(config.registry.clone(), cancel.clone());
    let registry = registry.start();

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<BrokerServer<FrontDoor>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| BrokerStartError::Reflection(e.to_string()))?;

    let stop_serving = CancellationToken::new();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(BrokerServer::new(FrontDoor::new(registry.clone(), routes)))
        .serve_with_incoming_shutdown(incoming, stop_serving.clone().cancelled_owned());
    let server = tokio::spawn(server);
    info!(socket = %config.socket.display(), "broker listening");
    on_ready(&config.socket);

    shutdown.cancelled().await;
    info!("broker shutting down");
    health_reporter
        .set_not_serving::<BrokerServer<FrontDoor>>()
        .await;
    // End sessions first: their attach streams finish, so the HTTP/2
    // connections can drain.
    let _ = registry
        .send(Shutdown {
            reason: "the broker is shutting down".into(),
        })
        .await;
    stop_serving.cancel();
    match tokio::time::timeout(config.drain_timeout, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "front door stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "front door task failed"),
        Err(_) => warn!("drain timeout: closing remaining calls"),
    }
    socket::remove(&config.socket);
    Ok(())
}
