//! `CloudLogin` actor: one login to one relay, as one identity, by one
//! method, for one local owner.
//!
//! Owns: the credential (SSO access + refresh tokens, an access token, or a
//! client certificate and key — wiped on drop), the QUIC connection to the
//! relay made with it, the SSO device grant while one runs, the refresh
//! timer, and the login's stored copy.
//!
//! Takes: `BeginSso` (start — or join — the device grant; everyone who asks
//! while it runs sees the same prompt and result; when all of them have
//! gone, the grant is abandoned and a login with no credential stops), `UseCredential` (a
//! certificate or token login: checked by connecting), `GetRelay` (the
//! relay connection, connecting first if needed — concurrent callers share
//! one handshake), `LoginStatus`, `Logout`.
//!
//! On failure: a lost relay connection is re-made on the next use; SSO
//! access tokens are refreshed a minute before expiry, retried with
//! jittered back-off (1 s to 60 s, so a relay outage never turns into a
//! storm); a refresh the relay refuses ends the login (`Failed`, "log in
//! again"). A refused credential is reported to the caller and not kept.

use std::time::Duration;

use actix::prelude::*;
use tokio::sync::{oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};
use zeroize::Zeroizing;

use super::login_store::{LoginStore, StoredLogin};
use super::peer::Owner;
use super::relay_client::{CloudError, RelayConnection, RelayInfo, Tokens};
use crate::backoff::Backoff;
use crate::relay::unix_now;
use crate::secret::Secret;
use crate::wire::conn::TransportLimits;
use crate::wire::relay::{RelayHello, RelayReply, RelayRequest};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginMethod {
    Sso,
    Certificate,
    Token,
}

impl LoginMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sso => "sso",
            Self::Certificate => "certificate",
            Self::Token => "token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "sso" => Some(Self::Sso),
            "certificate" => Some(Self::Certificate),
            "token" => Some(Self::Token),
            _ => None,
        }
    }
}

/// What identifies a login for sharing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginKey {
    pub relay: String,
    pub identity: String,
    pub method: LoginMethod,
    pub owner: Owner,
}

/// The secret a login holds.
#[derive(Clone)]
pub enum Credential {
    Sso(Tokens),
    Token {
        token: Secret,
    },
    Certificate {
        cert_der: Vec<u8>,
        key_der: Zeroizing<Vec<u8>>,
    },
}

/// What a person must do to finish an SSO login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoPrompt {
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    pub expires_in: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginPhase {
    Idle,
    Prompt(SsoPrompt),
    LoggedIn {
        identity: String,
        expires: Option<u64>,
    },
    Failed(String),
}

/// What the broker last saw of a logged-in login's relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Not tried since the broker started: a login restored from its
    /// stored copy, unused since.
    Unverified,
    /// The last attempt (connect, login, refresh) reached the relay and it
    /// accepted the credential.
    Reachable,
    /// The last attempt failed, or the connection was lost; the error.
    Failing(String),
}

impl Reach {
    /// `"unverified"`, `"reachable"` or `"failing"` (status, the API).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Unverified => "unverified",
            Self::Reachable => "reachable",
            Self::Failing(_) => "failing",
        }
    }
}

/// A login as `status` shows it.
#[derive(Debug, Clone)]
pub struct LoginSummary {
    pub key: LoginKey,
    pub state: &'static str,
    pub expires: Option<u64>,
    pub connected: bool,
    /// The relay as last seen (meaningful while logged in).
    pub reach: Reach,
    /// How the open relay connection travels: `quic`, `tcp`, `tcp via
    /// proxy HOST:PORT` (empty without one).
    pub carrier: String,
}

pub struct CloudLogin {
    key: LoginKey,
    relay: RelayInfo,
    limits: TransportLimits,
    credential: Option<Credential>,
    phase: watch::Sender<LoginPhase>,
    conn: Option<RelayConnection>,
    connecting: bool,
    conn_waiters: Vec<oneshot::Sender<Result<RelayConnection, CloudError>>>,
    sso_running: bool,
    store: Option<std::sync::Arc<LoginStore>>,
    refresh_timer: Option<SpawnHandle>,
    refresh_backoff: Backoff,
    reach: Reach,
}

