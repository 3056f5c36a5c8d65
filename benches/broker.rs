//! End-to-end latency and load benchmarks for the direct path.
//!
//! Run: `cargo bench --bench broker` (options after `--`, see `usage`).
//! Everything runs on loopback: an in-process service (RPC socket over
//! QUIC), the real broker binary as a child process, simulated devices
//! (in-process simulator driver, and SSH simulators for the warm-SSH case).
//! Results print as a table and go to `target/bench-broker.json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::api::pb::{self, broker_client::BrokerClient};
use switchyard::broker::direct_client::{DirectTarget, connect};
use switchyard::broker::link::LinkChannel;
use switchyard::secret::Secret;
use switchyard::service::drivers::Drivers;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::inventory::{
    DeviceScope, DriverKind, Inventory, NewDevice, NewRemoteUser,
};
use switchyard::service::ops::ServiceOps;
use switchyard::service::rpc::{RpcConfig, RpcServer};
use switchyard::service::seal::KdfParams;
use switchyard::sim::server::{SimFleet, SimFleetConfig};
use switchyard::wire::conn::{TransportLimits, client_endpoint};
use switchyard::wire::messages::{Request, RequestEnvelope};
use switchyard::wire::pin::Fingerprint;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

const PASSWORD: &str = "bench-password";

struct Options {
    samples: usize,
    callers: usize,
    load_secs: u64,
    process_runs: usize,
}

