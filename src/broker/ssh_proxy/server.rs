//! The SSH proxy's server: an actor task per proxy.
//!
//! Owns: the proxy's listener ([`LocalListener`], loopback TCP, the
//! owner's uid only) and every SSH connection accepted on it (a
//! `JoinSet`; each connection's handler owns its channel tasks in turn),
//! so stopping the proxy ends every session.
//!
//! Takes: connections on its listener and its cancellation token (`ssh-proxy
//! stop`, the broker shutting down).
//!
//! Each connection: its uid checked against the owner's (reset if not),
//! at most [`MAX_CONNECTIONS`] at once, then the SSH handshake and login
//! within [`LOGIN_TIMEOUT`] (russh's server side: keys from the proxy's
//! authorized keys or its password, [`MAX_AUTH_ATTEMPTS`] tries,
//! rejections taking a constant time), then at most [`MAX_CHANNELS`]
//! session channels, each served by `channel::serve`.
//!
//! On failure: a connection that does not log in is closed and counted in
//! `failed`; a session's link error goes to its client's stderr with exit
//! status 255 and is kept as `last_error`; the proxy goes on accepting.

use std::sync::Arc;
use std::time::Duration;

use russh::keys::PrivateKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Disconnect, MethodKind, MethodSet, cipher};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Shared, channel};
use crate::broker::forward::listener::{LocalListener, LocalStream, reset};

/// SSH connections one proxy carries at once, at most; more are reset.
pub const MAX_CONNECTIONS: usize = 64;

/// Session channels one connection may have open at once (OpenSSH's
/// `MaxSessions` default).
pub const MAX_CHANNELS: usize = 10;

/// From the TCP connection to a successful login, at most.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Authentication attempts per connection (OpenSSH's `MaxAuthTries`).
pub const MAX_AUTH_ATTEMPTS: usize = 6;

/// The russh server configuration for a proxy with `key` as its host key.
pub fn config(key: PrivateKey, shared: &Shared) -> russh::server::Config {
    let mut methods = MethodSet::empty();
    if shared.auth.key_count() > 0 {
        methods.push(MethodKind::PublicKey);
    }
    if shared.auth.has_password() {
        methods.push(MethodKind::Password);
    }
    russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-switchyard_ssh_proxy".into()),
        keys: vec![key],
        methods,
        // Rejections take this long whatever was wrong (timing tells
        // nothing); the first "none" probe is answered at once.
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        inactivity_timeout: Some(Duration::from_secs(3600)),
        keepalive_interval: Some(Duration::from_secs(30)),
        nodelay: true,
        preferred: russh::Preferred {
            cipher: std::borrow::Cow::Borrowed(ciphers(aes_hardware())),
            ..russh::Preferred::DEFAULT
        },
        ..Default::default()
    }
}

/// AES-GCM only, for a CPU with AES instructions.
const GCM_CIPHERS: &[cipher::Name] = &[cipher::AES_256_GCM, cipher::AES_128_GCM];

/// russh's own list (ChaCha20-Poly1305 first), for a CPU without them.
const PORTABLE_CIPHERS: &[cipher::Name] = &[
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

/// The ciphers the proxy offers. A client takes the first cipher of its
/// own list that the server offers (RFC 4253, 7.1), and OpenSSH lists
/// ChaCha20-Poly1305 and AES-CTR before AES-GCM; so where the CPU has AES
/// instructions (`aes_hardware`) the proxy offers AES-GCM only, which
/// costs the client and the broker a fraction of ChaCha20-Poly1305's CPU
/// per byte (both are AEADs; every OpenSSH since 6.2, PuTTY 0.76,
/// paramiko 3.3 and Go's x/crypto speak it). Elsewhere ChaCha20-Poly1305
/// (fast in software) comes first.
pub fn ciphers(aes_hardware: bool) -> &'static [cipher::Name] {
    if aes_hardware {
        GCM_CIPHERS
    } else {
        PORTABLE_CIPHERS
    }
}

