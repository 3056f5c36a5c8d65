//! SSH user authentication for the driver (RFC 4252, RFC 4256).
//!
//! Order: public key (when the device has a private key), then password
//! (RFC 4252 §8), then keyboard-interactive (RFC 4256) answering the
//! device's password prompts with the stored password — AAA/TACACS+ gear
//! and PAM-based servers often take the password only that way. A method
//! the device has said it does not accept (its list of methods that can
//! continue) is skipped.
//!
//! Keyboard-interactive answers only prompts whose text contains
//! "password" (any case); any other prompt (a one-time code, a question)
//! fails with [`DriverError::UnexpectedPrompt`] naming it. A device that
//! asks for the password again after it was given has refused it.
//!
//! Errors: [`DriverError::AuthenticationFailed`] when every method was
//! refused; [`DriverError::Ssh`] when the connection fails meanwhile.

use std::sync::Arc;

use russh::client::{Handle, Handler, KeyboardInteractiveAuthResponse};
use russh::keys::PrivateKeyWithHashAlg;
use russh::{MethodKind, MethodSet};
use zeroize::Zeroizing;

use super::{DeviceTarget, DriverError};
use crate::secret::Secret;

/// Keyboard-interactive rounds answered before giving up (PAM asks one
/// prompt per round; a device looping for ever is refused).
const MAX_ROUNDS: usize = 4;

/// Longest prompt text quoted in an error.
const MAX_PROMPT_CHARS: usize = 128;

/// Authenticates `username` on a fresh connection with the device's
/// credentials.
pub(super) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    target: &DeviceTarget,
    username: &str,
) -> Result<(), DriverError> {
    let device = &target.name;
    let ssh_err = |e: russh::Error| DriverError::Ssh {
        device: device.clone(),
        reason: e.to_string(),
    };
    let creds = &target.credentials;
    if creds.password.is_none() && creds.private_key.is_none() {
        return Err(DriverError::NoCredentials {
            device: device.clone(),
        });
    }
    // What the device still accepts, from its last refusal (unknown before).
    let mut allowed: Option<MethodSet> = None;
    if let Some(pem) = &creds.private_key {
        let key = russh::keys::decode_secret_key(pem.expose(), None).map_err(|e| {
            DriverError::BadPrivateKey {
                device: device.clone(),
                reason: e.to_string(),
            }
        })?;
        let hash = handle
            .best_supported_rsa_hash()
            .await
            .map_err(ssh_err)?
            .flatten();
        let result = handle
            .authenticate_publickey(username, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
            .await
            .map_err(ssh_err)?;
        match result {
            russh::client::AuthResult::Success => return Ok(()),
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => allowed = Some(remaining_methods),
        }
    }
    if let Some(password) = &creds.password {
        let offered = |allowed: &Option<MethodSet>, m: MethodKind| {
            allowed.as_ref().is_none_or(|a| a.contains(&m))
        };
        if offered(&allowed, MethodKind::Password) {
            let result = handle
                .authenticate_password(username, password.expose())
                .await
                .map_err(ssh_err)?;
            match result {
                russh::client::AuthResult::Success => return Ok(()),
                russh::client::AuthResult::Failure {
                    remaining_methods, ..
                } => allowed = Some(remaining_methods),
            }
        }
        if offered(&allowed, MethodKind::KeyboardInteractive)
            && keyboard_interactive(handle, device, username, password).await?
        {
            return Ok(());
        }
    }
    Err(DriverError::AuthenticationFailed {
        device: device.clone(),
        user: username.to_string(),
    })
}

/// Runs keyboard-interactive, answering password prompts with `password`.
/// `Ok(true)` when the device accepted it, `Ok(false)` when it refused.
async fn keyboard_interactive<H: Handler>(
    handle: &mut Handle<H>,
    device: &str,
    username: &str,
    password: &Secret,
) -> Result<bool, DriverError> {
    let ssh_err = |e: russh::Error| DriverError::Ssh {
        device: device.to_string(),
        reason: e.to_string(),
    };
    let mut reply = handle
        .authenticate_keyboard_interactive_start(username, None)
        .await
        .map_err(ssh_err)?;
    let mut password_given = false;
    for _ in 0..MAX_ROUNDS {
        let prompts = match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => prompts,
        };
        let mut responses = Vec::with_capacity(prompts.len());
        for prompt in &prompts {
            if !prompt.prompt.to_lowercase().contains("password") {
                return Err(DriverError::UnexpectedPrompt {
                    device: device.to_string(),
                    prompt: prompt
                        .prompt
                        .chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_PROMPT_CHARS)
                        .collect(),
                });
            }
            if password_given {
                // Asked again after we answered: the password was refused.
                return Ok(false);
            }
            responses.push(password.expose().to_string());
        }
        password_given |= !responses.is_empty();
        // russh takes the answers by value; our copy is wiped here.
        let responses = Zeroizing::new(responses);
        reply = handle
            .authenticate_keyboard_interactive_respond(responses.to_vec())
            .await
            .map_err(ssh_err)?;
    }
    Ok(false)
}
