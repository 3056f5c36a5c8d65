//! Prometheus metrics: an optional `/metrics` endpoint on each daemon
//! (`--metrics-listen ADDR`). The `metrics` facade records; the exporter
//! renders; axum serves the page.
//!
//! What is recorded (all prefixed `switchyard_`):
//! * `sessions` (gauge), `links{transport}` (gauge)
//! * `link_connects_total{transport}` (handshakes or opens)
//! * `requests_total{kind}`, `request_errors_total{code}`
//! * `exec_duration_seconds` (histogram, broker side, whole call)
//! * `service_requests_total{kind}`, `service_logins_total{result}`

use std::net::SocketAddr;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tracing::info;

use crate::task::AbortOnDrop;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running metrics endpoint; dropping it stops the server.
pub struct MetricsServer {
    pub addr: SocketAddr,
    _task: AbortOnDrop<()>,
}

/// Installs the process-wide recorder and serves `GET /metrics` on `addr`
/// (port 0: any free port; the bound address is returned and logged).
pub async fn serve(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            30.0,
        ])
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError::Install(e.to_string()))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Listen { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    info!(addr = %bound, "metrics endpoint listening");
    Ok(MetricsServer {
        addr: bound,
        _task: AbortOnDrop::new(task),
    })
}
