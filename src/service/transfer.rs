//! File transfer, service side: `FileGet` (download) and `FilePut`
//! (upload) requests, run by the device's driver
//! ([`super::drivers::ssh_transfer`]).
//!
//! Takes: one request and the caller's channels, like every other
//! operation of [`ServiceOps`]. The caller's scope is checked first (a
//! device outside it is `no device NAME that you may use`); the transfer
//! then holds one channel slot of the device's pooled connection.
//!
//! On failure: one `Error` naming the device and path (missing file,
//! permission denied, no SFTP and no SCP, over the size limit); the
//! download's bytes sent so far are then incomplete, and an SFTP upload's
//! temporary file is removed.

use tokio::sync::mpsc;

use super::drivers::ssh_transfer::TransferRequest;
use super::ops::{OpsError, Principal, ServiceOps};
use crate::wire::messages::{Response, TerminalInput, TransferProtocol};

/// What one transfer names: device, path on it, protocol.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    pub device: &'a str,
    pub path: &'a str,
    pub protocol: TransferProtocol,
}

impl Copy<'_> {
    fn check(&self) -> Result<(), OpsError> {
        if self.path.is_empty() || self.path.contains('\0') || self.path.len() > 4096 {
            return Err(OpsError::BadRequest(format!(
                "{}: the remote path must be 1 to 4096 bytes without NUL",
                crate::label::tidy(self.device)
            )));
        }
        Ok(())
    }
}

impl ServiceOps {
    /// Sends `copy.path`'s bytes to `out`: `FileReady`, `FileData`
    /// chunks, `FileDone`.
    pub(super) async fn file_get(
        &self,
        principal: &Principal,
        copy: Copy<'_>,
        max_bytes: Option<u64>,
        out: &mpsc::Sender<Response>,
    ) -> Result<(), OpsError> {
        copy.check()?;
        let target = self.resolve(principal, copy.device)?;
        let request = TransferRequest {
            path: copy.path,
            protocol: copy.protocol,
            idle: self.drivers().transfer_idle(),
        };
        let done = self
            .drivers()
            .download(&target, request, max_bytes, out)
            .await?;
        self.record_learned(&target, done.learned_host_key.as_deref());
        let _ = out.send(Response::FileDone { bytes: done.bytes }).await;
        Ok(())
    }

    /// Writes the caller's `size` bytes (`input`) to `copy.path`.
    pub(super) async fn file_put(
        &self,
        principal: &Principal,
        copy: Copy<'_>,
        size: u64,
        mode: u32,
        input: mpsc::Receiver<TerminalInput>,
        out: &mpsc::Sender<Response>,
    ) -> Result<(), OpsError> {
        copy.check()?;
        let target = self.resolve(principal, copy.device)?;
        let request = TransferRequest {
            path: copy.path,
            protocol: copy.protocol,
            idle: self.drivers().transfer_idle(),
        };
        let done = self
            .drivers()
            .upload(&target, request, size, mode, input, out)
            .await?;
        self.record_learned(&target, done.learned_host_key.as_deref());
        let _ = out.send(Response::FileDone { bytes: done.bytes }).await;
        Ok(())
    }
}