impl CloudLogin {
    pub fn new(
        key: LoginKey,
        relay: RelayInfo,
        credential: Option<Credential>,
        store: Option<std::sync::Arc<LoginStore>>,
    ) -> Self {
        let phase = match &credential {
            Some(c) => LoginPhase::LoggedIn {
                identity: key.identity.clone(),
                expires: expiry(c),
            },
            None => LoginPhase::Idle,
        };
        Self {
            key,
            relay,
            limits: TransportLimits::default(),
            credential,
            phase: watch::channel(phase).0,
            conn: None,
            connecting: false,
            conn_waiters: Vec::new(),
            sso_running: false,
            store,
            refresh_timer: None,
            refresh_backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            reach: Reach::Unverified,
        }
    }

    fn stored(&self) -> Option<StoredLogin> {
        let credential = self.credential.as_ref()?;
        let owner = match self.key.owner {
            Owner::User(uid) => format!("user:{uid}"),
            Owner::Group(gid) => format!("group:{gid}"),
        };
        let mut stored = StoredLogin::default();
        stored.relay_url = self.relay.url.clone();
        stored.ca_pem = self.relay.ca_pem.clone();
        stored.identity = self.key.identity.clone();
        stored.method = self.key.method.as_str().into();
        stored.owner = owner;
        match credential {
            Credential::Sso(t) => {
                stored.access_token = Some(t.access.expose().to_string());
                stored.access_expires = Some(t.expires);
                stored.refresh_token = t.refresh.as_ref().map(|r| r.expose().to_string());
            }
            Credential::Token { token } => stored.access_token = Some(token.expose().to_string()),
            Credential::Certificate { cert_der, key_der } => {
                stored.cert_der = Some(cert_der.clone());
                stored.key_der = Some(key_der.to_vec());
            }
        }
        Some(stored)
    }

    fn persist(&self) {
        if let (Some(store), Some(stored)) = (&self.store, self.stored())
            && let Err(e) = store.save(&stored)
        {
            warn!(error = %e, "cannot store the login; it will not survive a restart");
        }
    }

    fn logged_in(&mut self, credential: Credential, ctx: &mut Context<Self>) {
        let expires = expiry(&credential);
        self.credential = Some(credential);
        self.reach = Reach::Reachable;
        self.persist();
        self.phase.send_replace(LoginPhase::LoggedIn {
            identity: self.key.identity.clone(),
            expires,
        });
        self.schedule_refresh(ctx);
    }

    fn schedule_refresh(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.refresh_timer.take() {
            ctx.cancel_future(t);
        }
        let Some(Credential::Sso(tokens)) = &self.credential else {
            return;
        };
        let now = unix_now();
        let life = tokens.expires.saturating_sub(now);
        // A minute early, or at 80 % of a short life (at least a second
        // early, so the relay never sees an expired token).
        let lead = (life / 5).clamp(1, 60);
        let delay = Duration::from_secs(life.saturating_sub(lead).max(1));
        self.refresh_timer = Some(ctx.run_later(delay, |act, ctx| {
            act.refresh_timer = None;
            act.refresh(ctx);
        }));
    }

    fn refresh(&mut self, ctx: &mut Context<Self>) {
        let Some(Credential::Sso(tokens)) = self.credential.clone() else {
            return;
        };
        let Some(refresh) = tokens.refresh.clone() else {
            return;
        };
        let relay = self.relay.clone();
        let span =
            info_span!("login_refresh", identity = %self.key.identity, relay = %self.relay.url);
        ctx.spawn(
            async move { relay.refresh(&refresh).await }
                .instrument(span)
                .into_actor(self)
                .map(|result, act, ctx| match result {
                    Ok(tokens) => {
                        info!(identity = %act.key.identity, "access token refreshed");
                        act.refresh_backoff.reset();
                        let access = tokens.access.clone();
                        act.logged_in(Credential::Sso(tokens), ctx);
                        act.reauth(access, ctx);
                    }
                    Err(CloudError::Sso(reason)) => {
                        warn!(identity = %act.key.identity, %reason, "refresh refused; the login ended");
                        act.end(format!("the relay refused to refresh the login ({reason}); log in again"));
                    }
                    Err(e) => {
                        act.reach = Reach::Failing(format!("cannot refresh the access token: {e}"));
                        let delay = act.refresh_backoff.next_delay(rand::random::<f64>());
                        warn!(identity = %act.key.identity, error = %e, ?delay, "refresh failed; retrying");
                        act.refresh_timer = Some(ctx.run_later(delay, |act, ctx| {
                            act.refresh_timer = None;
                            act.refresh(ctx);
                        }));
                    }
                }),
        );
    }

