//! End-to-end latency and load benchmarks for the direct path.
//!
//! Run: `cargo bench --bench broker` (options after `--`, see `usage`).
//! Everything runs on loopback, each end in its own process as deployed:
//! the service (`switchyardd service run`, RPC socket over QUIC), the
//! broker, and the floor's tonic server are child processes; the callers
//! and the SSH simulators (for the warm-SSH case) run in this one.
//! Results print as a table and go to `target/bench-broker.json`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard::api::pb::{self, broker_client::BrokerClient};
use switchyard::broker::direct_client::{DirectTarget, connect};
use switchyard::broker::link::LinkChannel;
use switchyard::secret::Secret;
use switchyard::service::inventory::{
    DeviceScope, DriverKind, Inventory, NewDevice, NewRemoteUser,
};
use switchyard::service::seal::KdfParams;
use switchyard::sim::server::{SimFleet, SimFleetConfig};
use switchyard::wire::conn::{Liveness, TransportLimits, client_endpoint};
use switchyard::wire::messages::{Request, RequestEnvelope, Response};
use switchyard::wire::pin::Fingerprint;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::transport::Channel;

const PASSWORD: &str = "bench-password";

struct Options {
    samples: usize,
    callers: usize,
    load_secs: u64,
    process_runs: usize,
    rounds: usize,
    /// `--only brokered|direct`: only that exec row, `samples` times, after
    /// printing the broker's and the service's pids (for profiling them).
    /// `--only transports`: exec over QUIC and over TCP (TLS + HTTP/2),
    /// direct and brokered, in `rounds` interleaved rounds.
    only: Option<String>,
    /// `--bulk-mb N` (with `--only transports`): also N MB of output
    /// through each direct link per round (0: none; default 100).
    bulk_mb: usize,
    /// `--broker-threads N`: the broker's tokio worker threads (0: one per
    /// core), also used by the floor's server so both run alike.
    broker_threads: usize,
    /// `--caller-threads N`: the timed callers' runtime (1: current-thread,
    /// the default, as the CLI; 0: multi-thread, one worker per core).
    caller_threads: usize,
}

