//! Devices as they really are, through the simulator: a device that refuses
//! exec requests (commands run in a warm shell, prompt-delimited), a login
//! banner, user mode with an enable secret, a pager that must be answered
//! when paging cannot be turned off, and `[confirm]` questions. Outputs are
//! compared byte for byte with the simulator's CLI model.

mod common;

use std::time::Duration;

use common::{init, within};
use switchyard::secret::Secret;
use switchyard::service::drivers::platform::Platform;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{
    CommandError, CommandOutput, DeviceProfile, DeviceTarget, DriverError,
};
use switchyard::service::inventory::{DeviceCredentials, DriverKind, SessionKind};
use switchyard::sim::model::{CliState, Output, SimDevice};
use switchyard::sim::server::{SimFleet, SimFleetConfig};
use switchyard::sim::shell::ShellOptions;

const T: Duration = Duration::from_secs(20);
const BANNER: &str = "Authorised access only\nrouter# is not this device's prompt\n####";

async fn fleet(refuse_exec: bool, shell: ShellOptions) -> SimFleet {
    SimFleet::start(SimFleetConfig {
        count: 1,
        refuse_exec,
        shell,
        ..Default::default()
    })
    .await
    .expect("start simulated devices")
}

fn target(fleet: &SimFleet, platform: Platform, session: SessionKind) -> DeviceTarget {
    let ep = &fleet.endpoints()[0];
    DeviceTarget {
        name: ep.name.clone(),
        host: "127.0.0.1".into(),
        port: ep.port,
        driver: DriverKind::Ssh,
        credentials: DeviceCredentials {
            username: Some("admin".into()),
            password: Some(Secret::new("admin")),
            private_key: None,
            enable_password: None,
        },
        known_host_key: None,
        legacy_algorithms: None,
        profile: DeviceProfile { platform, session },
        jump: None,
    }
}

/// What the simulator's CLI answers, privileged, on an exec channel.
fn model(name: &str, command: &str) -> String {
    match SimDevice::new(name).run(&mut CliState::default(), command) {
        Output::Text { text, .. } => text,
        other => panic!("{command}: not text: {other:?}"),
    }
}

