//! The front door's SSH proxy calls: `SshProxyStart`, `SshProxyStop`, each
//! a call on the broker's `SshProxies` table.

use tonic::{Request, Response, Status};

use super::{FrontDoor, peer};
use crate::api::pb;
use crate::broker::ssh_proxy::auth::ClientAuth;
use crate::broker::ssh_proxy::{SshProxyRequest, SshProxyView};
use crate::secret::Secret;

/// A proxy as the API shows it.
pub fn ssh_proxy_status(v: SshProxyView) -> pb::SshProxyStatus {
    pb::SshProxyStatus {
        address: v.address,
        local_port: v.local_port.into(),
        host_key_fingerprint: v.host_key_fingerprint,
        authorized_keys: v.authorized_keys,
        password: v.password,
        connections_open: v.open,
        connections_total: v.total,
        connections_failed: v.failed,
        last_error: v.last_error,
    }
}

impl FrontDoor {
    pub(super) async fn ssh_proxy_start_impl(
        &self,
        request: Request<pb::SshProxyStartRequest>,
    ) -> Result<Response<pb::SshProxyStatus>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let mut r = request.into_inner();
        // The password leaves the message at once, into a zeroized Secret.
        let password = Secret::new(std::mem::take(&mut r.password));
        let auth = ClientAuth::new(&r.authorized_keys, Some(password))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let view = self
            .ssh_proxies
            .start(SshProxyRequest {
                peer,
                listen: r.listen,
                auth,
                session_id: Some(r.session_id).filter(|s| !s.is_empty()),
            })
            .await?;
        Ok(Response::new(ssh_proxy_status(view)))
    }

    pub(super) async fn ssh_proxy_stop_impl(
        &self,
        request: Request<pb::SshProxyStopRequest>,
    ) -> Result<Response<pb::SshProxyStopResponse>, Status> {
        let peer = peer(&request)?;
        self.ssh_proxies.stop(&peer).await?;
        Ok(Response::new(pb::SshProxyStopResponse {}))
    }
}
