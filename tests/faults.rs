//! Faults under load, with real processes on loopback: a service, a relay
//! (`switchyard relay run`) and a broker killed with SIGKILL (with and
//! without a restart on the same addresses), a restarted service resetting
//! an idle link, and a silent partition (the service's UDP dropped by
//! nftables inside a network namespace the test makes). The liveness bound
//! these check is the README's: a call waits at most 3 s for a peer that
//! went silent (`wire::liveness`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::broker::{TestBroker, named, status};
use common::cloud::{ALICE, CloudService, TestRelay, broker_for, token_login};
use common::process::{Netns, ServiceProcess};
use common::{eventually, within};
use switchyard::api::pb;
use tonic::Code;
use tonic::transport::Channel;

/// The documented bound (README, "Dead peers").
const BOUND: Duration = Duration::from_secs(3);
/// Slack on top of it for a loaded test machine (still far below the 30 s
/// QUIC idle timeout that was the only detection before).
const SLACK: Duration = Duration::from_secs(3);
/// How soon after the service is back a call must succeed (README), plus
/// slack for a loaded machine.
const BACK_WITHIN: Duration = Duration::from_secs(2);
const BACK_SLACK: Duration = Duration::from_secs(1);
const CALLERS: usize = 20;
/// How soon calls in flight must fail when the broker itself dies (its
/// socket closes: no liveness bound involved), with slack.
const AT_ONCE: Duration = Duration::from_secs(2);

/// The tests here measure time under load of their own: one at a time
/// (a tokio mutex: it works across the tests' runtimes and is not poisoned
/// by a failed test).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One call a caller made.
#[derive(Debug, Clone)]
struct Outcome {
    caller: usize,
    started: Instant,
    ended: Instant,
    /// `Ok(bytes of output)` or the gRPC error.
    result: Result<u64, (Code, String)>,
    /// The output length asked for (`show bulk N`): a lost or duplicated
    /// result shows as another length.
    asked: u64,
}

/// An exec of `show bulk n` on core-1, returning the output's length;
/// bounded at 60 s so a wedged call shows up as a long duration, not a
/// hung test.
async fn bulk_exec(
    client: &mut pb::broker_client::BrokerClient<Channel>,
    n: u64,
) -> Result<u64, (Code, String)> {
    let call = async {
        let mut stream = client
            .exec(pb::ExecRequest {
                service: named("lab"),
                devices: vec!["core-1".into()],
                commands: vec![format!("show bulk {n}")],
                timeout_ms: 0,
                max_output_bytes: 0,
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut got = 0u64;
        let mut device_error = String::new();
        while let Some(event) = stream.message().await? {
            match event.event {
                Some(pb::exec_event::Event::Output(o)) => got += o.data.len() as u64,
                Some(pb::exec_event::Event::DeviceResult(r)) => {
                    got += r
                        .commands
                        .iter()
                        .map(|c| c.output.len() as u64)
                        .sum::<u64>();
                    device_error = r.error;
                }
                _ => {}
            }
        }
        if device_error.is_empty() {
            Ok(got)
        } else {
            Err(tonic::Status::internal(format!(
                "device error: {device_error}"
            )))
        }
    };
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(status)) => {
            // The message and every cause under it (tonic keeps the
            // transport's reason there).
            let mut message = status.message().to_string();
            let mut cause = std::error::Error::source(&status);
            while let Some(err) = cause {
                message.push_str(&format!(": {err}"));
                cause = err.source();
            }
            Err((status.code(), message))
        }
        Err(_) => Err((Code::DeadlineExceeded, "no answer in 60 s".into())),
    }
}