fn usage() -> Options {
    let mut o = Options {
        samples: 10000,
        callers: 1000,
        load_secs: 10,
        process_runs: 50,
        rounds: 50,
        only: None,
        bulk_mb: 100,
        broker_threads: 0,
        caller_threads: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    o.only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let mut i = 1;
    while i < args.len() {
        let next = args.get(i + 1).and_then(|v| v.parse().ok());
        match (args[i].as_str(), next) {
            ("--samples", Some(v)) => o.samples = v,
            ("--callers", Some(v)) => o.callers = v,
            ("--load-secs", Some(v)) => o.load_secs = v as u64,
            ("--process-runs", Some(v)) => o.process_runs = v,
            ("--rounds", Some(v)) => o.rounds = v.max(1),
            ("--broker-threads", Some(v)) => o.broker_threads = v,
            ("--caller-threads", Some(v)) => o.caller_threads = v,
            ("--bulk-mb", Some(v)) => o.bulk_mb = v,
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
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    }
}

/// The service as its own process (`switchyardd service run`), as it is
/// deployed: every row then crosses the same process boundaries.
struct ServiceProcess {
    _child: tokio::process::Child,
    pid: u32,
    addr: std::net::SocketAddr,
    /// The service's TCP (TLS + HTTP/2) listener.
    tcp: std::net::SocketAddr,
    fp: Fingerprint,
}

async fn start_service(dir: &Path, ssh_port: u16) -> ServiceProcess {
    let cheap = KdfParams {
        memory_kib: 256,
        iterations: 1,
        parallelism: 1,
    };
    let db = dir.join("inv.db");
    let mut inv = Inventory::init_with(&db, &Secret::new("admin"), cheap).unwrap();
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
    drop(inv);
    let admin = dir.join("admin-password");
    std::fs::write(&admin, "admin\n").unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyardd"))
        .arg("service")
        .arg("--db")
        .arg(&db)
        .arg("--admin-password-file")
        .arg(&admin)
        .args(["run", "--listen", "127.0.0.1:0", "--name", "bench"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = loop {
        let line = lines.next_line().await.unwrap().expect("service exited");
        if let Ok(v) = serde_json::from_str(&line) {
            break v;
        }
    };
    ServiceProcess {
        pid: child.id().unwrap(),
        _child: child,
        addr: ready["rpc_addr"].as_str().unwrap().parse().unwrap(),
        tcp: ready["tcp_addr"].as_str().unwrap().parse().unwrap(),
        fp: Fingerprint::parse(ready["fingerprint"].as_str().unwrap()).unwrap(),
    }
}

/// The broker's setting for its tokio worker threads, also read by the
/// floor's server.
const THREADS_ENV: &str = "SWITCHYARD_RUNTIME__WORKER_THREADS";

async fn start_broker(dir: &Path, threads: usize) -> (tokio::process::Child, PathBuf) {
    let socket = dir.join("broker.sock");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .arg("broker")
        .arg("--socket")
        .arg(&socket)
        .env(THREADS_ENV, threads.to_string())
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

/// On-CPU time of every thread of `pid` so far (user + system), from
/// `/proc/PID/task/*/schedstat`, which counts nanoseconds.
fn cpu_time(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(ns)
}

/// The processes each overhead phase's CPU time is charged to.
const PROCESSES: [&str; 4] = ["caller", "floor server", "service", "broker"];

fn cpu_times(pids: &[u32; 4]) -> [Duration; 4] {
    pids.map(cpu_time)
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
        max_output_bytes: 0,
        ..Default::default()
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

/// Times `n` runs of `$once` (an expression awaited each time).
macro_rules! timed {
    ($n:expr, $once:expr) => {{
        let mut v = Vec::with_capacity($n);
        for _ in 0..$n {
            let t = Instant::now();
            $once.await;
            v.push(t.elapsed());
        }
        v
    }};
}

/// The broker API's `Exec` alone, served by `S`: the HTTP/2 side of a
/// tonic service, written out for one method (tonic-build would generate
/// the whole `Broker` trait). The floor and the null proxy answer with it.
#[derive(Clone)]
struct ExecOnly<S>(S);

impl<S> tonic::server::NamedService for ExecOnly<S> {
    const NAME: &'static str = "switchyard.v1.Broker";
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>> for ExecOnly<S>
where
    S: tonic::server::ServerStreamingService<pb::ExecRequest, Response = pb::ExecEvent>
        + Clone
        + Send
        + 'static,
    S::ResponseStream: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<tonic::body::Body>) -> Self::Future {
        let method = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != "/switchyard.v1.Broker/Exec" {
                return Ok(tonic::Status::unimplemented("only Exec").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.server_streaming(method, req).await)
        })
    }
}

/// `Exec` answered at once with one canned event.
#[derive(Clone)]
struct CannedExec(pb::ExecEvent);

impl tonic::server::ServerStreamingService<pb::ExecRequest> for CannedExec {
    type Response = pb::ExecEvent;
    type ResponseStream =
        futures::stream::Once<futures::future::Ready<Result<pb::ExecEvent, tonic::Status>>>;
    type Future =
        futures::future::Ready<Result<tonic::Response<Self::ResponseStream>, tonic::Status>>;

    fn call(&mut self, _: tonic::Request<pb::ExecRequest>) -> Self::Future {
        let event = futures::future::ready(Ok(self.0.clone()));
        futures::future::ready(Ok(tonic::Response::new(futures::stream::once(event))))
    }
}

/// `Exec` forwarded to the floor server: a bare tonic proxy, as a control.
/// It puts a third process in the chain with no logic of its own, so its
/// residue (proxy − 2 × floor) is what any process in the middle costs.
#[derive(Clone)]
struct ProxyExec(BrokerClient<Channel>);

impl tonic::server::ServerStreamingService<pb::ExecRequest> for ProxyExec {
    type Response = pb::ExecEvent;
    type ResponseStream = tonic::Streaming<pb::ExecEvent>;
    type Future = tonic::codegen::BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, req: tonic::Request<pb::ExecRequest>) -> Self::Future {
        let mut upstream = self.0.clone();
        Box::pin(async move { upstream.exec(req.into_inner()).await })
    }
}

/// A child process of this bench serving on a Unix socket until killed:
/// the floor (`--floor-server PATH EVENT`) or the null proxy
/// (`--proxy-server PATH UPSTREAM`). Both run on the broker's runtime.
fn serve_child(args: &[String]) -> ! {
    let threads = std::env::var(THREADS_ENV).ok().and_then(|t| t.parse().ok());
    let rt = multi_thread(threads.unwrap_or(0))
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(&args[1]).unwrap();
        let mut server = tonic::transport::Server::builder();
        let router = if args[0] == "--proxy-server" {
            let upstream = switchyard::api::client::connect(Path::new(&args[2]))
                .await
                .unwrap();
            server.add_service(ExecOnly(ProxyExec(upstream)))
        } else {
            use prost::Message;
            let event = hex::decode(&args[2]).unwrap();
            let event = pb::ExecEvent::decode(event.as_slice()).unwrap();
            let (_reporter, health) = tonic_health::server::health_reporter();
            server
                .add_service(health)
                .add_service(ExecOnly(CannedExec(event)))
        };
        println!("ready");
        router
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener))
            .await
            .unwrap();
    });
    std::process::exit(0)
}

