//! The front door's port-forward calls: `ForwardStart`, `SocksProxyStart`,
//! `ForwardStop`, `ForwardList`, each a call on the broker's `Forwards`
//! table.

use tonic::{Request, Response, Status};

use super::{FrontDoor, peer};
use crate::api::{convert, pb};
use crate::broker::forward::actor::Destination;
use crate::broker::forward::listener::Listen;
use crate::broker::forward::socks::ProxyLogin;
use crate::broker::forward::{ForwardRequest, ForwardView};
use crate::broker::routes::ServiceRef;
use crate::secret::Secret;

/// A service reference and its label for listings.
fn service_with_label(service: Option<pb::ServiceRef>) -> Result<(ServiceRef, String), Status> {
    let service = convert::service_ref(service)?;
    let label = match &service {
        ServiceRef::Named(name) => name.clone(),
        ServiceRef::InSession { service_id, .. } => service_id.clone(),
    };
    Ok((service, label))
}

/// A forward as the API shows it.
pub fn forward_status(v: ForwardView) -> pb::ForwardStatus {
    pb::ForwardStatus {
        forward_id: v.id,
        kind: v.kind.as_str().to_string(),
        username: v.username,
        service: v.service,
        device: v.device,
        port: v.port.into(),
        address: v.address,
        local_port: v.local_port.into(),
        connections_open: v.open,
        connections_total: v.total,
        connections_failed: v.failed,
        bytes_to_device: v.bytes_to_device,
        bytes_from_device: v.bytes_from_device,
        last_error: v.last_error,
    }
}

impl FrontDoor {
    pub(super) async fn forward_start_impl(
        &self,
        request: Request<pb::ForwardStartRequest>,
    ) -> Result<Response<pb::ForwardStatus>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let (service, service_label) = service_with_label(r.service)?;
        let port =
            u16::try_from(r.port).map_err(|_| Status::invalid_argument("port must be 1-65535"))?;
        let view = self
            .forwards
            .start(ForwardRequest {
                peer,
                service,
                service_label,
                destination: Destination::Port {
                    device: r.device,
                    port,
                },
                listen: Listen::parse(&r.listen)?,
            })
            .await?;
        Ok(Response::new(forward_status(view)))
    }

    pub(super) async fn socks_proxy_start_impl(
        &self,
        request: Request<pb::SocksProxyStartRequest>,
    ) -> Result<Response<pb::ForwardStatus>, Status> {
        let peer = peer(&request)?;
        self.admit()?;
        let r = request.into_inner();
        let (service, service_label) = service_with_label(r.service)?;
        let password = Secret::new(r.password);
        let login = match (r.username.is_empty(), password.is_empty()) {
            (true, true) => None,
            (false, false) => Some(ProxyLogin::new(r.username, password)?),
            _ => {
                return Err(Status::invalid_argument(
                    "give both a SOCKS5 username and a password, or neither",
                ));
            }
        };
        let view = self
            .forwards
            .start(ForwardRequest {
                peer,
                service,
                service_label,
                destination: Destination::Socks { login },
                listen: Listen::parse(&r.listen)?,
            })
            .await?;
        Ok(Response::new(forward_status(view)))
    }

    pub(super) async fn forward_stop_impl(
        &self,
        request: Request<pb::ForwardStopRequest>,
    ) -> Result<Response<pb::ForwardStopResponse>, Status> {
        let peer = peer(&request)?;
        self.forwards
            .stop(&peer, &request.into_inner().forward_id)
            .await?;
        Ok(Response::new(pb::ForwardStopResponse {}))
    }

    pub(super) async fn forward_list_impl(
        &self,
        request: Request<pb::ForwardListRequest>,
    ) -> Result<Response<pb::ForwardListResponse>, Status> {
        let peer = peer(&request)?;
        let forwards = self
            .forwards
            .list(peer.uid)
            .into_iter()
            .map(forward_status)
            .collect();
        Ok(Response::new(pb::ForwardListResponse { forwards }))
    }
}
