//! `LoginRegistry` actor: which cloud logins exist and who may use them.
//!
//! Owns: the map from (relay, identity, method, owner) to `CloudLogin`
//! actors, the login each session used last, the login store (restoring
//! stored logins at start), and the named relays (domains).
//!
//! Takes: `StartSso`, `CredentialLogin`, `FindLogin`, `LogoutLogins`,
//! `ListLogins`, `ForgetSession`.
//!
//! On failure: a login another owner made is never found (the owner is
//! part of the key); an unknown domain, or no relay named and no default,
//! is an `INVALID_ARGUMENT` that says what to name. **Invariant:** a login
//! is shared only within its owner — the uid from `SO_PEERCRED`, or the
//! configured sharing group.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::watch;
use tracing::{info, warn};

use super::cloud_login::{
    BeginSso, CloudLogin, Credential, LoginKey, LoginMethod, LoginPhase, LoginStatus, LoginSummary,
    Logout, UseCredential,
};
use super::dialer::TransportPolicy;
use super::error::BrokerError;
use super::login_store::{LoginStore, StoredLogin};
use super::peer::{Owner, Peer, owner_for};
use super::relay_client::{CloudError, RelayInfo, Tokens};
use crate::config::Domain;
use crate::proxy::ProxyRule;
use crate::secret::Secret;

/// Which relay a request means.
#[derive(Debug, Clone, Default)]
pub struct RelaySpec {
    pub relay_url: Option<String>,
    pub domain: Option<String>,
    /// The HTTP proxy this login reaches the relay through (`--proxy`),
    /// instead of the broker's rule.
    pub proxy: Option<crate::proxy::Proxy>,
}

impl From<CloudError> for BrokerError {
    fn from(e: CloudError) -> Self {
        use crate::wire::messages::ErrorCode;
        let message = e.to_string();
        match e.code() {
            ErrorCode::Unavailable => Self::Unavailable(message),
            ErrorCode::InvalidArgument => Self::InvalidArgument(message),
            ErrorCode::PermissionDenied => Self::PermissionDenied(message),
            ErrorCode::NotFound => Self::NotFound(message),
            ErrorCode::Unauthenticated => Self::Unauthenticated(message),
            _ => Self::Internal(message),
        }
    }
}

pub struct LoginRegistry {
    domains: Vec<Domain>,
    share_group: Option<u32>,
    store: Option<Arc<LoginStore>>,
    logins: HashMap<LoginKey, Addr<CloudLogin>>,
    /// When each login was last made or renewed (a counter): with several
    /// matching and no session preference, the latest wins.
    recency: HashMap<LoginKey, u64>,
    clock: u64,
    session_logins: HashMap<String, LoginKey>,
    /// How relay connections travel (`[broker] transport`).
    transport: TransportPolicy,
    /// Which HTTP proxy reaches which relay (`[proxy]`, `HTTPS_PROXY`).
    proxy: ProxyRule,
}

impl LoginRegistry {
    pub fn new(
        domains: Vec<Domain>,
        share_group: Option<u32>,
        state_dir: Option<&std::path::Path>,
        transport: TransportPolicy,
        proxy: ProxyRule,
    ) -> Self {
        let store = state_dir.and_then(|dir| match LoginStore::open(dir) {
            Ok(store) => Some(Arc::new(store)),
            Err(e) => {
                warn!(error = %e, "cannot open the login store; logins will not survive a restart");
                None
            }
        });
        Self {
            domains,
            share_group,
            store,
            logins: HashMap::new(),
            recency: HashMap::new(),
            clock: 0,
            session_logins: HashMap::new(),
            transport,
            proxy,
        }
    }

    /// `relay` reached as this broker's transport policy says, through
    /// `proxy` when given, else the proxy the broker's rule names for it.
    fn reached(
        &self,
        relay: RelayInfo,
        proxy: Option<crate::proxy::Proxy>,
    ) -> Result<RelayInfo, CloudError> {
        let proxy = proxy.or_else(|| self.proxy.for_host(&relay.host).cloned());
        relay.with_transport(self.transport, proxy)
    }