/// `CALLERS` tasks calling exec in a loop until stopped; each records
/// every call.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(broker: &TestBroker) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for caller in 0..CALLERS {
            let mut client = broker.client().await;
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            tasks.push(tokio::spawn(async move {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    k += 1;
                    let asked = 1000 + caller as u64 * 1000 + k % 997;
                    let started = Instant::now();
                    let result = bulk_exec(&mut client, asked).await;
                    let failed = result.is_err();
                    outcomes.lock().unwrap().push(Outcome {
                        caller,
                        started,
                        ended: Instant::now(),
                        result,
                        asked,
                    });
                    if failed {
                        // Pacing, not synchronization: a failed call is
                        // retried as a client would, without spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }));
        }
        Self {
            stop,
            outcomes,
            tasks,
        }
    }

    fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits until every caller has had a success ending after `after`.
    async fn until_each_succeeds_after(&self, after: Instant, secs: u64, what: &str) {
        self.until_each_ends_after(after, true, secs, what).await;
    }

    /// Waits until every caller has had a failure ending after `after`.
    async fn until_each_fails_after(&self, after: Instant, secs: u64, what: &str) {
        self.until_each_ends_after(after, false, secs, what).await;
    }

    /// Waits until every caller has had a call ending after `after` that
    /// succeeded (`ok`) or failed.
    async fn until_each_ends_after(&self, after: Instant, ok: bool, secs: u64, what: &str) {
        let outcomes = self.outcomes.clone();
        eventually(secs, what, || {
            let seen = outcomes.lock().unwrap();
            (0..CALLERS).all(|c| {
                seen.iter()
                    .any(|o| o.caller == c && o.ended > after && o.result.is_ok() == ok)
            })
        })
        .await;
    }

    /// Waits until some call started more than `after` + `later`.
    async fn until_calls_start_after(&self, after: Instant, later: Duration, what: &str) {
        let outcomes = self.outcomes.clone();
        eventually(30, what, || {
            outcomes
                .lock()
                .unwrap()
                .iter()
                .any(|o| o.started > after + later)
        })
        .await;
    }

    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            within(90, "callers to stop", task).await.unwrap();
        }
        self.outcomes.lock().unwrap().clone()
    }
}

/// Every call ended within the bound (plus slack), every success carried
/// exactly the output asked for, every failure was `UNAVAILABLE`.
fn assert_bounded_and_exact(outcomes: &[Outcome], log: &str) {
    assert_bounded_and_exact_but(outcomes, log, |_| false);
}

/// As [`assert_bounded_and_exact`], with `also_ok` telling which other
/// failures are expected.
fn assert_bounded_and_exact_but(
    outcomes: &[Outcome],
    log: &str,
    also_ok: impl Fn(&Outcome) -> bool,
) {
    assert!(!outcomes.is_empty());
    for o in outcomes {
        let took = o.ended - o.started;
        assert!(
            took <= BOUND + SLACK,
            "caller {} waited {took:?} (bound {BOUND:?} + {SLACK:?}): {:?}\n{log}",
            o.caller,
            o.result
        );
        match &o.result {
            Ok(got) => assert_eq!(
                *got, o.asked,
                "caller {}: a result lost or duplicated ({got} bytes for {})",
                o.caller, o.asked
            ),
            Err((code, message)) => assert!(
                *code == Code::Unavailable || also_ok(o),
                "caller {}: {code:?} {message}\n{log}",
                o.caller
            ),
        }
    }
}

/// The first success that started after `back`, as time since `back`.
fn first_success_after(outcomes: &[Outcome], back: Instant) -> Option<Duration> {
    outcomes
        .iter()
        .filter(|o| o.result.is_ok() && o.started >= back)
        .map(|o| o.ended - back)
        .min()
}

async fn broker_with_lab(svc: &ServiceProcess, prefix: &[&str]) -> TestBroker {
    let (broker, _) = TestBroker::start_via(prefix, &[], &[]).await;
    broker
        .client()
        .await
        .service_direct(svc.service_ref("lab"))
        .await
        .unwrap();
    broker
}

/// A service process (inside `netns` if given), a broker with it as the
/// named service `lab`, and the callers, each past its first success.
async fn lab_under_load(netns: Option<&Netns>) -> (ServiceProcess, TestBroker, Load) {
    let mut svc = ServiceProcess::new(netns.map(|ns| ns.0.clone()));
    svc.start().await;
    let prefix = netns.map(|ns| ns.prefix());
    let broker = broker_with_lab(&svc, prefix.as_ref().map_or(&[][..], |p| &p[..])).await;
    let load = Load::start(&broker).await;
    load.until_each_succeeds_after(Instant::now(), 30, "every caller's first success")
        .await;
    (svc, broker, load)
}