    /// Tells the live relay connection about a refreshed token.
    fn reauth(&mut self, access: Secret, ctx: &mut Context<Self>) {
        let Some(conn) = self.conn.clone() else {
            return;
        };
        let limits = self.limits.clone();
        ctx.spawn(
            async move {
                let request = RelayRequest::Reauth {
                    token: access.expose().to_string(),
                };
                super::relay_client::call(&conn.conn, &request, &limits).await
            }
            .into_actor(self)
            .map(|result, act, _| {
                if !matches!(result, Ok(RelayReply::Ok)) {
                    // The next use connects afresh with the new token.
                    if let Some(conn) = act.conn.take() {
                        conn.conn.close(0, b"re-authenticating");
                    }
                }
            }),
        );
    }

    fn end(&mut self, reason: String) {
        self.credential = None;
        if let (Some(store), Some(stored)) = (&self.store, self.stored()) {
            let _ = store.remove(&stored);
        }
        if let Some(conn) = self.conn.take() {
            conn.conn.close(0, b"logged out");
        }
        self.phase.send_replace(LoginPhase::Failed(reason));
    }

    fn start_sso(&mut self, ctx: &mut Context<Self>) {
        if self.sso_running {
            return;
        }
        self.sso_running = true;
        self.phase.send_replace(LoginPhase::Idle);
        let relay = self.relay.clone();
        let identity = self.key.identity.clone();
        let phase = self.phase.clone();
        let span = info_span!("sso_login", %identity, relay = %relay.url);
        let flow = async move {
            let details = relay.start_device_flow(&identity).await?;
            phase.send_replace(LoginPhase::Prompt(SsoPrompt {
                verification_uri: details.verification_uri().to_string(),
                verification_uri_complete: details
                    .verification_uri_complete()
                    .map(|u| u.secret().to_string()),
                user_code: details.user_code().secret().to_string(),
                expires_in: details.expires_in(),
            }));
            // Everyone who asked watches the phase; when the last of them
            // has gone (Ctrl-C, a closed client), nobody is left to approve
            // for, so the grant is abandoned instead of polled to expiry.
            tokio::select! {
                result = relay.finish_device_flow(&details) => result.map(Some),
                () = phase.closed() => Ok(None),
            }
        };
        ctx.spawn(flow.instrument(span).into_actor(self).map(|result, act, ctx| {
            act.sso_running = false;
            match result {
                Ok(None) => {
                    info!(identity = %act.key.identity, relay = %act.relay.url, "SSO login abandoned: every caller left");
                    act.phase.send_replace(LoginPhase::Idle);
                    if act.credential.is_none() {
                        // Nothing left to keep: the registry starts afresh
                        // on the next login, and `status` lists none.
                        ctx.stop();
                    }
                }
                Ok(Some(tokens)) => {
                    info!(identity = %act.key.identity, relay = %act.relay.url, "SSO login complete");
                    if let Some(conn) = act.conn.take() {
                        conn.conn.close(0, b"new login");
                    }
                    act.logged_in(Credential::Sso(tokens), ctx);
                }
                Err(e) => {
                    warn!(identity = %act.key.identity, error = %e, "SSO login failed");
                    act.phase.send_replace(LoginPhase::Failed(e.to_string()));
                }
            }
        }));
    }