    /// The relay `spec` means: its URL (without a trailing slash), and the
    /// configured domain it is, if any.
    fn choose(&self, spec: &RelaySpec) -> Result<(String, Option<&Domain>), BrokerError> {
        let (url, domain) = match (&spec.relay_url, &spec.domain) {
            (Some(url), _) => {
                // Refuses credentials in the URL before it is kept anywhere.
                let url = crate::relay_url::check_list(url)
                    .map_err(|e| BrokerError::InvalidArgument(e.to_string()))?;
                let trimmed = url.as_str();
                let known = self
                    .domains
                    .iter()
                    .find(|d| d.url.trim_end_matches('/') == trimmed);
                (url, known)
            }
            (None, Some(name)) => {
                let domain = self
                    .domains
                    .iter()
                    .find(|d| &d.name == name)
                    .ok_or_else(|| {
                        BrokerError::InvalidArgument(format!(
                            "no domain {name:?} in the broker's config (domains.{name}.url)"
                        ))
                    })?;
                (domain.url.clone(), Some(domain))
            }
            (None, None) => {
                let domain = self.domains.iter().find(|d| d.default).ok_or_else(|| {
                    BrokerError::InvalidArgument(
                        "name a relay URL or a domain (no default domain is configured)".into(),
                    )
                })?;
                (domain.url.clone(), Some(domain))
            }
        };
        Ok((url.trim_end_matches('/').to_string(), domain))
    }

    /// The relay `spec` means, ready to connect to (its CA read now).
    fn relay(&self, spec: &RelaySpec) -> Result<RelayInfo, BrokerError> {
        let (url, domain) = self.choose(spec)?;
        let ca = match domain.and_then(|d| d.ca_file.as_ref().map(|path| (d, path))) {
            Some((domain, path)) => Some(std::fs::read_to_string(path).map_err(|e| {
                BrokerError::InvalidArgument(format!(
                    "domain {}: cannot read {}: {e}",
                    domain.name,
                    path.display()
                ))
            })?),
            None => None,
        };
        Ok(self.reached(RelayInfo::new(&url, ca)?, spec.proxy.clone())?)
    }

    fn login(
        &mut self,
        key: LoginKey,
        relay: RelayInfo,
        credential: Option<Credential>,
    ) -> Addr<CloudLogin> {
        self.clock += 1;
        self.recency.insert(key.clone(), self.clock);
        if let Some(addr) = self.logins.get(&key).filter(|a| a.connected()) {
            return addr.clone();
        }
        let addr = CloudLogin::new(key.clone(), relay, credential, self.store.clone()).start();
        self.logins.insert(key, addr.clone());
        addr
    }

    fn restore(&mut self) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let (stored, errors) = store.load_all();
        for e in errors {
            warn!(error = %e, "a stored login cannot be read; skipped");
        }
        for login in stored {
            let restored = restore_one(&login).and_then(|(key, relay, credential)| {
                let relay = self.reached(relay, None).map_err(|e| e.to_string())?;
                Ok((key, relay, credential))
            });
            match restored {
                Ok((key, relay, credential)) => {
                    info!(identity = %key.identity, relay = %key.relay, method = key.method.as_str(), "login restored");
                    self.login(key, relay, Some(credential));
                }
                Err(e) => {
                    warn!(identity = %login.identity, error = %e, "a stored login cannot be restored; skipped")
                }
            }
        }
    }
}

fn restore_one(login: &StoredLogin) -> Result<(LoginKey, RelayInfo, Credential), String> {
    let method = LoginMethod::parse(&login.method).ok_or("unknown method")?;
    let owner = match login.owner.split_once(':') {
        Some(("user", id)) => Owner::User(id.parse().map_err(|_| "bad owner")?),
        Some(("group", id)) => Owner::Group(id.parse().map_err(|_| "bad owner")?),
        _ => return Err("bad owner".into()),
    };
    let relay =
        RelayInfo::new(&login.relay_url, login.ca_pem.clone()).map_err(|e| e.to_string())?;
    let credential = match method {
        LoginMethod::Sso => Credential::Sso(Tokens {
            access: Secret::new(login.access_token.clone().ok_or("no access token")?),
            refresh: login.refresh_token.clone().map(Secret::new),
            expires: login.access_expires.unwrap_or(0),
        }),
        LoginMethod::Token => Credential::Token {
            token: Secret::new(login.access_token.clone().ok_or("no token")?),
        },
        LoginMethod::Certificate => Credential::Certificate {
            cert_der: login.cert_der.clone().ok_or("no certificate")?,
            key_der: zeroize::Zeroizing::new(login.key_der.clone().ok_or("no key")?),
        },
    };
    let key = LoginKey {
        relay: relay.url.clone(),
        identity: login.identity.clone(),
        method,
        owner,
    };
    Ok((key, relay, credential))
}

impl Actor for LoginRegistry {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        self.restore();
    }
}

