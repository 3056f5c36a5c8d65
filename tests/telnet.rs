//! Devices reachable only by Telnet: a real Debian `inetutils-telnetd`
//! (login through the system's `login` as the test account), exec and a
//! terminal through the broker; a refused login names the device; a
//! black-holed Telnet device ends at the call's timeout. The simulator's
//! Telnet listener for network-device behaviour: banner, `Username:` /
//! `Password:`, enable, a pager; outputs byte for byte the CLI model's.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::broker::{TestBroker, named, run_exec};
use common::service::start_service;
use common::sshd::{TEST_PASSWORD, TEST_USER};
use common::telnetd::Telnetd;
use common::{init, within};
use switchyard::secret::Secret;
use switchyard::service::drivers::platform::Platform;
use switchyard::service::drivers::ssh::SshDriverConfig;
use switchyard::service::drivers::{DeviceProfile, DeviceTarget, DriverError, Drivers};
use switchyard::service::inventory::{DeviceCredentials, DriverKind, NewDevice, SessionKind};
use switchyard::service::rpc::RpcConfig;
use switchyard::sim::model::{CliState, Output, SimDevice};
use switchyard::sim::server::{SimFleet, SimFleetConfig};
use switchyard::sim::shell::ShellOptions;

fn telnet_device(name: &str, port: u16) -> NewDevice {
    NewDevice {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        device_type: "LINUX".into(),
        driver: DriverKind::Telnet,
        attributes: BTreeMap::new(),
        username: Some(TEST_USER.into()),
        password: Some(Secret::new(TEST_PASSWORD)),
        private_key: None,
        legacy_algorithms: None,
        enable_password: None,
        session: None,
    }
}