    fn start_connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting {
            return;
        }
        let Some(credential) = self.credential.clone() else {
            return self.answer_conn_waiters(Err(CloudError::NotLoggedIn {
                relay: self.relay.url.clone(),
                identity: self.key.identity.clone(),
            }));
        };
        // An SSO access token that already expired (a long relay outage):
        // refresh first; the refresh reconnects.
        if let Some(Credential::Sso(t)) = &self.credential
            && t.expires <= unix_now()
        {
            self.refresh(ctx);
            return self.answer_conn_waiters(Err(CloudError::Unreachable {
                relay: self.relay.url.clone(),
                reason: "refreshing an expired access token; try again".into(),
            }));
        }
        self.connecting = true;
        let relay = self.relay.clone();
        let limits = self.limits.clone();
        let span = info_span!("relay_connect", identity = %self.key.identity, relay = %relay.url);
        let attempt = async move { connect(&relay, &credential, &limits).await };
        ctx.spawn(attempt.instrument(span).into_actor(self).map(|result, act, ctx| {
            act.connecting = false;
            act.reach = match &result {
                Ok(_) => Reach::Reachable,
                Err(e) => Reach::Failing(e.to_string()),
            };
            if let Ok(conn) = &result {
                act.conn = Some(conn.clone());
                act.probe_quic(conn, ctx);
                act.watch_loss(conn, ctx);
            }
            if let Err(CloudError::Refused(e)) = &result {
                warn!(identity = %act.key.identity, error = %e, "the relay refused the login");
            }
            act.answer_conn_waiters(result);
        }));
    }

    /// Forgets `conn` when it is lost unplanned (a connection this login
    /// closed or replaced itself was taken out of `conn` first).
    fn watch_loss(&mut self, conn: &RelayConnection, ctx: &mut Context<Self>) {
        let watch = conn.conn.clone();
        let id = watch.clone();
        ctx.spawn(async move { watch.closed().await }.into_actor(self).map(
            move |reason, act, _| {
                if act.conn.as_ref().is_some_and(|c| c.conn.same(&id)) {
                    act.conn = None;
                    act.reach = Reach::Failing(format!("lost the relay connection: {reason}"));
                }
            },
        ));
    }

    /// On TCP after a fallback (`auto`, no proxy): tries QUIC every
    /// `quic_probe`; a QUIC connection that says hello replaces `tcp` as
    /// this login's connection (new tunnels and requests use it; tunnels
    /// running on TCP keep that connection until they end). Stops when
    /// `tcp` is no longer the login's connection.
    fn probe_quic(&mut self, tcp: &RelayConnection, ctx: &mut Context<Self>) {
        let policy = self.relay.transport;
        if tcp.conn.carrier() != crate::wire::mux::Carrier::Tcp
            || policy.mode != super::dialer::TransportMode::Auto
            || self.relay.proxy.is_some()
        {
            return;
        }
        let mut relay = self.relay.clone();
        relay.transport.mode = super::dialer::TransportMode::Quic;
        let limits = self.limits.clone();
        let tcp = tcp.conn.clone();
        ctx.run_later(policy.quic_probe, move |act, ctx| {
            if !act.conn.as_ref().is_some_and(|c| c.conn.same(&tcp)) {
                return;
            }
            let Some(credential) = act.credential.clone() else {
                return;
            };
            let attempt = async move { connect(&relay, &credential, &limits).await };
            ctx.spawn(attempt.into_actor(act).map(move |result, act, ctx| {
                let Some(current) = act.conn.clone().filter(|c| c.conn.same(&tcp)) else {
                    return;
                };
                match result {
                    Ok(quic) => {
                        info!(identity = %act.key.identity, "QUIC to the relay works again; new requests move off TCP");
                        act.conn = Some(quic.clone());
                        act.watch_loss(&quic, ctx);
                    }
                    Err(e) => {
                        debug!(error = %e, "QUIC to the relay still unreachable; staying on TCP");
                        act.probe_quic(&current, ctx);
                    }
                }
            }));
        });
    }

    fn answer_conn_waiters(&mut self, result: Result<RelayConnection, CloudError>) {
        for waiter in self.conn_waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }
}

/// Connects to the relay and says hello with `credential` (a bearer token,
/// or the client certificate presented in the TLS handshake).
pub async fn connect(
    relay: &RelayInfo,
    credential: &Credential,
    limits: &TransportLimits,
) -> Result<RelayConnection, CloudError> {
    let token = |t: &Secret| RelayHello::Client {
        token: Some(t.expose().to_string()),
    };
    match credential {
        Credential::Sso(t) => relay.connect(token(&t.access), None, limits).await,
        Credential::Token { token: t } => relay.connect(token(t), None, limits).await,
        Credential::Certificate { cert_der, key_der } => {
            let cert = Some((cert_der.clone(), key_der.as_slice()));
            relay
                .connect(RelayHello::Client { token: None }, cert, limits)
                .await
        }
    }
}

fn expiry(credential: &Credential) -> Option<u64> {
    match credential {
        Credential::Sso(t) => Some(t.expires),
        _ => None,
    }
}

impl Actor for CloudLogin {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(256);
        self.schedule_refresh(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(conn) = self.conn.take() {
            conn.conn.close(0, b"login closed");
        }
        self.answer_conn_waiters(Err(CloudError::NotLoggedIn {
            relay: self.relay.url.clone(),
            identity: self.key.identity.clone(),
        }));
    }
}

/// Start (or join) the SSO device grant; returns where to watch it.
/// Already logged in: the phase says so at once.
#[derive(Message)]
#[rtype(result = "watch::Receiver<LoginPhase>")]
pub struct BeginSso;

