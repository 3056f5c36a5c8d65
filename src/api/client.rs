//! Connecting a gRPC client to the broker's Unix socket (the CLI, tests
//! and benchmarks use it).

use std::path::Path;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use super::pb::broker_client::BrokerClient;
use crate::uds::ReadWokenUnixStream;

/// The largest HTTP/2 frame this client accepts.
const MAX_FRAME: u32 = 256 * 1024;

/// A channel to the broker at `socket`.
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    // The URI is a placeholder: the connector ignores it, and "localhost"
    // is a valid HTTP/2 authority.
    Endpoint::from_static("http://localhost")
        .max_frame_size(MAX_FRAME)
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    ReadWokenUnixStream::connect(&path).await?.coalescing(),
                ))
            }
        }))
        .await
}

/// A broker API client on `socket`.
pub async fn connect(socket: &Path) -> Result<BrokerClient<Channel>, tonic::transport::Error> {
    Ok(BrokerClient::new(channel(socket).await?))
}