/// A process the tests kill and start again on the same addresses.
trait Peer {
    async fn kill(&mut self);
    async fn restart(&mut self);
    fn log(&self) -> String;
}

impl Peer for ServiceProcess {
    async fn kill(&mut self) {
        ServiceProcess::kill(self).await
    }
    async fn restart(&mut self) {
        self.start().await;
    }
    fn log(&self) -> String {
        ServiceProcess::log(self)
    }
}

impl Peer for TestRelay {
    async fn kill(&mut self) {
        TestRelay::kill(self).await
    }
    async fn restart(&mut self) {
        TestRelay::restart(self).await
    }
    fn log(&self) -> String {
        TestRelay::log(self)
    }
}

/// `peer` SIGKILLed under `load`, down for a second (long enough for calls
/// to pile up on the dead connection), started again: every call ended
/// within the bound with its exact result or `UNAVAILABLE`, every caller
/// succeeds again, the first within 2 s (plus slack) of the peer's return.
async fn killed_and_restarted(peer: &mut impl Peer, broker: &TestBroker, load: Load) {
    peer.kill().await;
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    peer.restart().await;
    let back = Instant::now();
    load.until_each_succeeds_after(back, 30, "every caller's success after the restart")
        .await;
    let outcomes = load.finish().await;
    let logs = format!("broker:\n{}\npeer:\n{}", broker.log(), peer.log());
    assert_bounded_and_exact(&outcomes, &logs);
    let first = first_success_after(&outcomes, back).expect("a success after the restart");
    assert!(
        first <= BACK_WITHIN + BACK_SLACK,
        "first success {first:?} after the peer was back\n{logs}"
    );
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let hit = outcomes
        .iter()
        .filter(|o| o.started <= killed && o.ended >= killed)
        .count();
    eprintln!(
        "{} calls, {failed} failed (UNAVAILABLE), {hit} in flight at the kill; first success {first:?} after the restart",
        outcomes.len()
    );
}

/// `peer` SIGKILLed under `load` for good: calls keep coming for twice the
/// bound; those on the dead connection and those after it was found dead
/// all fail within the bound, and nothing answers.
async fn killed_for_good(peer: &mut impl Peer, broker: &TestBroker, load: Load) {
    peer.kill().await;
    let killed = Instant::now();
    load.until_calls_start_after(killed, 2 * BOUND, "calls starting well after the kill")
        .await;
    let outcomes = load.finish().await;
    assert_bounded_and_exact(&outcomes, &broker.log());
    let after: Vec<_> = outcomes.iter().filter(|o| o.started > killed).collect();
    assert!(
        after.iter().all(|o| o.result.is_err()),
        "nothing answers a dead peer"
    );
    let waited = after
        .iter()
        .filter(|o| o.ended - o.started > Duration::from_secs(1))
        .count();
    eprintln!(
        "{} calls after the kill, all UNAVAILABLE; {waited} waited over 1 s (those on the dead connection)",
        after.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_under_load_and_restarted_loses_nothing_and_recovers_at_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut svc, broker, load) = lab_under_load(None).await;
    killed_and_restarted(&mut svc, &broker, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_killed_for_good_fails_every_call_within_the_bound() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut svc, broker, load) = lab_under_load(None).await;
    killed_for_good(&mut svc, &broker, load).await;
}

/// A relay process, a service enrolled with it as `serial` (in this
/// process), a broker logged in with alice's token (stored: the caller's
/// own login) with the service as the named service `lab`, and the
/// callers, each past its first success.
async fn cloud_lab_under_load(serial: &str) -> (TestRelay, CloudService, TestBroker, Load) {
    let relay = TestRelay::start_process(&[]).await;
    let svc = CloudService::start(&relay, serial, &[]).await;
    let broker = broker_for(&relay).await;
    let mut client = broker.client().await;
    token_login(&mut client, "", &relay.token(ALICE))
        .await
        .unwrap();
    connect_cloud_lab(&mut client, serial).await;
    let load = Load::start(&broker).await;
    load.until_each_succeeds_after(Instant::now(), 30, "every caller's first success")
        .await;
    (relay, svc, broker, load)
}