/// Starts `serve_child` with `args` and waits until it serves.
async fn start_child(args: &[&std::ffi::OsStr], threads: usize) -> tokio::process::Child {
    let mut process = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env(THREADS_ENV, threads.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(process.stdout.take().unwrap()).lines();
    let ready = lines.next_line().await.unwrap();
    assert_eq!(ready.as_deref(), Some("ready"), "{args:?} did not start");
    process
}

/// The floor: a bare tonic server on a Unix socket, in a child process on
/// the same runtime as the broker. It serves health `Check` (a unary call
/// doing one map lookup) and `Exec`, answered at once with a canned event
/// (the same call, messages and stream shape as a brokered exec, with
/// nothing behind it).
struct TonicFloor {
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    exec: Brokered,
    /// Killed on drop.
    process: tokio::process::Child,
}

impl TonicFloor {
    async fn start(dir: &Path, event: &pb::ExecEvent, threads: usize) -> Self {
        use prost::Message;
        let path = dir.join("floor.sock");
        let event = hex::encode(event.encode_to_vec());
        let args = ["--floor-server".as_ref(), path.as_os_str(), event.as_ref()];
        let process = start_child(&args, threads).await;
        let channel = switchyard::api::client::channel(&path).await.unwrap();
        let mut floor = Self {
            health: tonic_health::pb::health_client::HealthClient::new(channel),
            exec: Brokered::connect(&path, "sim-1").await,
            process,
        };
        for _ in 0..200 {
            floor.unary().await;
        }
        floor
    }

    fn pid(&self) -> u32 {
        self.process.id().unwrap_or(0)
    }

    async fn unary(&mut self) {
        self.health
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
    }
}

/// The control: exec through the null proxy in front of the floor server.
struct NullProxy {
    exec: Brokered,
    /// Killed on drop.
    _process: tokio::process::Child,
}

impl NullProxy {
    async fn start(dir: &Path, threads: usize) -> Self {
        let path = dir.join("proxy.sock");
        let upstream = dir.join("floor.sock");
        let args = [
            "--proxy-server".as_ref(),
            path.as_os_str(),
            upstream.as_os_str(),
        ];
        let _process = start_child(&args, threads).await;
        Self {
            exec: Brokered::connect(&path, "sim-1").await,
            _process,
        }
    }
}

/// A Rust client on its own connection (QUIC, or TCP) to the service (no
/// broker).
struct DirectClient {
    /// The QUIC endpoint (none over TCP).
    _endpoint: Option<quinn::Endpoint>,
    channel: LinkChannel,
}

impl DirectClient {
    async fn connect(addr: std::net::SocketAddr, fp: Fingerprint) -> Self {
        let endpoint = client_endpoint(addr).unwrap();
        let target = DirectTarget {
            label: addr.to_string(),
            addr,
            username: "bench".into(),
            password: Secret::new(PASSWORD),
            fingerprint: Some(fp),
            rpc_url: None,
            proxy: None,
        };
        let limits = TransportLimits::default();
        let conn = connect(&endpoint, &target, &limits).await.unwrap();
        let direct = Self {
            _endpoint: Some(endpoint),
            channel: LinkChannel::Remote {
                conn: conn.conn.clone(),
                target: addr.to_string(),
                max_frame: limits.max_frame,
                liveness: Liveness::on_demand(),
            },
        };
        for _ in 0..200 {
            direct.once().await;
        }
        direct
    }

    /// As `connect`, over TCP to the service's TCP listener at `tcp`.
    async fn connect_tcp(tcp: std::net::SocketAddr, fp: Fingerprint) -> Self {
        let url = format!("https://{tcp}/rpc");
        let target = DirectTarget {
            label: url.clone(),
            addr: tcp,
            username: "bench".into(),
            password: Secret::new(PASSWORD),
            fingerprint: Some(fp),
            rpc_url: Some(switchyard::wire::tcp::RpcUrl::parse(&url).unwrap()),
            proxy: None,
        };
        let limits = TransportLimits::default();
        let conn = switchyard::broker::direct_client::connect_tcp(&target, &limits)
            .await
            .unwrap();
        let direct = Self {
            _endpoint: None,
            channel: LinkChannel::Remote {
                conn: conn.conn.clone(),
                target: url,
                max_frame: limits.max_frame,
                liveness: Liveness::on_demand(),
            },
        };
        for _ in 0..200 {
            direct.once().await;
        }
        direct
    }

    /// `show bulk n` on the simulated device: the output bytes received
    /// (chunks and the device's remainder), read to the call's end.
    async fn bulk(&self, n: usize) -> usize {
        let mut call = self
            .channel
            .call(RequestEnvelope {
                deadline_ms: None,
                request: Request::Exec {
                    devices: vec!["sim-1".into()],
                    commands: vec![format!("show bulk {n}")],
                    timeout_ms: None,
                },
            })
            .await
            .unwrap();
        let mut got = 0;
        while let Some(r) = call.next().await {
            match r.unwrap() {
                Response::ExecOutput { data, .. } => got += data.len(),
                Response::ExecDevice { commands, .. } => {
                    got += commands.iter().map(|c| c.output.len()).sum::<usize>();
                }
                _ => {}
            }
        }
        got
    }

    async fn once(&self) {
        let mut call = self
            .channel
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
    }
}

/// Exec on `device` through the broker (or a server answering for it: the
/// floor, the null proxy), on one gRPC connection.
struct Brokered {
    client: BrokerClient<Channel>,
    device: String,
    /// The named service called.
    name: String,
}

impl Brokered {
    async fn connect(socket: &Path, device: &str) -> Self {
        Self::connect_to(socket, "bench", device).await
    }

    async fn connect_to(socket: &Path, name: &str, device: &str) -> Self {
        let mut brokered = Self {
            client: switchyard::api::client::connect(socket).await.unwrap(),
            device: device.into(),
            name: name.into(),
        };
        for _ in 0..200 {
            brokered.once().await;
        }
        brokered
    }

    async fn once(&mut self) {
        broker_exec(&mut self.client, exec_req(&self.name, &self.device))
            .await
            .unwrap();
    }

    /// One exec's first event, for the floor to answer with.
    async fn sample_event(&mut self) -> pb::ExecEvent {
        let req = exec_req(&self.name, &self.device);
        let mut events = self.client.exec(req).await.unwrap().into_inner();
        let event = events.message().await.unwrap().unwrap();
        while events.message().await.unwrap().is_some() {}
        event
    }
}

/// The broker-overhead rows: the floors, direct and brokered exec measured
/// in interleaved rounds (this VM's speed drifts over seconds, and the
/// overhead is a difference of three figures), with every process's CPU
/// time per call in each phase.
struct Overhead {
    /// Unary floor, exec floor, direct, brokered, null proxy.
    rows: [Stats; 5],
    /// Null proxy − 2 × exec floor p50, per round: the cost of a third
    /// process in the chain with no logic.
    per_round_proxy_us: Vec<f64>,
    /// Brokered − exec floor − direct p50, per round.
    per_round_us: Vec<f64>,
    /// The same against the unary floor.
    per_round_unary_us: Vec<f64>,
    /// CPU µs per call: phase (as `rows`) × [`PROCESSES`].
    cpu_us: [[f64; 4]; 4],
}

impl Overhead {
    /// The broker's CPU per exec beyond its two hops' own work: the exec
    /// floor server's (it serves the same gRPC call) and the direct
    /// caller's (it makes the same QUIC call).
    fn broker_cpu_beyond_hops(&self) -> f64 {
        self.cpu_us[3][3] - self.cpu_us[1][1] - self.cpu_us[2][0]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn overhead(
    dir: &Path,
    socket: &Path,
    service: &ServiceProcess,
    broker_pid: u32,
    samples: usize,
    rounds: usize,
    threads: usize,
) -> Overhead {
    let mut brokered = Brokered::connect(socket, "sim-1").await;
    let event = brokered.sample_event().await;
    let mut floor = TonicFloor::start(dir, &event, threads).await;
    let direct = DirectClient::connect(service.addr, service.fp).await;
    let mut proxy = NullProxy::start(dir, threads).await;
    let pids = [std::process::id(), floor.pid(), service.pid, broker_pid];
    let per = (samples / rounds).max(1);
    let mut all: [Vec<Duration>; 5] = Default::default();
    let (mut per_round_us, mut per_round_unary_us) = (vec![], vec![]);
    let mut per_round_proxy_us = vec![];
    let mut cpu = [[Duration::ZERO; 4]; 4];
    let mut charge = |phase: usize, before: [Duration; 4]| {
        for (i, now) in cpu_times(&pids).into_iter().enumerate() {
            cpu[phase][i] += now.saturating_sub(before[i]);
        }
    };
    for _ in 0..rounds {
        let before = cpu_times(&pids);
        let fu = timed!(per, floor.unary());
        charge(0, before);
        let before = cpu_times(&pids);
        let fe = timed!(per, floor.exec.once());
        charge(1, before);
        let before = cpu_times(&pids);
        let d = timed!(per, direct.once());
        charge(2, before);
        let before = cpu_times(&pids);
        let b = timed!(per, brokered.once());
        charge(3, before);
        let px = timed!(per, proxy.exec.once());
        let p50 = |v: &Vec<Duration>| stats("", v.clone()).p50_us;
        per_round_us.push(p50(&b) - p50(&fe) - p50(&d));
        per_round_unary_us.push(p50(&b) - p50(&fu) - p50(&d));
        per_round_proxy_us.push(p50(&px) - 2.0 * p50(&fe));
        for (pool, v) in all.iter_mut().zip([fu, fe, d, b, px]) {
            pool.extend(v);
        }
    }
    let [fu, fe, d, b, px] = all;
    let calls = (per * rounds) as f64;
    Overhead {
        rows: [
            stats("tonic unary over UDS (health check)", fu),
            stats("tonic exec over UDS, canned (floor)", fe),
            stats("exec, Rust client -> service (no broker)", d),
            stats("exec via broker, in-process simulator", b),
            stats("tonic exec via a null proxy to the floor", px),
        ],
        per_round_proxy_us,
        per_round_us,
        per_round_unary_us,
        cpu_us: cpu.map(|phase| phase.map(|t| t.as_secs_f64() * 1e6 / calls)),
    }
}

async fn through_broker(socket: &Path, device: &str, label: &str, samples: usize) -> Stats {
    let mut brokered = Brokered::connect(socket, device).await;
    stats(label, timed!(samples, brokered.once()))
}

/// Bulk output through one link, per transport: MB/s of `show bulk` on
/// the simulated device, a Rust client straight to the service (no
/// broker, no CLI), one figure per round.
#[derive(Debug, Default, serde::Serialize)]
struct LinkBulk {
    mb: usize,
    quic_mb_s: Vec<f64>,
    tcp_mb_s: Vec<f64>,
}

/// Exec p50 over each transport, direct (a Rust client on its own
/// connection) and through the broker (named services `bench` over QUIC
/// and `bench-tcp` over TCP), in interleaved rounds so drift hits all
/// four rows alike. Rows: direct QUIC, direct TCP, brokered QUIC, brokered
/// TCP. With `bulk_mb` > 0, each round also moves that much output over
/// each direct link (QUIC, then TCP).
async fn transports(
    socket: &Path,
    service: &ServiceProcess,
    samples: usize,
    rounds: usize,
    bulk_mb: usize,
) -> ([Stats; 4], LinkBulk) {
    let quic = DirectClient::connect(service.addr, service.fp).await;
    let tcp = DirectClient::connect_tcp(service.tcp, service.fp).await;
    let mut via_quic = Brokered::connect_to(socket, "bench", "sim-1").await;
    let mut via_tcp = Brokered::connect_to(socket, "bench-tcp", "sim-1").await;
    let per = (samples / rounds).max(1);
    let mut v: [Vec<Duration>; 4] = Default::default();
    let mut bulk = LinkBulk {
        mb: bulk_mb,
        ..Default::default()
    };
    let n = bulk_mb * 1_000_000;
    let mb_s = |t: Instant, got: usize| {
        assert_eq!(got, n, "bulk output bytes");
        n as f64 / t.elapsed().as_secs_f64() / 1e6
    };
    for _ in 0..rounds {
        v[0].extend(timed!(per, quic.once()));
        v[1].extend(timed!(per, tcp.once()));
        v[2].extend(timed!(per, via_quic.once()));
        v[3].extend(timed!(per, via_tcp.once()));
        if n > 0 {
            let t = Instant::now();
            bulk.quic_mb_s.push(mb_s(t, quic.bulk(n).await));
            let t = Instant::now();
            bulk.tcp_mb_s.push(mb_s(t, tcp.bulk(n).await));
        }
    }
    let [a, b, c, d] = v;
    let rows = [
        stats("exec, Rust client -> service, QUIC", a),
        stats("exec, Rust client -> service, TCP", b),
        stats("exec via broker, QUIC link", c),
        stats("exec via broker, TCP link", d),
    ];
    (rows, bulk)
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
                max_output_bytes: 0,
                ..Default::default()
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

/// A multi-thread runtime with `workers` worker threads (0: one per core,
/// as the daemons' `runtime.worker_threads`).
fn multi_thread(workers: usize) -> tokio::runtime::Builder {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        rt.worker_threads(workers);
    }
    rt
}

/// Runs `f` to completion on a runtime of its own, on threads of its own:
/// the timed callers. By default a current-thread runtime, as the CLI's
/// (`switchyard exec`); `--caller-threads N` gives a multi-thread runtime
/// with N workers (0: one per core), as `#[tokio::main]` would. On a
/// multi-thread runtime every answer also wakes a second worker thread,
/// and that CPU comes out of the two cores the other processes share.
fn on_caller_runtime<F: std::future::Future + Send>(threads: usize, f: F) -> F::Output
where
    F::Output: Send,
{
    let run = || {
        let mut rt = match threads {
            1 => tokio::runtime::Builder::new_current_thread(),
            n => multi_thread(n),
        };
        rt.enable_all().build().unwrap().block_on(f)
    };
    tokio::task::block_in_place(|| std::thread::scope(|s| s.spawn(run).join().unwrap()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args
        .iter()
        .position(|a| a == "--floor-server" || a == "--proxy-server")
    {
        serve_child(&args[i..]);
    }
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
        let service = start_service(dir.path(), ssh_port).await;
        let (addr, fp) = (service.addr, service.fp);
        let (broker, socket) = start_broker(dir.path(), o.broker_threads).await;
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

        if o.only.as_deref() == Some("transports") {
            client
                .service_direct(pb::ServiceDirectRequest {
                    name: "bench-tcp".into(),
                    username: "bench".into(),
                    rpc_url: format!("https://{}/rpc", service.tcp),
                    password: PASSWORD.into(),
                    fingerprint: fp.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let (rows, bulk) = on_caller_runtime(o.caller_threads, async {
                transports(&socket, &service, o.samples, o.rounds, o.bulk_mb).await
            });
            println!("\n{:<44} {:>7} {:>9} {:>9} {:>9}", "exec latency", "n", "p50 µs", "p90 µs", "p99 µs");
            for s in &rows {
                println!("{:<44} {:>7} {:>9.0} {:>9.0} {:>9.0}", s.name, s.n, s.p50_us, s.p90_us, s.p99_us);
            }
            println!(
                "TCP / QUIC p50: direct {:.2}x, brokered {:.2}x",
                rows[1].p50_us / rows[0].p50_us,
                rows[3].p50_us / rows[2].p50_us
            );
            if !bulk.quic_mb_s.is_empty() {
                let per_round: Vec<f64> =
                    bulk.tcp_mb_s.iter().zip(&bulk.quic_mb_s).map(|(t, q)| t / q).collect();
                println!(
                    "bulk {} MB through one link (Rust client -> service): QUIC {:.0} MB/s, TCP {:.0} MB/s (medians of {} rounds); TCP / QUIC {:.2}x (median round)",
                    bulk.mb,
                    median(bulk.quic_mb_s.clone()),
                    median(bulk.tcp_mb_s.clone()),
                    bulk.quic_mb_s.len(),
                    median(per_round)
                );
            }
            let json = serde_json::json!({ "rows": rows, "bulk": bulk });
            let _ = std::fs::write("target/bench-transports.json", json.to_string());
            return;
        }
        if let Some(row) = &o.only {
            println!("broker pid {broker_pid}, service pid {}", service.pid);
            let s = on_caller_runtime(o.caller_threads, async {
                match row.as_str() {
                    "direct" => {
                        let direct = DirectClient::connect(addr, fp).await;
                        stats("exec, Rust client -> service", timed!(o.samples, direct.once()))
                    }
                    _ => through_broker(&socket, "sim-1", "exec via broker", o.samples).await,
                }
            });
            println!("{}: p50 {:.0} µs, p90 {:.0} µs, mean {:.0} µs", s.name, s.p50_us, s.p90_us, s.mean_us);
            return;
        }
        let (overhead, mut latency) = on_caller_runtime(o.caller_threads, async {
            let overhead = overhead(
                dir.path(),
                &socket,
                &service,
                broker_pid,
                o.samples,
                o.rounds,
                o.broker_threads,
            )
            .await;
            let mut latency = overhead.rows.to_vec();
            latency.push(through_broker(&socket, "ssh-1", "exec via broker, SSH simulator (warm)", o.samples).await);
            latency.push(inventory_via_broker(&socket, o.samples).await);
            latency.push(status_via_broker(&socket, o.samples).await);
            (overhead, latency)
        });
        // Timed from this process's multi-thread runtime, as in every
        // earlier run: from the callers' current-thread runtime the same
        // command measured 1–1.5 ms slower (spawning and reaping the child
        // there, not the command itself).
        latency.push(cli_process(&socket, o.process_runs).await);
        println!("\n{:<48} {:>7} {:>9} {:>9} {:>9}", "latency", "n", "p50 µs", "p90 µs", "p99 µs");
        for s in &latency {
            println!("{:<48} {:>7} {:>9.0} {:>9.0} {:>9.0}", s.name, s.n, s.p50_us, s.p90_us, s.p99_us);
        }
        let (unary_floor, floor) = (latency[0].p50_us, latency[1].p50_us);
        let logic = median(overhead.per_round_us.clone());
        let logic_unary = median(overhead.per_round_unary_us.clone());
        let rounds = |v: &[f64]| v.iter().map(|u| format!("{u:.0}")).collect::<Vec<_>>().join(" ");
        println!(
            "broker overhead: brokered p50 {:.0} µs = exec floor {floor:.0} + direct {:.0} + broker logic; \
             broker logic per round: {} µs; median {logic:.0} µs ({:.0}% of the floor)",
            latency[3].p50_us,
            latency[2].p50_us,
            rounds(&overhead.per_round_us),
            logic / floor * 100.0
        );
        println!(
            "  against the unary floor ({unary_floor:.0} µs) instead: per round {} µs; median {logic_unary:.0} µs ({:.0}%)",
            rounds(&overhead.per_round_unary_us),
            logic_unary / unary_floor * 100.0
        );
        let proxy_residue = median(overhead.per_round_proxy_us.clone());
        println!(
            "  control, a null tonic proxy in front of the floor (proxy − 2 × floor): per round {} µs; \
             median {proxy_residue:.0} µs — what a third process costs with no logic at all",
            rounds(&overhead.per_round_proxy_us),
        );
        println!("\nCPU µs per call (user + system)  {}", PROCESSES.map(|p| format!("{p:>13}")).join(""));
        let phases = ["floor, unary", "floor, exec", "direct", "brokered"];
        for (phase, row) in phases.iter().zip(&overhead.cpu_us) {
            println!("{phase:<33}{}", row.map(|u| format!("{u:>13.0}")).join(""));
        }
        println!(
            "broker CPU per exec {:.0} µs; beyond its two hops' own work (exec floor server + direct caller): {:.0} µs",
            overhead.cpu_us[3][3],
            overhead.broker_cpu_beyond_hops()
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
        let report = serde_json::json!({
            "latency": latency,
            "broker_logic_us_per_round": overhead.per_round_us,
            "broker_logic_us": logic,
            "broker_logic_vs_unary_floor_us_per_round": overhead.per_round_unary_us,
            "broker_logic_vs_unary_floor_us": logic_unary,
            "null_proxy_residue_us_per_round": overhead.per_round_proxy_us,
            "null_proxy_residue_us": proxy_residue,
            "broker_cpu_us_per_exec": overhead.cpu_us[3][3],
            "cpu_us_per_call": {
                "processes": PROCESSES,
                "floor_unary": overhead.cpu_us[0],
                "floor_exec": overhead.cpu_us[1],
                "direct": overhead.cpu_us[2],
                "brokered": overhead.cpu_us[3],
            },
            "broker_cpu_beyond_hops_us": overhead.broker_cpu_beyond_hops(),
            "load": load,
        });
        let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("bench-broker.json");
        let _ = std::fs::write(&out, serde_json::to_vec_pretty(&report).unwrap());
        println!("results: {}", out.display());
        drop(Arc::new(fleet));
        drop(service);
    });
}