fn usage() -> Options {
    let mut o = Options {
        samples: 2000,
        callers: 1000,
        load_secs: 10,
        process_runs: 50,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let next = args.get(i + 1).and_then(|v| v.parse().ok());
        match (args[i].as_str(), next) {
            ("--samples", Some(v)) => o.samples = v,
            ("--callers", Some(v)) => o.callers = v,
            ("--load-secs", Some(v)) => o.load_secs = v as u64,
            ("--process-runs", Some(v)) => o.process_runs = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

#[derive(Debug, Clone, serde::Serialize)]
struct Stats {
    name: String,
    n: usize,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    mean_us: f64,
}

fn stats(name: &str, mut v: Vec<Duration>) -> Stats {
    v.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let pick = |q: f64| us(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    Stats {
        name: name.into(),
        n: v.len(),
        p50_us: pick(0.5),
        p90_us: pick(0.9),
        p99_us: pick(0.99),
        mean_us: v.iter().map(|d| us(*d)).sum::<f64>() / v.len() as f64,
    }
}

fn device(
    name: &str,
    driver: DriverKind,
    host: &str,
    port: u16,
    secret: Option<&str>,
) -> NewDevice {
    NewDevice {
        name: name.into(),
        host: host.into(),
        port,
        device_type: "IOS-XE".into(),
        driver,
        attributes: Default::default(),
        username: secret.map(|_| "admin".to_string()),
        password: secret.map(Secret::new),
        private_key: None,
    }
}

async fn start_service(dir: &Path, ssh_port: u16) -> (RpcServer, Fingerprint) {
    let cheap = KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    let mut inv = Inventory::init_with(&dir.join("inv.db"), &Secret::new("admin"), cheap).unwrap();
    inv.add_device(&device(
        "sim-1",
        DriverKind::Simulator,
        "simulated",
        22,
        None,
    ))
    .unwrap();
    inv.add_device(&device(
        "ssh-1",
        DriverKind::Ssh,
        "127.0.0.1",
        ssh_port,
        Some("admin"),
    ))
    .unwrap();
    inv.add_user(&NewRemoteUser {
        name: "bench".into(),
        password: Some(Secret::new(PASSWORD)),
        devices: DeviceScope::all(),
        enabled: true,
        cloud: false,
    })
    .unwrap();
    let identity = inv.tls_identity().unwrap();
    let fp = Fingerprint::of(&identity.cert_der);
    let ops = ServiceOps::new("bench", inv, Drivers::new(SshDriverConfig::default()));
    let server = RpcServer::start(
        ops,
        identity,
        RpcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        },
    )
    .unwrap();
    (server, fp)
}

async fn start_broker(dir: &Path) -> (tokio::process::Child, PathBuf) {
    let socket = dir.join("broker.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("broker")
        .arg("--socket")
        .arg(&socket)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CONFIG_HOME", dir)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("listening on") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, socket)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn exec_req(name: &str, device: &str) -> pb::ExecRequest {
    pb::ExecRequest {
        service: Some(pb::ServiceRef {
            name: name.into(),
            ..Default::default()
        }),
        devices: vec![device.into()],
        commands: vec!["show clock".into()],
        timeout_ms: 0,
    }
}

async fn broker_exec(
    client: &mut BrokerClient<Channel>,
    req: pb::ExecRequest,
) -> Result<usize, tonic::Status> {
    let mut s = client.exec(req).await?.into_inner();
    let mut bytes = 0;
    while let Some(ev) = s.message().await? {
        match ev.event {
            Some(pb::exec_event::Event::Output(o)) => bytes += o.data.len(),
            Some(pb::exec_event::Event::DeviceResult(r)) => {
                if !r.error.is_empty() {
                    return Err(tonic::Status::internal(r.error));
                }
                bytes += r.commands.iter().map(|c| c.output.len()).sum::<usize>();
            }
            _ => {}
        }
    }
    Ok(bytes)
}

/// A bare tonic unary call over a Unix socket: the floor any broker call
/// stands on. Health `Check` does one map lookup.
async fn tonic_floor(dir: &Path, samples: usize) -> Stats {
    let path = dir.join("floor.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let channel = switchyard::api::client::channel(&path).await.unwrap();
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let req = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    for _ in 0..200 {
        client.check(req()).await.unwrap();
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        client.check(req()).await.unwrap();
        v.push(t.elapsed());
    }
    server.abort();
    stats("tonic unary over UDS (floor)", v)
}

async fn direct_rust_client(addr: std::net::SocketAddr, fp: Fingerprint, samples: usize) -> Stats {
    let endpoint = client_endpoint(addr).unwrap();
    let target = DirectTarget {
        label: addr.to_string(),
        addr,
        username: "bench".into(),
        password: Secret::new(PASSWORD),
        fingerprint: Some(fp),
    };
    let limits = TransportLimits::default();
    let conn = connect(&endpoint, &target, &limits).await.unwrap();
    let ch = LinkChannel::Quic {
        conn: conn.conn.clone(),
        target: addr.to_string(),
        max_frame: limits.max_frame,
    };
    let one = || async {
        let mut call = ch
            .call(RequestEnvelope {
                deadline_ms: None,
                request: Request::Exec {
                    devices: vec!["sim-1".into()],
                    commands: vec!["show clock".into()],
                    timeout_ms: None,
                },
            })
            .await
            .unwrap();
        while let Some(r) = call.next().await {
            r.unwrap();
        }
    };
    for _ in 0..200 {
        one().await;
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        one().await;
        v.push(t.elapsed());
    }
    stats("exec, Rust client -> service (no broker)", v)
}

async fn through_broker(socket: &Path, device: &str, label: &str, samples: usize) -> Stats {
    let mut client = switchyard::api::client::connect(socket).await.unwrap();
    for _ in 0..200 {
        broker_exec(&mut client, exec_req("bench", device))
            .await
            .unwrap();
    }
    let mut v = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        broker_exec(&mut client, exec_req("bench", device))
            .await
            .unwrap();
        v.push(t.elapsed());
    }
    stats(label, v)
}

/// A unary call that crosses the broker to the service (inventory).
async fn inventory_via_broker(socket: &Path, samples: usize) -> Stats {
    let mut client = switchyard::api::client::connect(socket).await.unwrap();
    let req = || pb::InventoryRequest {
        service: Some(pb::ServiceRef {
            name: "bench".into(),
            ..Default::default()
        }),
    };
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples + 200 {
        let t = Instant::now();
        client.inventory(req()).await.unwrap();
        if i >= 200 {
            v.push(t.elapsed());
        }
    }
    stats("inventory via broker (unary)", v)
}

/// A unary call answered by the broker's actors alone (status).
async fn status_via_broker(socket: &Path, samples: usize) -> Stats {
    let mut client = switchyard::api::client::connect(socket).await.unwrap();
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples + 200 {
        let t = Instant::now();
        client.status(pb::StatusRequest {}).await.unwrap();
        if i >= 200 {
            v.push(t.elapsed());
        }
    }
    stats("status via broker (actors only)", v)
}

#[derive(Debug, serde::Serialize)]
struct Load {
    callers: usize,
    seconds: f64,
    execs: u64,
    failures: u64,
    execs_per_sec: f64,
    latency: Stats,
    broker_rss_kib_before: u64,
    broker_rss_kib_loaded: u64,
    idle_session_bytes: f64,
    idle_session_bytes_shared_connection: f64,
}

/// Memory of idle sessions that share one connection (one process with
/// many `Client.create()`s): RSS growth per session.
async fn shared_connection_sessions(socket: &Path, broker_pid: u32, n: usize) -> f64 {
    let client = switchyard::api::client::connect(socket).await.unwrap();
    let before = rss_kib(broker_pid);
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = client.clone();
        let id = c
            .open_session(pb::OpenSessionRequest {
                client_name: "idle".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session_id;
        held.push(
            c.attach(pb::AttachRequest { session_id: id })
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let after = rss_kib(broker_pid);
    drop(held);
    // Wait (bounded) for the broker to reap them before the next phase.
    let mut c = client.clone();
    for _ in 0..500 {
        if c.status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .sessions
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (after.saturating_sub(before) as f64 * 1024.0) / n as f64
}

async fn load(socket: &Path, broker_pid: u32, callers: usize, secs: u64, svc_port: u16) -> Load {
    let idle_session_bytes_shared_connection =
        shared_connection_sessions(socket, broker_pid, callers).await;
    let rss_before = rss_kib(broker_pid);
    // Each caller: its own connection and session, sharing one link.
    let mut sessions = Vec::with_capacity(callers);
    for _ in 0..callers {
        let mut c = switchyard::api::client::connect(socket).await.unwrap();
        let id = c
            .open_session(pb::OpenSessionRequest {
                client_name: "load".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session_id;
        let attach = c
            .attach(pb::AttachRequest {
                session_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let svc = c
            .service_direct(pb::ServiceDirectRequest {
                session_id: id.clone(),
                username: "bench".into(),
                host: "127.0.0.1".into(),
                port: svc_port.into(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        sessions.push((c, id, svc.service_id, attach));
    }
    let rss_idle = rss_kib(broker_pid);
    let idle_session_bytes = (rss_idle.saturating_sub(rss_before) as f64 * 1024.0) / callers as f64;

    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, id, svc, attach) in sessions {
        tasks.spawn(async move {
            let _attach = attach;
            let mut lat = Vec::new();
            let mut failures = 0u64;
            let req = pb::ExecRequest {
                service: Some(pb::ServiceRef {
                    session_id: id,
                    service_id: svc,
                    name: String::new(),
                }),
                devices: vec!["sim-1".into()],
                commands: vec!["show clock".into()],
                timeout_ms: 0,
            };
            while Instant::now() < deadline {
                let t = Instant::now();
                match broker_exec(&mut c, req.clone()).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => failures += 1,
                }
            }
            (lat, failures)
        });
    }
    let mut rss_loaded = 0;
    let mut all = Vec::new();
    let mut failures = 0;
    let mut sampled = false;
    while let Some(r) = tasks.join_next().await {
        if !sampled {
            rss_loaded = rss_kib(broker_pid);
            sampled = true;
        }
        let (lat, f) = r.unwrap();
        all.extend(lat);
        failures += f;
    }
    let seconds = start.elapsed().as_secs_f64();
    let execs = all.len() as u64;
    Load {
        callers,
        seconds,
        execs,
        failures,
        execs_per_sec: execs as f64 / seconds,
        latency: stats("exec under load", all),
        broker_rss_kib_before: rss_before,
        broker_rss_kib_loaded: rss_loaded,
        idle_session_bytes,
        idle_session_bytes_shared_connection,
    }
}

async fn cli_process(socket: &Path, runs: usize) -> Stats {
    let run = || async {
        let t = Instant::now();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["exec", "bench", "sim-1", "-c", "show clock", "--json"])
            .env("SWITCHYARD_SOCKET", socket)
            .env("RUST_LOG", "off")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    };
    for _ in 0..5 {
        run().await;
    }
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        v.push(run().await);
    }
    stats("`switchyard exec` whole process", v)
}

fn main() {
    let o = usage();
    switchyard::tls::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let fleet = SimFleet::start(SimFleetConfig::default()).await.unwrap();
        let ssh_port = fleet.endpoints()[0].port;
        let (server, fp) = start_service(dir.path(), ssh_port).await;
        let addr = server.local_addr();
        let (broker, socket) = start_broker(dir.path()).await;
        let broker_pid = broker.id().unwrap();
        let mut client = switchyard::api::client::connect(&socket).await.unwrap();
        client
            .service_direct(pb::ServiceDirectRequest {
                name: "bench".into(),
                username: "bench".into(),
                host: "127.0.0.1".into(),
                port: addr.port().into(),
                password: PASSWORD.into(),
                fingerprint: fp.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();

        let mut latency = vec![
            tonic_floor(dir.path(), o.samples).await,
            direct_rust_client(addr, fp, o.samples).await,
            through_broker(&socket, "sim-1", "exec via broker, in-process simulator", o.samples).await,
            through_broker(&socket, "ssh-1", "exec via broker, SSH simulator (warm)", o.samples).await,
        ];
        latency.push(inventory_via_broker(&socket, o.samples).await);
        latency.push(status_via_broker(&socket, o.samples).await);
        latency.push(cli_process(&socket, o.process_runs).await);
        println!("\n{:<48} {:>7} {:>9} {:>9} {:>9}", "latency", "n", "p50 µs", "p90 µs", "p99 µs");
        for s in &latency {
            println!("{:<48} {:>7} {:>9.0} {:>9.0} {:>9.0}", s.name, s.n, s.p50_us, s.p90_us, s.p99_us);
        }
        let floor = latency[0].p50_us;
        let direct = latency[1].p50_us;
        let brokered = latency[2].p50_us;
        println!(
            "broker overhead: brokered p50 {brokered:.0} µs = floor {floor:.0} + direct {direct:.0} + {:.0} µs of broker logic ({:.0}% of the floor)",
            brokered - floor - direct,
            (brokered - floor - direct) / floor * 100.0
        );

        let load = load(&socket, broker_pid, o.callers, o.load_secs, addr.port()).await;
        println!(
            "\nload: {} callers, {:.1} s: {} execs ({:.0}/s), {} failures, p50 {:.0} µs, p99 {:.0} µs",
            load.callers, load.seconds, load.execs, load.execs_per_sec, load.failures, load.latency.p50_us, load.latency.p99_us
        );
        println!(
            "broker RSS: {} KiB idle, {} KiB under load; per idle session: {:.0} bytes sharing one connection, {:.0} bytes with a connection each",
            load.broker_rss_kib_before, load.broker_rss_kib_loaded, load.idle_session_bytes_shared_connection, load.idle_session_bytes
        );
        let report = serde_json::json!({ "latency": latency, "load": load });
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-broker.json");
        let _ = std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap());
        println!("results: {}", out.display());
        drop(Arc::new(fleet));
        server.shutdown(Duration::ZERO).await;
    });
}