/// Start (or join) an SSO login.
#[derive(Message)]
#[rtype(result = "Result<(LoginKey, watch::Receiver<LoginPhase>), BrokerError>")]
pub struct StartSso {
    pub peer: Peer,
    pub session_id: Option<String>,
    pub identity: String,
    pub relay: RelaySpec,
}

impl Handler<StartSso> for LoginRegistry {
    type Result = ResponseFuture<Result<(LoginKey, watch::Receiver<LoginPhase>), BrokerError>>;

    fn handle(&mut self, msg: StartSso, _: &mut Self::Context) -> Self::Result {
        let relay = match self.relay(&msg.relay) {
            Ok(r) => r,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        if msg.identity.trim().is_empty() {
            return Box::pin(std::future::ready(Err(BrokerError::InvalidArgument(
                "an SSO login needs the identity (email) to log in as".into(),
            ))));
        }
        let key = LoginKey {
            relay: relay.url.clone(),
            identity: msg.identity.trim().to_string(),
            method: LoginMethod::Sso,
            owner: owner_for(&msg.peer, self.share_group),
        };
        let login = self.login(key.clone(), relay, None);
        if let Some(session) = msg.session_id {
            self.session_logins.insert(session, key.clone());
        }
        Box::pin(async move {
            let phase = login.send(BeginSso).await.map_err(BrokerError::mailbox)?;
            Ok((key, phase))
        })
    }
}

/// Log in with a certificate or an access token.
#[derive(Message)]
#[rtype(result = "Result<LoginSummary, BrokerError>")]
pub struct CredentialLogin {
    pub peer: Peer,
    pub session_id: Option<String>,
    /// For certificates, the identity the certificate is for; for tokens,
    /// learned from the relay when empty.
    pub identity: String,
    pub relay: RelaySpec,
    pub method: LoginMethod,
    pub credential: Credential,
}

impl Handler<CredentialLogin> for LoginRegistry {
    type Result = ResponseActFuture<Self, Result<LoginSummary, BrokerError>>;

    fn handle(&mut self, msg: CredentialLogin, _: &mut Self::Context) -> Self::Result {
        let relay = match self.relay(&msg.relay) {
            Ok(r) => r,
            Err(e) => return Box::pin(fut::ready(Err(e))),
        };
        let owner = owner_for(&msg.peer, self.share_group);
        let relay_url = relay.url.clone();
        let credential = msg.credential;
        let identity = msg.identity.trim().to_string();
        let probe = credential.clone();
        let learn = async move {
            if !identity.is_empty() {
                return Ok((identity, relay, None));
            }
            // A token names its own identity: ask the relay who it is. The
            // connection that asked becomes the login's (one connection per
            // login: a second dial would leave this one for the relay to
            // time out whenever its close was lost).
            if !matches!(probe, Credential::Token { .. }) {
                return Err(BrokerError::InvalidArgument(
                    "a certificate login needs the identity".into(),
                ));
            }
            let conn = super::cloud_login::connect(&relay, &probe, &Default::default())
                .await
                .map_err(BrokerError::from)?;
            Ok((conn.identity.clone(), relay, Some(conn)))
        };
        let method = msg.method;
        let session = msg.session_id;
        Box::pin(learn.into_actor(self).then(move |learned, act, _| {
            let fut: Pin<Box<dyn ActorFuture<Self, Output = Result<LoginSummary, BrokerError>>>> =
                match learned {
                    Err(e) => Box::pin(fut::ready(Err(e))),
                    Ok((identity, relay, opened)) => {
                        let key = LoginKey {
                            relay: relay_url,
                            identity,
                            method,
                            owner,
                        };
                        let login = act.login(key.clone(), relay.clone(), None);
                        if let Some(session) = session {
                            act.session_logins.insert(session, key);
                        }
                        Box::pin(
                            async move {
                                login
                                    .send(UseCredential(credential, relay, opened))
                                    .await
                                    .map_err(BrokerError::mailbox)?
                                    .map_err(BrokerError::from)
                            }
                            .into_actor(act),
                        )
                    }
                };
            fut
        }))
    }
}

/// The login a cloud request should use: the session's latest, else this
/// owner's most recent (optionally narrowed by identity).
#[derive(Message)]
#[rtype(result = "Result<(LoginKey, Addr<CloudLogin>), BrokerError>")]
pub struct FindLogin {
    pub peer: Peer,
    pub session_id: Option<String>,
    pub identity: Option<String>,
}

impl Handler<FindLogin> for LoginRegistry {
    type Result = Result<(LoginKey, Addr<CloudLogin>), BrokerError>;

