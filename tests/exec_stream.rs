//! Exec as an ssh user relies on it, end to end through a real broker
//! process, a service on loopback QUIC and a stock OpenSSH device (plus the
//! simulator): every byte kept (`--raw`, `--json`, gRPC), stdout and stderr
//! apart, the command's exit status as the process's, stdin ended at once
//! or forwarded, output streamed as it comes with back-pressure, and the
//! request's overall status.

mod common;

use std::process::Stdio;

use base64::Engine;
use common::broker::{TestBroker, named, run_exec_request};
use common::service::{TestService, sim_device, ssh_device, sshd_device, start_service};
use common::sshd::{Sshd, process_alive, read_pid};
use common::{eventually, within};
use switchyard::api::pb;
use switchyard::service::rpc::RpcConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every byte value once, in order.
fn all_bytes() -> Vec<u8> {
    (0..=255).collect()
}

/// A broker with the named service `lab`: `linux-1` (OpenSSH), `sim-1`
/// and `sim-2` (simulator) and `dead-1` (nothing listens).
struct Lab {
    sshd: Sshd,
    _svc: TestService,
    broker: TestBroker,
}

impl Lab {
    async fn start() -> Self {
        let sshd = Sshd::start(10).await;
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = closed.local_addr().unwrap().port();
        drop(closed);
        let svc = start_service(
            &[
                sshd_device("linux-1", sshd.port),
                sim_device("sim-1"),
                sim_device("sim-2"),
                ssh_device("dead-1", dead_port),
            ],
            RpcConfig::default(),
        );
        let broker = TestBroker::start(&[]).await;
        let out = broker.connect_direct(&svc, "lab", &[]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            sshd,
            _svc: svc,
            broker,
        }
    }

    /// `switchyard exec lab ARGS...`, stdin closed unless the caller says.
    fn exec(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.broker.command();
        cmd.args(["exec", "lab"]).args(args).stdin(Stdio::null());
        cmd
    }

    /// A file on the device side holding every byte value.
    fn bytes_file(&self) -> String {
        let path = self.sshd.scratch().join("bytes");
        std::fs::write(&path, all_bytes()).unwrap();
        path.display().to_string()
    }
}

