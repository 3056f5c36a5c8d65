//! `switchyard broker`: the per-host daemon.
//!
//! [`run`] binds the front-door socket, starts the actor system's registry,
//! serves gRPC (broker API, health, reflection) until `shutdown` fires,
//! then ends sessions, closes links and removes the socket.

pub mod caller_access;
pub mod client_key;
pub mod cloud_login;
pub mod dialer;
pub mod direct_client;
pub mod direct_link;
pub mod error;
pub mod forward;
pub mod front_door;
pub mod integrated;
pub mod known_services;
pub mod link;
pub mod link_actor;
pub mod login_registry;
pub mod login_store;
pub mod names;
pub mod peer;
pub mod registry;
pub mod relay_client;
pub mod routes;
pub mod session;
pub mod socket;
pub mod ssh_proxy;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use actix::Actor;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::FILE_DESCRIPTOR_SET;
use crate::api::pb::broker_server::BrokerServer;
use crate::daemon;
use crate::task::AbortOnDrop;
use crate::uds::ReadWokenUnixStream;
use front_door::FrontDoor;
use login_registry::LoginRegistry;
use registry::{RegistrySettings, SessionRegistry, Shutdown, Summary};

/// Everything the broker needs to start.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub socket: PathBuf,
    /// Group to give the socket (mode 0660), so its members may connect.
    pub socket_group: Option<u32>,
    pub registry: RegistrySettings,
    /// How long in-flight calls get to finish at shutdown.
    pub drain_timeout: Duration,
    /// Relays known by name.
    pub domains: Vec<crate::config::Domain>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerStartError {
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
    #[error("cannot set up gRPC reflection: {0}")]
    Reflection(String),
}

/// What a shutting-down broker tells whoever started it (the CLI says it
/// to the person who pressed Ctrl-C).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainNotice {
    /// Shutdown began with `calls` calls running (at least one); they get up
    /// to `timeout` to finish while new calls are refused.
    Waiting { calls: u32, timeout: Duration },
    /// `calls` calls were still running when `timeout` passed; they are
    /// cancelled now.
    Cancelling { calls: u32, timeout: Duration },
}

/// Runs the broker until `shutdown` is cancelled. Must be called from
/// within an actix system running on a tokio runtime. `on_ready` is called
/// once the socket accepts calls (and systemd is told `READY=1`);
/// `on_drain` when shutdown has calls to wait for, and again if some are
/// cancelled at the timeout.
///
/// Shutdown drains: new calls are refused with `UNAVAILABLE`, running ones
/// get up to `drain_timeout` to finish, then sessions are told and ended,
/// links closed, and the socket removed (unless systemd passed it in).
pub async fn run(
    config: BrokerConfig,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&std::path::Path),
    mut on_drain: impl FnMut(DrainNotice),
) -> Result<(), BrokerStartError> {
    let (listener, inherited) = match socket::inherited()? {
        Some(listener) => (listener, true),
        None => (socket::bind(&config.socket, config.socket_group)?, false),
    };
    let cancel = CancellationToken::new();
    let (registry, routes) = SessionRegistry::new(config.registry.clone(), cancel.clone());
    let registry = registry.start();
    let logins = LoginRegistry::new(
        config.domains.clone(),
        config.registry.share_group,
        config.registry.state_dir.as_deref(),
        config.registry.link.transport,
        config.registry.proxy.clone(),
    )
    .start();

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<BrokerServer<FrontDoor>>()
        .await;
    // Reflection lists every service the socket serves (the broker API,
    // grpc.health.v1.Health, both reflection versions) in both protocol
    // versions: grpcurl and IDE clients older than v1 ask v1alpha only.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| BrokerStartError::Reflection(e.to_string()))?;
    let reflection = reflection()
        .build_v1()
        .map_err(|e| BrokerStartError::Reflection(e.to_string()))?;

    let draining = CancellationToken::new();
    let in_flight = Arc::new(AtomicU32::new(0));
    let forwards = forward::Forwards::new(routes.clone(), cancel.child_token());
    let ssh_proxies = ssh_proxy::SshProxies::new(
        routes.clone(),
        cancel.child_token(),
        config.registry.state_dir.clone(),
    );
    let front_door = FrontDoor::new(
        registry.clone(),
        logins,
        routes,
        draining.clone(),
        in_flight.clone(),
        forwards.clone(),
        ssh_proxies.clone(),
    );
    let stop_serving = CancellationToken::new();
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(|accepted| {
        accepted
            .and_then(ReadWokenUnixStream::from_tokio)
            .inspect_err(|e| warn!(error = %e, "cannot accept a connection on the front door"))
    });
    let server = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(BrokerServer::new(front_door))
        .serve_with_incoming_shutdown(incoming, stop_serving.clone().cancelled_owned());
    let server = tokio::spawn(server);
    info!(socket = %config.socket.display(), inherited, "broker listening");
    daemon::ready("serving; 0 sessions, 0 links");
    let _watchdog = daemon::Watchdog::start_if_enabled();
    let _status = AbortOnDrop::new(tokio::spawn(report_status(registry.clone())));
    on_ready(&config.socket);

    shutdown.cancelled().await;
    info!("broker shutting down: draining");
    daemon::stopping();
    // New calls get UNAVAILABLE from the front door while running ones
    // finish; connections stay up so those answers reach their callers.
    draining.cancel();
    health_reporter
        .set_not_serving::<BrokerServer<FrontDoor>>()
        .await;
    let timeout = config.drain_timeout;
    let running = in_flight.load(Ordering::Relaxed);
    if running > 0 {
        info!(
            calls = running,
            timeout_secs = timeout.as_secs_f64(),
            "waiting for running calls"
        );
        on_drain(DrainNotice::Waiting {
            calls: running,
            timeout,
        });
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while in_flight.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished = in_flight.load(Ordering::Relaxed);
    if unfinished > 0 {
        warn!(
            unfinished,
            "drain timeout: cancelling the calls still running"
        );
        on_drain(DrainNotice::Cancelling {
            calls: unfinished,
            timeout,
        });
    }
    // Forwards end with the broker (their connections are reset).
    forwards.stop_all();
    ssh_proxies.stop_all();
    // Ending sessions ends their attach streams, so connections can close.
    let _ = registry
        .send(Shutdown {
            reason: "the broker is shutting down".into(),
        })
        .await;
    stop_serving.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => warn!(error = %e, "front door stopped with an error"),
        Ok(Err(e)) => warn!(error = %e, "front door task failed"),
        Err(_) => warn!("connections still open at exit"),
    }
    if !inherited {
        socket::remove(&config.socket);
    }
    Ok(())
}

/// Keeps `systemctl status` current: sessions and links, every few seconds.
async fn report_status(registry: actix::Addr<SessionRegistry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if let Ok((sessions, links)) = registry.send(Summary).await {
            daemon::status(&format!("serving; {sessions} sessions, {links} links"));
        }
    }
}
