//! Cloud client commands (over the broker's gRPC API): `login`, `logout`,
//! `enroll`, `token create`, and `connect cloud` / `connect direct-sso`.
//!
//! Client certificates live under the user's config directory, one folder
//! per relay and identity: `$XDG_CONFIG_HOME/switchyard/certs/<relay
//! host_port>/<identity>/{cert.pem,key.enc}` (`key.enc` is encrypted under
//! the password chosen at `enroll client`; both files mode 0600).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::remote::broker_client;
use super::{CliError, outln};
use crate::api::pb;
use crate::secret::SecretSource;

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// The relay's HTTPS URL.
    #[arg(long, value_name = "URL", conflicts_with = "domain")]
    pub relay: Option<String>,
    /// A relay named in the broker's config (`domains.NAME`).
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Reach the relay through this HTTP proxy, `http://[USER@]HOST:PORT`
    /// (its relay connection is then TLS/TCP; default: the broker's
    /// `[proxy]`, else its HTTPS_PROXY).
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
    /// File holding the proxy user's password (else a prompt when --proxy
    /// names a user).
    #[arg(long, value_name = "FILE", requires = "proxy")]
    pub proxy_password_file: Option<PathBuf>,
}

impl RelayArgs {
    fn selector(&self) -> Result<Option<pb::RelaySelector>, CliError> {
        let proxy =
            super::remote::proxy_args(self.proxy.clone(), self.proxy_password_file.clone())?;
        Ok(Some(pb::RelaySelector {
            relay_url: self.relay.clone().unwrap_or_default(),
            domain: self.domain.clone().unwrap_or_default(),
            proxy_url: proxy.as_ref().map(|(u, _)| u.clone()).unwrap_or_default(),
            proxy_password: proxy
                .and_then(|(_, p)| p)
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum LoginCommand {
    /// Single sign-on in a browser (the relay shows a page to approve).
    Sso {
        /// The identity (email) to log in as.
        identity: String,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// With the client certificate from `switchyard enroll client`.
    Cert {
        /// The identity (email) the certificate was issued to.
        identity: String,
        #[command(flatten)]
        relay: RelayArgs,
        /// File holding the key's password (else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Where the certificate and key are (default: the config directory).
        #[arg(long, value_name = "DIR")]
        cert_dir: Option<PathBuf>,
    },
    /// With an access token.
    Token {
        /// File holding the token.
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        #[command(flatten)]
        relay: RelayArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum EnrollCommand {
    /// Get a client certificate for the logged-in identity (for `login cert`).
    Client {
        /// The logged-in identity (default: the only one).
        #[arg(long)]
        identity: Option<String>,
        /// File holding the password that encrypts the key (else a prompt).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// Where to write the certificate and key (default: the config directory).
        #[arg(long, value_name = "DIR")]
        cert_dir: Option<PathBuf>,
    },
    /// A one-time password that enrolls a service (`switchyard service enroll`).
    /// Only for a new serial or one you own: the first enrollment makes
    /// you its owner; a relay administrator can transfer it
    /// (`switchyard relay service transfer`).
    ServiceOtp {
        /// The serial the service will enroll as.
        #[arg(long)]
        serial: String,
        /// The logged-in identity to ask as (default: the only one).
        #[arg(long)]
        identity: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a long-lived access token for the SSO-logged-in identity.
    Create {
        /// e.g. 7d, 12h.
        #[arg(long, default_value = "7d", value_parser = super::positive_duration)]
        lifetime: Duration,
        /// The SSO-logged-in identity (default: the only one).
        #[arg(long)]
        identity: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct CloudConnectArgs {
    /// Name for the service, used by later commands.
    pub name: String,
    /// The service's serial.
    #[arg(long)]
    pub serial: String,
    /// Which login to use when there are several.
    #[arg(long)]
    pub identity: Option<String>,
    /// Expected fingerprint of the service's own certificate (default: the
    /// one it published when it enrolled).
    #[arg(long)]
    pub e2ee_fingerprint: Option<String>,
}

fn cert_dir(
    explicit: Option<PathBuf>,
    relay_url: &str,
    identity: &str,
) -> Result<PathBuf, CliError> {
    if let Some(dir) = explicit {
        return Ok(dir);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CliError::Usage("no config directory: set HOME or use --cert-dir".into()))?;
    let relay = url::Url::parse(relay_url)
        .ok()
        .and_then(|u| Some(format!("{}_{}", u.host_str()?, u.port_or_known_default()?)))
        .unwrap_or_else(|| "relay".into());
    let safe = |s: &str| s.replace(['/', '\\', ':'], "_");
    Ok(base
        .join("switchyard")
        .join("certs")
        .join(safe(&relay))
        .join(safe(identity)))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    crate::fsutil::write_atomically(path, bytes)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .map_err(CliError::io(format!("cannot write {}", path.display())))
}

fn print_login(login: &pb::LoginResponse) {
    let expiry = match login.expires_unix {
        0 => String::new(),
        t => format!(" until unix time {t}"),
    };
    outln!(
        "logged in to {} as {} ({}){expiry}",
        login.relay_url,
        login.identity,
        login.method
    );
}

pub async fn login(socket: &Path, cmd: LoginCommand) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    match cmd {
        LoginCommand::Sso { identity, relay } => {
            let mut events = broker
                .sso_login(pb::SsoLoginRequest {
                    identity,
                    relay: relay.selector()?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(event) = events.message().await? {
                match event.event {
                    Some(pb::sso_login_event::Event::Prompt(p)) => {
                        eprintln!(
                            "To log in, open {} and check that it shows the code {} (valid {} s).",
                            if p.verification_uri_complete.is_empty() {
                                &p.verification_uri
                            } else {
                                &p.verification_uri_complete
                            },
                            p.user_code,
                            p.expires_in_secs
                        );
                        // One line a script can parse.
                        outln!(
                            "{}",
                            serde_json::json!({
                                "verification_uri": p.verification_uri,
                                "verification_uri_complete": p.verification_uri_complete,
                                "user_code": p.user_code,
                            })
                        );
                    }
                    Some(pb::sso_login_event::Event::LoggedIn(login)) => {
                        print_login(&login);
                        return Ok(ExitCode::SUCCESS);
                    }
                    None => {}
                }
            }
            Err(CliError::Usage(
                "the broker ended the login without an outcome".into(),
            ))
        }
        LoginCommand::Cert {
            identity,
            relay,
            password_file,
            cert_dir: dir,
        } => {
            let relay_url = relay.relay.clone().unwrap_or_default();
            let dir = match (dir, relay_url.is_empty()) {
                (Some(d), _) => d,
                (None, false) => cert_dir(None, &relay_url, &identity)?,
                (None, true) => {
                    return Err(CliError::Usage(
                        "name the relay (--relay URL) or the certificate's folder (--cert-dir DIR)"
                            .into(),
                    ));
                }
            };
            let read = |name: &str| {
                let path = dir.join(name);
                std::fs::read(&path).map_err(CliError::io(format!(
                    "cannot read {} (run `switchyard enroll client` first)",
                    path.display()
                )))
            };
            let cert_pem = String::from_utf8_lossy(&read("cert.pem")?).into_owned();
            let encrypted_key = read("key.enc")?;
            let password = SecretSource {
                what: "key password",
                file_flag: "--password-file",
                file: password_file.as_deref(),
                credential: None,
                confirm: false,
            }
            .read()?;
            let login = broker
                .certificate_login(pb::CertificateLoginRequest {
                    identity,
                    relay: relay.selector()?,
                    cert_pem,
                    encrypted_key,
                    key_password: password.expose().to_string(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            print_login(&login);
            Ok(ExitCode::SUCCESS)
        }
        LoginCommand::Token { token_file, relay } => {
            let token = crate::secret::read_secret_file("access token", &token_file)?;
            let login = broker
                .access_token_login(pb::AccessTokenLoginRequest {
                    token: token.expose().to_string(),
                    relay: relay.selector()?,
                    ..Default::default()
                })
                .await?
                .into_inner();
            print_login(&login);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn logout(
    socket: &Path,
    identity: Option<String>,
    relay: RelayArgs,
) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    let n = broker
        .logout(pb::LogoutRequest {
            identity: identity.unwrap_or_default(),
            relay: relay.selector()?,
        })
        .await?
        .into_inner()
        .logged_out;
    outln!("logged out of {n} login(s)");
    Ok(ExitCode::SUCCESS)
}

pub async fn enroll(socket: &Path, cmd: EnrollCommand) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    match cmd {
        EnrollCommand::Client {
            identity,
            password_file,
            cert_dir: dir,
        } => {
            let password = SecretSource {
                what: "password for the new key",
                file_flag: "--password-file",
                file: password_file.as_deref(),
                credential: None,
                confirm: true,
            }
            .read()?;
            let enrolled = broker
                .enroll_client(pb::EnrollClientRequest {
                    identity: identity.unwrap_or_default(),
                    key_password: password.expose().to_string(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let dir = cert_dir(dir, &enrolled.relay_url, &enrolled.identity)?;
            crate::fsutil::create_private_dir_all(&dir)
                .map_err(CliError::io(format!("cannot create {}", dir.display())))?;
            write_private(&dir.join("cert.pem"), enrolled.cert_pem.as_bytes())?;
            write_private(&dir.join("key.enc"), &enrolled.encrypted_key)?;
            outln!(
                "client certificate for {} saved in {}; log in with `switchyard login cert {} --relay {}`",
                enrolled.identity,
                dir.display(),
                enrolled.identity,
                enrolled.relay_url
            );
            Ok(ExitCode::SUCCESS)
        }
        EnrollCommand::ServiceOtp { serial, identity } => {
            let otp = broker
                .create_service_otp(pb::CreateServiceOtpRequest {
                    serial: serial.clone(),
                    identity: identity.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            eprintln!(
                "one-time password for serial {serial} (expires at unix time {}); on the service run\n  switchyard service enroll --relay URL --otp-file FILE",
                otp.expires_unix
            );
            outln!("{}", otp.otp);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn token(socket: &Path, cmd: TokenCommand) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    let TokenCommand::Create { lifetime, identity } = cmd;
    let token = broker
        .create_access_token(pb::CreateAccessTokenRequest {
            lifetime_secs: lifetime.as_secs(),
            identity: identity.unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_inner();
    eprintln!(
        "access token {} (expires at unix time {})",
        token.id, token.expires_unix
    );
    outln!("{}", token.token);
    Ok(ExitCode::SUCCESS)
}

pub async fn connect_cloud(
    socket: &Path,
    args: CloudConnectArgs,
    direct: Option<(Option<String>, Option<u16>)>,
) -> Result<ExitCode, CliError> {
    let mut broker = broker_client(socket).await?;
    let response = match direct {
        None => broker
            .service_cloud(pb::ServiceCloudRequest {
                name: args.name.clone(),
                serial: args.serial.clone(),
                e2ee_fingerprint: args.e2ee_fingerprint.unwrap_or_default(),
                identity: args.identity.unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner(),
        Some((host, port)) => broker
            .service_direct_with_sso(pb::ServiceDirectWithSsoRequest {
                name: args.name.clone(),
                serial: args.serial.clone(),
                host: host.unwrap_or_default(),
                port: port.map(u32::from).unwrap_or(0),
                e2ee_fingerprint: args.e2ee_fingerprint.unwrap_or_default(),
                identity: args.identity.unwrap_or_default(),
                ..Default::default()
            })
            .await?
            .into_inner(),
    };
    // Waiting for the service can take up to the timeout; a signal then
    // undoes the connect (the named service goes) and ends the command.
    let mut stop = super::remote::EndSignals::any_stop();
    let mut waiter = broker.clone();
    let wait = waiter.wait(pb::WaitRequest {
        service: Some(pb::ServiceRef {
            name: response.name.clone(),
            ..Default::default()
        }),
        timeout_secs: 30.0,
    });
    let waited = tokio::select! {
        waited = wait => waited?.into_inner(),
        signal = stop.recv() => {
            let undo = broker.disconnect(pb::DisconnectRequest { name: response.name.clone() });
            let _ = tokio::time::timeout(Duration::from_secs(5), undo).await;
            return Err(CliError::Interrupted(signal));
        }
    };
    outln!(
        "connected {} to service {} ({})",
        args.name,
        args.serial,
        waited.service_name
    );
    Ok(ExitCode::SUCCESS)
}