/// Whether this CPU has AES and carry-less multiply instructions (what
/// AES-GCM needs to be fast and constant-time in `ring`).
pub fn aes_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Runs a proxy until it is cancelled; returns why it ended.
pub async fn run(
    listener: LocalListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) -> &'static str {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return "stopped",
            accepted = listener.accept() => match accepted {
                Ok((stream, Ok(()))) if connections.len() < MAX_CONNECTIONS => {
                    connections.spawn(connection(stream, config.clone(), shared.clone(), cancel.clone()));
                }
                Ok((stream, Ok(()))) => {
                    shared.stats.failed(format!("more than {MAX_CONNECTIONS} connections at once"));
                    reset(&stream);
                }
                Ok((stream, Err(why))) => {
                    warn!(listener = %listener.address(), %why, "SSH proxy connection refused");
                    shared.stats.failed(format!("a connection was refused: {why}"));
                    reset(&stream);
                }
                Err(e) => {
                    // Out of descriptors, most likely: let some close.
                    warn!(error = %e, "cannot accept on the SSH proxy");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One SSH connection, from handshake to its end.
async fn connection(
    stream: LocalStream,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _open = shared.stats.opened();
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let (authed, mut logged_in) = watch::channel(false);
    let handler = Connection {
        shared: shared.clone(),
        user: None,
        channels: JoinSet::new(),
        authed,
    };
    let running =
        match tokio::time::timeout_at(deadline, russh::server::run_stream(config, stream, handler))
            .await
        {
            Ok(Ok(running)) => running,
            Ok(Err(e)) => {
                shared.stats.failed(format!("SSH handshake failed: {e}"));
                return;
            }
            Err(_) => {
                shared
                    .stats
                    .failed("no SSH greeting within the login timeout".into());
                return;
            }
        };
    let handle = running.handle();
    tokio::pin!(running);
    let login = tokio::time::timeout_at(deadline, async move {
        logged_in.wait_for(|done| *done).await.is_ok()
    });
    let disconnect = |why: &'static str| async {
        let _ = handle
            .disconnect(Disconnect::ByApplication, why.into(), "en".into())
            .await;
    };
    tokio::select! {
        ended = &mut running => {
            // Ended before a login: a refused key or password, or the
            // client gave up.
            debug!(result = ?ended.err(), "SSH proxy connection ended before a login");
            shared.stats.failed("a client did not log in".into());
            return;
        }
        done = login => if done != Ok(true) {
            shared.stats.failed(format!("a client did not log in within {} s", LOGIN_TIMEOUT.as_secs()));
            disconnect("login timeout").await;
            return;
        },
        _ = cancel.cancelled() => {
            disconnect("the SSH proxy is stopping").await;
            return;
        }
    }
    tokio::select! {
        ended = &mut running => {
            if let Err(e) = ended {
                debug!(error = %e, "SSH proxy session ended with an error");
            }
        }
        _ = cancel.cancelled() => disconnect("the SSH proxy is stopping").await,
    }
}

/// One SSH connection's handler. Its channel tasks live in `channels` and
/// are aborted when the connection (and so this) is dropped.
struct Connection {
    shared: Arc<Shared>,
    /// The user name that logged in: the target (`DEVICE@SERVICE`).
    user: Option<String>,
    channels: JoinSet<()>,
    /// Set once the client has logged in (ends the login timeout).
    authed: watch::Sender<bool>,
}

impl Connection {
    fn accept(&mut self, user: &str) -> Auth {
        self.user = Some(user.to_string());
        Auth::Accept
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.shared.auth.key_allowed(offer.public_key) {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.shared.auth.key_allowed(key.public_key) {
            self.accept(user)
        } else {
            Auth::reject()
        })
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(if self.shared.auth.password_matches(password) {
            self.accept(user)
        } else {
            Auth::reject()
        })
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authed.send_replace(true);
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        while self.channels.try_join_next().is_some() {}
        let Some(user) = self.user.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        reply.accept().await;
        let handle = session.handle();
        self.channels
            .spawn(channel::serve(channel, handle, user, self.shared.clone()));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        while self.channels.try_join_next().is_some() {}
        let Some(user) = self.user.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        // Connected in its own task: the session keeps serving meanwhile.
        self.channels.spawn(channel::direct_tcpip(
            channel,
            reply,
            user,
            host_to_connect.to_string(),
            port_to_connect,
            self.shared.clone(),
        ));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_w: u32,
        _pix_h: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The device's environment is not the client's to set.
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        _channel: ChannelId,
        _name: &str,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Answered by the channel's task (`channel::serve`) once the
        // device has accepted or refused the subsystem.
        Ok(())
    }
}