/// `connect cloud lab --serial SERIAL`, then waits until it answers.
async fn connect_cloud_lab(client: &mut pb::broker_client::BrokerClient<Channel>, serial: &str) {
    client
        .service_cloud(pb::ServiceCloudRequest {
            name: "lab".into(),
            serial: serial.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    within(
        20,
        "lab reachable",
        client.wait(pb::WaitRequest {
            service: named("lab"),
            timeout_secs: 15.0,
        }),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_under_load_and_restarted_loses_nothing_and_recovers_at_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut relay, _svc, broker, load) = cloud_lab_under_load("SN-FAULT-R1").await;
    killed_and_restarted(&mut relay, &broker, load).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_for_good_fails_every_call_within_the_bound() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut relay, _svc, broker, load) = cloud_lab_under_load("SN-FAULT-R2").await;
    killed_for_good(&mut relay, &broker, load).await;
}

/// `switchyard ARGS` against `broker`, bounded by `secs`.
async fn run_cli(
    broker: &TestBroker,
    args: &[&str],
    secs: u64,
    what: &str,
) -> std::process::Output {
    within(secs, what, broker.command().args(args).output())
        .await
        .unwrap()
}

/// The broker SIGKILLed under load: every caller (gRPC clients made
/// before the kill) fails at once, and so does the CLI, saying the broker
/// is not running at its socket; after a restart on the same socket the
/// stored login is back, `connect cloud` needs no new login, and the same
/// clients work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_under_load_fails_clients_at_once_and_serves_them_after_a_restart() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let serial = "SN-FAULT-B";
    let (_relay, _svc, mut broker, load) = cloud_lab_under_load(serial).await;

    broker.kill().await;
    let killed = Instant::now();
    load.until_each_fails_after(killed, 10, "every caller's failure after the kill")
        .await;
    let started = Instant::now();
    let cli = run_cli(
        &broker,
        &["exec", "lab", "core-1", "-c", "show version"],
        10,
        "the CLI against a killed broker",
    )
    .await;
    let cli_took = started.elapsed();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(!cli.status.success(), "{stderr}");
    assert!(
        stderr.contains("not running") && stderr.contains(broker.socket().to_str().unwrap()),
        "{stderr}"
    );
    assert!(cli_took <= BOUND, "the CLI took {cli_took:?} to fail");

    let restarting = Instant::now();
    broker.restart().await;
    let back = Instant::now();
    let s = status(&broker).await;
    assert!(
        s.logins
            .iter()
            .any(|l| l.identity == ALICE && l.method == "token"),
        "the stored login was not restored: {:?}",
        s.logins
    );
    // `connect cloud` with the restored login (the CLI has none to give).
    let connect = run_cli(
        &broker,
        &["connect", "cloud", "lab", "--serial", serial],
        30,
        "connect cloud after the restart",
    )
    .await;
    assert!(connect.status.success(), "{connect:?}\n{}", broker.log());
    load.until_each_succeeds_after(back, 30, "every caller's success after the restart")
        .await;
    let outcomes = load.finish().await;
    // Calls in flight at the kill: tonic reports a connection lost under
    // a call as `Unknown: transport error` with the reason among its
    // causes, and calls it had queued on that connection as `Cancelled`.
    // The reason names the lost broker whether the client's read or its
    // write found the socket closed (a write error used to reach the
    // calls as h2's "stream closed because of a broken pipe").
    let lost = |o: &Outcome| {
        o.started <= killed
            && matches!(&o.result, Err((Code::Unknown, m)) if m.contains("lost the broker at"))
            || matches!(&o.result, Err((Code::Cancelled, _)))
    };
    // Between the restart and `connect cloud`, `lab` is not known yet.
    let not_yet = |o: &Outcome| o.started > killed && matches!(o.result, Err((Code::NotFound, _)));
    assert_bounded_and_exact_but(&outcomes, &broker.log(), |o| lost(o) || not_yet(o));
    // A dead broker answers nothing: no call started after it was gone
    // (and before the restart) succeeds. A call in flight at the kill may
    // still succeed if the broker had sent its whole answer before dying
    // (read after `killed`; `assert_bounded_and_exact_but` checked it is
    // exact), else it fails at once.
    for o in outcomes
        .iter()
        .filter(|o| o.started >= killed && o.started < restarting)
    {
        assert!(
            o.result.is_err(),
            "caller {}: answered by a dead broker",
            o.caller
        );
    }
    for o in outcomes
        .iter()
        .filter(|o| o.started <= killed && o.ended >= killed)
    {
        assert!(
            o.ended - killed <= AT_ONCE,
            "caller {}'s call in flight failed {:?} after the kill",
            o.caller,
            o.ended - killed
        );
    }
    // While it was down, a call said where the broker should be.
    assert!(
        outcomes.iter().any(|o| matches!(&o.result,
            Err((Code::Unavailable, m)) if m.contains("the broker is not running at"))),
        "no caller was told the broker is not running"
    );
    let cli = run_cli(
        &broker,
        &["exec", "lab", "core-1", "-c", "show version"],
        30,
        "the CLI after the restart",
    )
    .await;
    let stdout = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{cli:?}");
    assert!(stdout.contains("Simulated Network OS"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_resets_an_idle_link_at_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut svc = ServiceProcess::new(None);
    svc.start().await;
    let broker = broker_with_lab(&svc, &[]).await;
    let mut client = broker.client().await;
    assert_eq!(bulk_exec(&mut client, 100).await, Ok(100));
    assert_eq!(status(&broker).await.links[0].connects, 1);

    // Killed and back at once: no call waits, so only the restarted
    // service can tell the link its connection is gone, by a stateless
    // reset (its key is derived from the service's TLS key, so the new
    // process answers the old connection's keep-alives with one).
    svc.kill().await;
    svc.start().await;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(10);
    loop {
        let s = status(&broker).await;
        if s.links[0].connects >= 2 && s.links[0].state == "up" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the link did not notice the restart: {:?}\nbroker:\n{}\nservice:\n{}",
            s.links[0],
            broker.log(),
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = back.elapsed();
    assert!(
        took <= BOUND,
        "the link noticed the restart only after {took:?}\n{}",
        broker.log()
    );
    assert!(
        broker.log().contains("reset by peer"),
        "the old connection ended by a stateless reset\n{}",
        broker.log()
    );
    assert_eq!(bulk_exec(&mut client, 100).await, Ok(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_partition_fails_calls_within_the_bound_and_heals() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(ns) = Netns::create() else {
        return;
    };
    // Broker and service both inside the namespace (its own loopback);
    // the callers reach the broker by its socket's path.
    let (svc, broker, load) = lab_under_load(Some(&ns)).await;
    let addr = svc.addr.unwrap();

    // The partition: every UDP packet to or from the service dropped,
    // silently (no ICMP, no reset: a host that vanished).
    let port = addr.port().to_string();
    ns.run(&["nft", "add", "table", "inet", "faults"]);
    let chain = ["nft", "add", "chain", "inet", "faults", "drop_service"];
    ns.run(&[&chain[..], &["{ type filter hook output priority 0 ; }"]].concat());
    let rule = [
        "nft",
        "add",
        "rule",
        "inet",
        "faults",
        "drop_service",
        "udp",
    ];
    for direction in ["dport", "sport"] {
        ns.run(&[&rule[..], &[direction, port.as_str(), "drop"]].concat());
    }
    let cut = Instant::now();
    load.until_calls_start_after(cut, 2 * BOUND, "calls starting well after the partition")
        .await;
    let during = load.snapshot();
    assert!(
        during
            .iter()
            .filter(|o| o.started > cut + BOUND)
            .all(|o| o.result.is_err()),
        "nothing gets through the partition"
    );

    // Healed: the link finds the service again by itself.
    ns.run(&["nft", "delete", "table", "inet", "faults"]);
    let healed = Instant::now();
    load.until_each_succeeds_after(healed, 30, "every caller's success after the partition")
        .await;
    let outcomes = load.finish().await;
    assert_bounded_and_exact(&outcomes, &broker.log());
    let first = first_success_after(&outcomes, healed).expect("a success after healing");
    assert!(
        first <= BACK_WITHIN + BACK_SLACK,
        "first success {first:?} after the partition healed\n{}",
        broker.log()
    );
    drop(svc);
    drop(broker);
}