async fn output(mut cmd: tokio::process::Command) -> std::process::Output {
    within(60, "switchyard exec", cmd.output()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_value_round_trips_through_raw_json_and_grpc() {
    let lab = Lab::start().await;
    let cat = format!("cat {}", lab.bytes_file());
    for (device, command) in [("linux-1", cat.as_str()), ("sim-1", "show bytes")] {
        // --raw: the bytes exactly on stdout, nothing else.
        let out = output(lab.exec(&[device, "-c", command, "--raw"])).await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(out.stdout, all_bytes(), "--raw on {device}");

        // --json: lossy text beside the exact bytes in base64.
        let out = output(lab.exec(&[device, "-c", command, "--json"])).await;
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let report: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        let result = &report["results"][0];
        let exact = base64::engine::general_purpose::STANDARD
            .decode(result["output_base64"].as_str().expect("output_base64"))
            .unwrap();
        assert_eq!(exact, all_bytes(), "--json on {device}");
        assert_eq!(
            result["output"].as_str().unwrap(),
            String::from_utf8_lossy(&all_bytes())
        );
        let summary: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(summary["summary"]["status"], "SUCCESS");

        // gRPC.
        let mut client = lab.broker.client().await;
        let request = pb::ExecRequest {
            service: named("lab"),
            devices: vec![device.into()],
            commands: vec![command.into()],
            ..Default::default()
        };
        let (reports, _) = run_exec_request(&mut client, request).await.unwrap();
        assert_eq!(reports[0].commands[0].raw, all_bytes(), "gRPC on {device}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_mode_keeps_stderr_apart_and_exits_with_the_commands_status() {
    let lab = Lab::start().await;
    let script = "printf 'out\\n'; printf 'err\\n' >&2; exit 3";
    let out = output(lab.exec(&["linux-1", "-c", script, "--raw"])).await;
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(out.status.code(), Some(3));

    // The same apart over gRPC, and the request's status.
    let mut client = lab.broker.client().await;
    let request = pb::ExecRequest {
        service: named("lab"),
        devices: vec!["linux-1".into(), "sim-1".into()],
        commands: vec![script.into()],
        ..Default::default()
    };
    let (reports, summary) = run_exec_request(&mut client, request).await.unwrap();
    let c = &reports[0].commands[0];
    assert_eq!(
        (c.raw.as_slice(), c.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    assert_eq!(c.exit_status, Some(3));
    // linux-1 exits 3, the simulator does not know the command: both fail.
    assert_eq!(summary.status(), pb::ExecStatus::Failure);
    assert_eq!((summary.succeeded, summary.failed), (0, 2));

    // A device that cannot be reached: 255, as ssh.
    let out = output(lab.exec(&["dead-1", "-c", "true", "--raw"])).await;
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("dead-1"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_ends_with_a_summary_line_of_the_requests_status() {
    let lab = Lab::start().await;
    let out = output(lab.exec(&["linux-1", "sim-1", "dead-1", "-c", "show version"])).await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap();
    // linux-1 has no `show` command, dead-1 is down: only sim-1 succeeds.
    assert!(
        last.starts_with("exec: 3 devices: 1 succeeded, 2 failed (partial success) in "),
        "{text}"
    );
    let mut client = lab.broker.client().await;
    let request = pb::ExecRequest {
        service: named("lab"),
        devices: vec!["sim-1".into(), "sim-2".into(), "dead-1".into()],
        commands: vec!["show version".into()],
        ..Default::default()
    };
    let (_, summary) = run_exec_request(&mut client, request).await.unwrap();
    assert_eq!(summary.status(), pb::ExecStatus::PartialSuccess);
    assert_eq!((summary.succeeded, summary.failed), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_input_ends_at_once_unless_stdin_is_forwarded() {
    let lab = Lab::start().await;
    // Our stdin stays open and silent: `cat` must still end (EOF at once),
    // long before its 60 s timeout.
    let mut cmd = lab.exec(&["linux-1", "-c", "cat", "--raw", "--timeout", "60"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let _held_open = child.stdin.take().unwrap();
    let status = within(20, "cat with no input", child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));

    // --stdin forwards every byte, then the end of input.
    let input: Vec<u8> = all_bytes().repeat(4096); // 1 MiB
    let mut cmd = lab.exec(&["linux-1", "-c", "cat", "--raw", "--stdin"]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feed = input.clone();
    let writer = tokio::spawn(async move {
        stdin.write_all(&feed).await.unwrap();
        // Dropping stdin ends the input.
    });
    let out = within(60, "cat with forwarded input", child.wait_with_output())
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == input, "{} bytes back", out.stdout.len());

    // Several devices cannot share one input.
    let out = output(lab.exec(&["linux-1", "sim-1", "-c", "cat", "--stdin"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stdin needs one device"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_reaches_the_caller_while_the_command_still_runs() {
    let lab = Lab::start().await;
    // --raw: the bytes alone, as ssh prints them.
    let (first, rest) = first_output_then_rest(&lab, "raw", &["--raw"]).await;
    assert_eq!(first, b"first\n");
    assert_eq!(rest, b"second\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_devices_text_output_is_printed_as_it_comes_then_its_status() {
    let lab = Lab::start().await;
    let (first, rest) = first_output_then_rest(&lab, "text", &[]).await;
    let first = String::from_utf8(first).unwrap();
    // The command's line, then its first output line, while it runs.
    assert!(first.starts_with("--- echo first;"), "{first}");
    assert!(first.ends_with("\nfirst\n"), "{first}");
    // The rest, then the device's status lines and the summary.
    let rest = String::from_utf8(rest).unwrap();
    assert!(
        rest.starts_with("second\n=== linux-1 [1/1] success\n--- echo first;"),
        "{rest}"
    );
    assert!(
        rest.lines()
            .last()
            .unwrap()
            .starts_with("exec: 1 device: 1 succeeded, 0 failed (success) in "),
        "{rest}"
    );
    // The summary's time covers the whole call, so at least the command's
    // own time (its status line `--- COMMAND [12.3 ms]`); both are rounded
    // to 10 ms at most.
    let command_ms = rest
        .lines()
        .filter(|l| l.starts_with("--- "))
        .filter_map(|l| l.rsplit_once(" ["))
        .filter_map(|(_, d)| duration_ms(d.trim_end_matches(']')))
        .next()
        .unwrap_or_else(|| panic!("no command time in {rest}"));
    let total_ms = rest
        .lines()
        .last()
        .and_then(|l| l.rsplit_once(" in "))
        .and_then(|(_, d)| duration_ms(d))
        .unwrap_or_else(|| panic!("no summary time in {rest}"));
    assert!(
        total_ms + 10.0 >= command_ms,
        "summary {total_ms} ms < command {command_ms} ms: {rest}"
    );
}

/// `12.3 ms` or `1.25 s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text.trim().split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    match unit {
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        _ => None,
    }
}

/// Runs a command on `linux-1` that prints `first`, then waits for a file
/// only this test makes once it has seen that line on the CLI's stdout
/// (so the line must arrive before the command can end), then prints
/// `second`. Returns stdout up to the first line and the rest.
async fn first_output_then_rest(lab: &Lab, tag: &str, args: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let go = lab.sshd.scratch().join(format!("go-{tag}"));
    let script = format!(
        "echo first; while [ ! -e {0} ]; do sleep 0.05; done; echo second",
        go.display()
    );
    let mut cmd = lab.exec(&["linux-1", "-c", &script, "--timeout", "60"]);
    cmd.args(args).stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 64];
    while !seen.ends_with(b"first\n") {
        let n = within(30, "the first line", stdout.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "output ended before the first line: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    assert!(child.try_wait().unwrap().is_none(), "still running");
    std::fs::write(&go, b"").unwrap();
    let mut rest = Vec::new();
    within(30, "the rest", stdout.read_to_end(&mut rest))
        .await
        .unwrap();
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
    (seen, rest)
}

/// Reads a decimal count the device side keeps in `path` (0 before).
fn count(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_stops_reading_stalls_the_device_and_one_that_leaves_stops_it() {
    let lab = Lab::start().await;
    let scratch = lab.sshd.scratch();
    let (blocks, pid_file) = (scratch.join("blocks"), scratch.join("pid"));
    // Writes 64 KiB blocks for ever, counting them on the device side.
    let script = format!(
        "echo $$ > {pid}; i=0; while head -c 65536 /dev/zero; do i=$((i+1)); echo $i > {n}; done",
        pid = pid_file.display(),
        n = blocks.display()
    );
    let mut client = lab.broker.client().await;
    let request = pb::ExecRequest {
        service: named("lab"),
        devices: vec!["linux-1".into()],
        commands: vec![script],
        timeout_ms: 600_000,
        ..Default::default()
    };
    let mut stream = client.exec(request).await.unwrap().into_inner();
    let first = within(30, "first output", stream.message())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.event,
        Some(pb::exec_event::Event::Output(_))
    ));
    // We read no more. Every hop's buffer fills, then the device's writes
    // block: the count stops growing (two readings a second apart agree).
    let mut last = count(&blocks);
    let mut stalled = false;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = count(&blocks);
        if now == last && now > 0 {
            stalled = true;
            break;
        }
        last = now;
    }
    assert!(stalled, "the device kept writing: {last} blocks");
    // Everything in flight is bounded by the hops' windows and queues
    // (QUIC 2 MiB, h2, 64 service events, russh's channel): far below what
    // an unbounded buffer would have taken in that time.
    let held = last * 65536;
    assert!(held < 256 << 20, "{held} bytes left the device unread");

    // The caller goes away: the device's command stops.
    let pid = read_pid(&pid_file).expect("the command's pid");
    assert!(process_alive(pid));
    drop(stream);
    drop(client);
    eventually(15, "the device command stops", || !process_alive(pid)).await;
}