fn target(name: &str, port: u16, password: &str) -> DeviceTarget {
    DeviceTarget {
        driver: DriverKind::Telnet,
        profile: DeviceProfile {
            platform: Platform::Linux,
            session: SessionKind::Exec,
        },
        ..common::loopback_device(name, port, TEST_USER, password)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_terminal_on_a_real_telnetd_through_the_broker() {
    let telnetd = Telnetd::start().await;
    let svc = start_service(
        &[telnet_device("old-1", telnetd.port)],
        RpcConfig::default(),
    );
    let broker = TestBroker::start(&[]).await;
    let mut c = broker.client_with_named(&svc, "lab").await;

    let out = run_exec(&mut c, named("lab"), &["old-1"], &["echo hi", "id"])
        .await
        .unwrap();
    let report = &out[0];
    report.ok_output();
    assert_eq!(report.commands[0].output, "hi\n", "{report:?}");
    assert!(report.commands[1].output.starts_with("uid="), "{report:?}");
    assert!(
        report.commands[1]
            .output
            .contains(&format!("({TEST_USER})")),
        "{report:?}"
    );
    // The shell stays warm: a second exec does not log in again.
    let again = run_exec(&mut c, named("lab"), &["old-1"], &["echo again"])
        .await
        .unwrap();
    assert_eq!(again[0].ok_output(), "again\n");
    assert_eq!(telnetd.accepted(), 1, "one Telnet connection, reused");

    // A terminal: logged in with the stored credentials, then the
    // caller's keystrokes.
    let mut child = broker
        .command()
        .args(["terminal", "lab", "old-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Type only once the shell prompt shows (keystrokes end the automated
    // login).
    let mut screen = Vec::new();
    common::read_screen_until(
        &mut stdout,
        &mut screen,
        30,
        "the terminal's shell prompt",
        |s| s.trim_end().ends_with('$'),
    )
    .await;
    // `exit` only once the output is back: inetutils-telnetd ends the
    // session when the shell exits, and may drop what the shell wrote
    // just before (seen: `echo` and `exit` typed together lost the echo).
    stdin.write_all(b"echo tele$((40+2))\r").await.unwrap();
    common::read_screen_until(&mut stdout, &mut screen, 30, "the command's output", |s| {
        s.contains("tele42")
    })
    .await;
    stdin.write_all(b"exit\r").await.unwrap();
    within(30, "terminal session", stdout.read_to_end(&mut screen))
        .await
        .unwrap();
    let status = within(30, "terminal exit", child.wait()).await.unwrap();
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen:?}");
    assert!(screen.contains("login: "), "{screen:?}");
    assert!(screen.contains("tele42"), "{screen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_an_authentication_error_naming_the_device() {
    init();
    let telnetd = Telnetd::start().await;
    let drivers = Drivers::new(SshDriverConfig {
        connect_timeout: Duration::from_secs(20),
        ..Default::default()
    });
    let err = within(
        40,
        "exec",
        drivers.exec(
            &target("old-2", telnetd.port, "not-the-password"),
            &["id".to_string()],
            Some(Duration::from_secs(20)),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DriverError::AuthenticationFailed { ref device, .. } if device == "old-2"),
        "{err}"
    );
    assert!(err.to_string().contains("old-2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_telnet_device_ends_at_the_calls_timeout() {
    init();
    // Accepts and then says nothing, ever.
    let (port, _hold) = common::silent_listener().await;
    let drivers = Drivers::new(SshDriverConfig {
        connect_timeout: Duration::from_secs(60),
        ..Default::default()
    });
    let started = Instant::now();
    let err = within(
        30,
        "exec",
        drivers.exec(
            &target("silent-1", port, "x"),
            &["id".to_string()],
            Some(Duration::from_secs(2)),
        ),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert!(err.to_string().contains("silent-1"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(8),
        "ended after {took:?}, not at the 2 s timeout: {err}"
    );
}

/// What the simulator's CLI answers, privileged.
fn model(name: &str, command: &str) -> String {
    match SimDevice::new(name).run(&mut CliState::default(), command) {
        Output::Text { text, .. } => text,
        other => panic!("{command}: not text: {other:?}"),
    }
}

/// `commands` run on `target` through `drivers`: each one's output, all
/// having run.
async fn outputs(
    drivers: &Drivers,
    target: &DeviceTarget,
    commands: &[&str],
) -> Vec<switchyard::service::drivers::CommandOutput> {
    let commands: Vec<String> = commands.iter().map(|c| c.to_string()).collect();
    let run = within(30, "exec", drivers.exec(target, &commands, None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    run.results
        .into_iter()
        .map(|r| r.outcome.unwrap())
        .collect()
}

fn sim_target(fleet: &SimFleet, platform: Platform, password: &str) -> DeviceTarget {
    let ep = &fleet.endpoints()[0];
    DeviceTarget {
        name: ep.name.clone(),
        host: "127.0.0.1".into(),
        port: ep.telnet_port.expect("the fleet listens for Telnet"),
        driver: DriverKind::Telnet,
        credentials: DeviceCredentials {
            username: Some("admin".into()),
            password: Some(Secret::new(password)),
            private_key: None,
            enable_password: Some(Secret::new("en-s3cret")),
        },
        known_host_key: None,
        legacy_algorithms: None,
        profile: DeviceProfile {
            platform,
            session: SessionKind::Exec,
        },
        jump: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_over_telnet_logs_in_enables_and_pages() {
    init();
    let fleet = SimFleet::start(SimFleetConfig {
        telnet: true,
        shell: ShellOptions {
            banner: Some("Authorised access only\nUsername: is not a prompt here".into()),
            enable_secret: Some(Secret::new("en-s3cret")),
            terminal_length: 4,
        },
        ..Default::default()
    })
    .await
    .unwrap();
    let name = fleet.endpoints()[0].name.clone();
    let want = model(&name, "show running-config");
    assert!(want.lines().count() > 12, "several pages");
    let drivers = Drivers::new(SshDriverConfig::default());
    let cmds = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // IOS-XE: login, enable with the secret, paging off; privileged output.
    let ios = sim_target(&fleet, Platform::IosXe, "admin");
    let out = outputs(&drivers, &ios, &["show running-config", "show bogus"]).await;
    assert_eq!(out[0].output, want);
    assert_eq!(out[0].exit_status, Some(0));
    assert_eq!(out[1].output, model(&name, "show bogus"));
    assert_eq!(out[1].exit_status, Some(1), "% Invalid input is a failure");
    assert_eq!(fleet.shells_opened(), 1);

    // GENERIC turns nothing off and does not enable: the pager is answered
    // and removed; `show clock` needs no privilege.
    let mut generic = sim_target(&fleet, Platform::Generic, "admin");
    generic.credentials.enable_password = None;
    let out = outputs(&drivers, &generic, &["show interfaces", "show clock"]).await;
    let interfaces = model(&name, "show interfaces");
    assert!(interfaces.lines().count() > 4, "more than a page");
    assert_eq!(out[0].output, interfaces);
    assert_eq!(out[1].output, model(&name, "show clock"));

    // A wrong password (another driver set: this one's shells are warm):
    // an authentication error naming the device.
    let wrong = sim_target(&fleet, Platform::IosXe, "wrong");
    let fresh = Drivers::new(SshDriverConfig::default());
    let err = within(30, "exec", fresh.exec(&wrong, &cmds(&["show clock"]), None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DriverError::AuthenticationFailed { ref device, .. } if *device == name),
        "{err}"
    );
}