impl Handler<BeginSso> for CloudLogin {
    type Result = MessageResult<BeginSso>;

    fn handle(&mut self, _: BeginSso, ctx: &mut Self::Context) -> Self::Result {
        if self.credential.is_none() {
            self.start_sso(ctx);
        }
        MessageResult(self.phase.subscribe())
    }
}

/// Log in with a certificate or token: kept only if the relay accepts it.
/// The second field is the relay as this login reaches it now (a repeated
/// login may name another proxy: it wins once it works); the third a
/// connection already opened with this credential (the one that asked the
/// relay whose token it is), used instead of dialling again.
#[derive(Message)]
#[rtype(result = "Result<LoginSummary, CloudError>")]
pub struct UseCredential(pub Credential, pub RelayInfo, pub Option<RelayConnection>);

impl Handler<UseCredential> for CloudLogin {
    type Result = ResponseActFuture<Self, Result<LoginSummary, CloudError>>;

    fn handle(&mut self, msg: UseCredential, _: &mut Self::Context) -> Self::Result {
        let relay = msg.1.clone();
        let limits = self.limits.clone();
        let credential = msg.0.clone();
        let opened = msg.2;
        let attempt = async move {
            match opened {
                Some(conn) => Ok(conn),
                None => connect(&relay, &credential, &limits).await,
            }
        };
        Box::pin(attempt.into_actor(self).map(move |result, act, ctx| {
            let conn = result?;
            if conn.identity != act.key.identity {
                conn.conn.close(0, b"wrong identity");
                return Err(CloudError::Refused(crate::wire::messages::WireError::new(
                    crate::wire::messages::ErrorCode::PermissionDenied,
                    format!(
                        "this credential belongs to {}, not {}",
                        conn.identity, act.key.identity
                    ),
                )));
            }
            if let Some(old) = act.conn.replace(conn.clone()) {
                old.conn.close(0, b"new login");
            }
            act.relay = msg.1;
            act.probe_quic(&conn, ctx);
            act.logged_in(msg.0, ctx);
            info!(identity = %act.key.identity, method = act.key.method.as_str(), "logged in");
            Ok(act.summary(conn.expires))
        }))
    }
}

impl CloudLogin {
    fn summary(&self, expires: Option<u64>) -> LoginSummary {
        let state = match &*self.phase.borrow() {
            LoginPhase::Idle => "idle",
            LoginPhase::Prompt(_) => "waiting for approval",
            LoginPhase::LoggedIn { .. } => "logged in",
            LoginPhase::Failed(_) => "failed",
        };
        LoginSummary {
            key: self.key.clone(),
            state,
            expires: expires
                .or_else(|| self.credential.as_ref().and_then(expiry))
                .or_else(|| self.conn.as_ref().and_then(|c| c.expires)),
            connected: self.conn.as_ref().is_some_and(|c| !c.conn.is_closed()),
            reach: self.reach.clone(),
            carrier: self
                .conn
                .as_ref()
                .filter(|c| !c.conn.is_closed())
                .map(|c| c.carrier.clone())
                .unwrap_or_default(),
        }
    }
}

/// The relay connection of this login.
#[derive(Message)]
#[rtype(result = "Result<RelayConnection, CloudError>")]
pub struct GetRelay;

impl Handler<GetRelay> for CloudLogin {
    type Result = ResponseFuture<Result<RelayConnection, CloudError>>;

    fn handle(&mut self, _: GetRelay, ctx: &mut Self::Context) -> Self::Result {
        if let Some(conn) = self.conn.as_ref().filter(|c| !c.conn.is_closed()) {
            return Box::pin(std::future::ready(Ok(conn.clone())));
        }
        let (tx, rx) = oneshot::channel();
        self.conn_waiters.push(tx);
        self.start_connect(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(CloudError::Protocol("the login was closed".into())))
        })
    }
}

#[derive(Message)]
#[rtype(result = "LoginSummary")]
pub struct LoginStatus;

impl Handler<LoginStatus> for CloudLogin {
    type Result = MessageResult<LoginStatus>;

    fn handle(&mut self, _: LoginStatus, _: &mut Self::Context) -> Self::Result {
        MessageResult(self.summary(None))
    }
}

/// Forget the login (and its stored copy) and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Logout;

impl Handler<Logout> for CloudLogin {
    type Result = ();

    fn handle(&mut self, _: Logout, ctx: &mut Self::Context) {
        self.end("logged out".into());
        ctx.stop();
    }
}