    fn handle(&mut self, msg: FindLogin, _: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.share_group);
        let matches = |k: &LoginKey| {
            k.owner == owner && msg.identity.as_ref().is_none_or(|i| &k.identity == i)
        };
        if let Some(key) = msg
            .session_id
            .as_ref()
            .and_then(|s| self.session_logins.get(s))
            .filter(|k| matches(k))
            && let Some(addr) = self.logins.get(key)
        {
            return Ok((key.clone(), addr.clone()));
        }
        let latest = self
            .logins
            .iter()
            .filter(|(k, a)| matches(k) && a.connected())
            .max_by_key(|(k, _)| self.recency.get(*k).copied().unwrap_or(0));
        match latest {
            Some((k, a)) => Ok((k.clone(), a.clone())),
            None => Err(BrokerError::Unauthenticated(match &msg.identity {
                Some(i) => format!("not logged in as {i}; log in first (switchyard login ...)"),
                None => "not logged in to a relay; log in first (switchyard login ...)".into(),
            })),
        }
    }
}

/// Log out of matching logins of this owner; returns how many.
#[derive(Message)]
#[rtype(result = "Result<u32, BrokerError>")]
pub struct LogoutLogins {
    pub peer: Peer,
    pub identity: Option<String>,
    pub relay: RelaySpec,
}

impl Handler<LogoutLogins> for LoginRegistry {
    type Result = ResponseFuture<Result<u32, BrokerError>>;

    fn handle(&mut self, msg: LogoutLogins, _: &mut Self::Context) -> Self::Result {
        let owner = owner_for(&msg.peer, self.share_group);
        let relay_url = if msg.relay.relay_url.is_some() || msg.relay.domain.is_some() {
            match self.choose(&msg.relay) {
                Ok((url, _)) => Some(url),
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        } else {
            None
        };
        let gone: Vec<LoginKey> = self
            .logins
            .keys()
            .filter(|k| {
                k.owner == owner
                    && msg.identity.as_ref().is_none_or(|i| &k.identity == i)
                    && relay_url.as_ref().is_none_or(|r| &k.relay == r)
            })
            .cloned()
            .collect();
        let mut stopping = Vec::new();
        for key in &gone {
            self.recency.remove(key);
            if let Some(addr) = self.logins.remove(key) {
                stopping.push(addr);
            }
            info!(identity = %key.identity, relay = %key.relay, "logged out");
        }
        self.session_logins.retain(|_, k| !gone.contains(k));
        let count = gone.len() as u32;
        Box::pin(async move {
            for addr in stopping {
                let _ = addr.send(Logout).await;
            }
            Ok(count)
        })
    }
}

/// A login as `status` lists it, with the sessions using it.
#[derive(Debug, Clone)]
pub struct LoginListing {
    pub summary: LoginSummary,
    pub sessions: u32,
}

/// Logins visible to `peer` (all of them for `None`).
#[derive(Message)]
#[rtype(result = "Vec<LoginListing>")]
pub struct ListLogins {
    pub peer: Option<Peer>,
    /// Sessions alive now (others no longer count as sharing a login).
    pub live_sessions: std::collections::HashSet<String>,
}

impl Handler<ListLogins> for LoginRegistry {
    type Result = ResponseFuture<Vec<LoginListing>>;

    fn handle(&mut self, msg: ListLogins, _: &mut Self::Context) -> Self::Result {
        self.session_logins
            .retain(|s, _| msg.live_sessions.contains(s));
        let owner = msg.peer.map(|p| owner_for(&p, self.share_group));
        let wanted: Vec<(Addr<CloudLogin>, u32)> = self
            .logins
            .iter()
            .filter(|(k, a)| a.connected() && owner.is_none_or(|o| k.owner == o))
            .map(|(k, a)| {
                let sessions = self.session_logins.values().filter(|s| *s == k).count() as u32;
                (a.clone(), sessions)
            })
            .collect();
        Box::pin(async move {
            let mut out = Vec::new();
            for (addr, sessions) in wanted {
                // A login whose credential was refused before it ever
                // worked holds nothing worth listing.
                if let Ok(summary) = addr.send(LoginStatus).await
                    && summary.state != "idle"
                {
                    out.push(LoginListing { summary, sessions });
                }
            }
            out.sort_by(|a, b| a.summary.key.identity.cmp(&b.summary.key.identity));
            out
        })
    }
}

/// A session ended: it no longer counts as sharing its login.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetSession(pub String);

impl Handler<ForgetSession> for LoginRegistry {
    type Result = ();

    fn handle(&mut self, msg: ForgetSession, _: &mut Self::Context) {
        self.session_logins.remove(&msg.0);
    }
}