fn cmds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn run(
    pool: &SshPool,
    target: &DeviceTarget,
    commands: &[&str],
) -> Vec<Result<CommandOutput, CommandError>> {
    within(30, "exec", pool.exec(target, &cmds(commands), T))
        .await
        .unwrap_or_else(|e| panic!("exec on {}: {e}", target.name))
        .results
        .into_iter()
        .map(|r| r.outcome)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_refusing_exec_runs_commands_in_one_warm_shell() {
    init();
    let options = ShellOptions {
        banner: Some(BANNER.into()),
        ..Default::default()
    };
    let fleet = fleet(true, options).await;
    let name = fleet.endpoints()[0].name.clone();
    let pool = SshPool::new(SshDriverConfig::default());

    // On exec channels every command is refused (the failing input).
    let exec = target(&fleet, Platform::IosXe, SessionKind::Exec);
    let refused = run(&pool, &exec, &["show version"]).await;
    assert_eq!(refused[0], Err(CommandError::Refused));

    // In a shell (IOS-XE's default) the same commands work, byte for byte.
    let shell = target(&fleet, Platform::IosXe, Platform::IosXe.default_session());
    let out = run(
        &pool,
        &shell,
        &["show version", "show bogus", "sh ip int br"],
    )
    .await;
    let out: Vec<CommandOutput> = out.into_iter().map(|o| o.expect("command ran")).collect();
    assert_eq!(out[0].output, model(&name, "show version"));
    assert_eq!(out[0].exit_status, Some(0));
    assert_eq!(out[1].output, model(&name, "show bogus"));
    assert_eq!(out[1].exit_status, Some(1), "% Invalid input is a failure");
    assert_eq!(out[2].output, model(&name, "show ip interface brief"));
    assert_eq!(fleet.shells_opened(), 1);

    // The shell stays warm: a second exec reuses it.
    let again = run(&pool, &shell, &["show clock"]).await;
    assert_eq!(
        again[0].as_ref().unwrap().output,
        model(&name, "show clock")
    );
    assert_eq!(fleet.shells_opened(), 1, "the warm shell was reused");
    assert_eq!(pool.stats().connects, 1);

    // Bulk output through the shell: every byte, nothing added.
    let bulk = run(&pool, &shell, &["show bulk 1000000"]).await;
    let bulk = bulk[0].as_ref().unwrap();
    assert_eq!(bulk.output.len(), 1_000_000);
    assert!(bulk.output.starts_with("0123456789abc"));

    // Two callers at once: both served, at most a shell each (one command
    // at a time per shell), and the shells stay warm for the next caller.
    let (a, b) = tokio::join!(
        run(&pool, &shell, &["show clock"]),
        run(&pool, &shell, &["show clock"])
    );
    assert!(a[0].is_ok() && b[0].is_ok());
    let opened = fleet.shells_opened();
    assert!(opened <= 2, "{opened} shells for two callers");
    run(&pool, &shell, &["show clock"]).await[0]
        .as_ref()
        .unwrap();
    assert_eq!(fleet.shells_opened(), opened, "a warm shell was reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_secret_reaches_privileged_mode() {
    init();
    let options = ShellOptions {
        enable_secret: Some(Secret::new("en-s3cret")),
        ..Default::default()
    };
    let fleet = fleet(false, options).await;
    let name = fleet.endpoints()[0].name.clone();
    let pool = SshPool::new(SshDriverConfig::default());

    // Unprivileged (an exec channel, or a shell with no secret): the
    // privileged command fails and is reported as failed.
    let exec = target(&fleet, Platform::IosXe, SessionKind::Exec);
    let user = run(&pool, &exec, &["show running-config"]).await;
    let user = user[0].as_ref().unwrap();
    assert!(
        user.output.starts_with("% Invalid input"),
        "{}",
        user.output
    );
    assert_eq!(user.exit_status, Some(1));
    let no_secret = target(&fleet, Platform::IosXe, SessionKind::Shell);
    let user = run(&pool, &no_secret, &["show running-config"]).await;
    assert_eq!(user[0].as_ref().unwrap().exit_status, Some(1));

    // With the secret, the shell enables first.
    let mut privileged = target(&fleet, Platform::IosXe, SessionKind::Shell);
    privileged.credentials.enable_password = Some(Secret::new("en-s3cret"));
    privileged.name = name.clone();
    // Another pool: the first one's warm shell is unprivileged.
    let pool2 = SshPool::new(SshDriverConfig::default());
    let out = run(&pool2, &privileged, &["show running-config"]).await;
    let out = out[0].as_ref().unwrap();
    assert_eq!(out.output, model(&name, "show running-config"));
    assert_eq!(out.exit_status, Some(0));

    // A wrong secret fails the device, naming enable, and is sent once.
    let mut wrong = privileged.clone();
    wrong.credentials.enable_password = Some(Secret::new("nope"));
    let pool3 = SshPool::new(SshDriverConfig::default());
    let err = within(30, "exec", pool3.exec(&wrong, &cmds(&["show clock"]), T))
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Shell { .. }), "{err}");
    assert!(err.to_string().contains("enable secret"), "{err}");
    assert!(
        !err.to_string().contains("nope"),
        "the secret is not in the error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pager_is_answered_when_paging_stays_on() {
    init();
    let options = ShellOptions {
        terminal_length: 4,
        ..Default::default()
    };
    let fleet = fleet(true, options).await;
    let name = fleet.endpoints()[0].name.clone();
    let want = model(&name, "show running-config");
    assert!(want.lines().count() > 12, "several pages");

    // GENERIC has no paging-off command: every --More-- is answered and
    // removed from the output.
    let pool = SshPool::new(SshDriverConfig::default());
    let generic = target(&fleet, Platform::Generic, SessionKind::Shell);
    let out = run(&pool, &generic, &["show running-config", "show clock"]).await;
    assert_eq!(out[0].as_ref().unwrap().output, want);
    assert_eq!(out[1].as_ref().unwrap().output, model(&name, "show clock"));

    // IOS-XE turns paging off first (`terminal length 0`).
    let ios = target(&fleet, Platform::IosXe, SessionKind::Shell);
    let out = run(&pool, &ios, &["show running-config"]).await;
    assert_eq!(out[0].as_ref().unwrap().output, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_questions_take_the_commands_next_line() {
    init();
    let fleet = fleet(true, ShellOptions::default()).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let ios = target(&fleet, Platform::IosXe, SessionKind::Shell);
    let out = run(
        &pool,
        &ios,
        &["clear counters\n", "clear counters", "show clock"],
    )
    .await;
    // Answered with the empty line the command carried.
    let answered = out[0].as_ref().unwrap();
    assert_eq!(
        answered.output,
        "Clear \"show interface\" counters on all interfaces [confirm]\n"
    );
    assert_eq!(answered.exit_status, Some(0));
    // No answer: the command fails naming the question, never hangs ...
    match &out[1] {
        Err(CommandError::Shell(reason)) => assert!(reason.contains("[confirm]"), "{reason}"),
        other => panic!("expected an unanswered question, got {other:?}"),
    }
    // ... and the next command gets a fresh shell.
    assert!(out[2].as_ref().unwrap().output.contains("UTC"));
    assert_eq!(fleet.shells_opened(), 2);
}

/// A warm shell is keyed by a tag of the device's secrets: after `device
/// set` changes the password, the next command does not use the shell
/// logged in with the old one (nor its SSH connection), so a wrong new
/// password fails at once instead of riding on the old login; the old
/// secret finds its own warm shell again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_is_not_served_by_an_old_warm_shell() {
    init();
    let fleet = fleet(true, ShellOptions::default()).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let good = target(&fleet, Platform::IosXe, SessionKind::Shell);
    run(&pool, &good, &["show clock"]).await[0]
        .as_ref()
        .unwrap();
    assert_eq!(fleet.shells_opened(), 1);

    let mut changed = good.clone();
    changed.credentials.password = Some(Secret::new("not-the-password"));
    let err = within(30, "exec", pool.exec(&changed, &cmds(&["show clock"]), T))
        .await
        .expect_err("the new, wrong password is used");
    assert!(
        matches!(err, DriverError::AuthenticationFailed { .. }),
        "{err}"
    );
    assert_eq!(fleet.shells_opened(), 1, "no shell for a refused login");

    // The old password again: its warm shell is still there.
    run(&pool, &good, &["show clock"]).await[0]
        .as_ref()
        .unwrap();
    assert_eq!(fleet.shells_opened(), 1, "the old warm shell was reused");
    assert_eq!(pool.stats().connects, 1);
}
