//! The SSH driver against a real OpenSSH server started by the test.

mod common;

use std::time::Duration;

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER, endless_command, read_pid};
use common::{eventually, init, key_body, within};
use switchyard::secret::Secret;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{CommandError, DeviceTarget, DriverError};
use switchyard::service::inventory::{DeviceCredentials, DriverKind};

fn target(port: u16, password: &str) -> DeviceTarget {
    common::loopback_device("linux-1", port, TEST_USER, password)
}

fn cmds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

const T: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_output_exit_status_and_learns_host_key() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let exec = within(
        30,
        "exec",
        pool.exec(
            &target(sshd.port, TEST_PASSWORD),
            &cmds(&["echo hello", "echo oops >&2; exit 3"]),
            T,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    let first = exec.results[0].outcome.as_ref().unwrap();
    assert_eq!(first.output, "hello\n");
    assert_eq!(first.exit_status, Some(0));
    let second = exec.results[1].outcome.as_ref().unwrap();
    assert_eq!(second.output, "oops\n");
    assert_eq!(second.exit_status, Some(3));
    let learned = exec
        .learned_host_key
        .expect("first contact records the key");
    assert_eq!(key_body(&learned), key_body(&sshd.host_public_key()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_key_authentication() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let mut t = target(sshd.port, "");
    t.credentials.password = None;
    t.credentials.private_key = Some(Secret::new(sshd.client_private_key()));
    let exec = within(30, "exec", pool.exec(&t, &cmds(&["id -un"]), T))
        .await
        .unwrap();
    assert_eq!(
        exec.results[0].outcome.as_ref().unwrap().output.trim(),
        TEST_USER
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_commands_reuse_one_connection() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let mut t = target(sshd.port, TEST_PASSWORD);
    for i in 0..5 {
        let exec = within(30, "exec", pool.exec(&t, &cmds(&[&format!("echo {i}")]), T))
            .await
            .unwrap();
        if let Some(key) = exec.learned_host_key {
            t.known_host_key = Some(key);
        }
        assert_eq!(
            exec.results[0].outcome.as_ref().unwrap().output,
            format!("{i}\n")
        );
    }
    assert_eq!(pool.stats().connects, 1, "warm connection reused");
    assert_eq!(pool.stats().connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_opens_more_connections() {
    init();
    // The device allows 2 channels per connection; we would use up to 8.
    let sshd = Sshd::start(2).await;
    let config = SshDriverConfig::default();
    let limit = config.max_connections_per_device;
    let pool = SshPool::new(config);
    let mut t = target(sshd.port, TEST_PASSWORD);
    // Warm one connection first: the pool believes it has 8 free slots, so
    // a second connection can only come from the device refusing channels.
    let warm = within(30, "warm-up exec", pool.exec(&t, &cmds(&["true"]), T))
        .await
        .unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
    t.known_host_key = warm.learned_host_key;
    assert_eq!(pool.stats().connects, 1);
    // Each command waits until all six run at once (a barrier in a
    // directory), which needs three connections of two channels.
    let barrier = sshd.scratch();
    let command = vec![format!(
        "mktemp -p {b} >/dev/null; until [ $(ls {b} | wc -l) -ge 6 ]; do sleep 0.05; done; echo done",
        b = barrier.display()
    )];
    let runs = (0..6).map(|_| pool.exec(&t, &command, T));
    let results = within(60, "6 concurrent execs", futures::future::join_all(runs)).await;
    for r in results {
        let exec = r.unwrap_or_else(|e| panic!("{e}\nsshd log:\n{}", sshd.log()));
        assert_eq!(exec.results[0].outcome.as_ref().unwrap().output, "done\n");
    }
    let stats = pool.stats();
    assert!(
        stats.connects >= 3 && stats.connects <= limit as u64,
        "expected a second connection for the refused channels, at most {limit}: {stats:?}"
    );
    assert_eq!(sshd.accepted() as u64, stats.connects, "device-side count");
}

/// Issue 15 item 5: ten first callers at once to a cold device whose sshd
/// admits two unauthenticated connections at a time. One connect serves
/// them all (single flight), so none is dropped by `MaxStartups`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_first_callers_pass_max_startups_2() {
    init();
    let sshd = Sshd::start_daemon(10, "MaxStartups 2").await;
    let config = SshDriverConfig::default();
    let limit = config.max_connections_per_device as u64;
    let pool = SshPool::new(config);
    let t = target(sshd.port, TEST_PASSWORD);
    let commands: Vec<Vec<String>> = (0..10).map(|i| vec![format!("echo caller-{i}")]).collect();
    let runs = commands.iter().map(|c| pool.exec(&t, c, T));
    let results = within(60, "10 first callers", futures::future::join_all(runs)).await;
    for (i, r) in results.into_iter().enumerate() {
        let exec = r.unwrap_or_else(|e| panic!("caller {i}: {e}\nsshd log:\n{}", sshd.log()));
        let out = exec.results[0].outcome.as_ref().unwrap();
        assert_eq!(out.output, format!("caller-{i}\n"));
        assert_eq!(out.exit_status, Some(0));
    }
    let stats = pool.stats();
    assert!(
        stats.connects >= 1 && stats.connects <= limit,
        "connections: {stats:?}"
    );
}

/// Issue 17 item 3: a burst of callers to one device never holds more than
/// the per-device connection limit; the rest queue for channels and all
/// finish. Counted on the device side too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_callers_stays_within_the_connection_limit() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig {
        max_connections_per_device: 3,
        max_sessions_per_connection: 2,
        ..Default::default()
    });
    let t = target(sshd.port, TEST_PASSWORD);
    let commands: Vec<Vec<String>> = (0..150).map(|i| vec![format!("echo {i}")]).collect();
    let runs = commands
        .iter()
        .map(|c| pool.exec(&t, c, Duration::from_secs(60)));
    let results = within(120, "150 callers", futures::future::join_all(runs)).await;
    for (i, r) in results.into_iter().enumerate() {
        let exec = r.unwrap_or_else(|e| panic!("caller {i}: {e}\nsshd log:\n{}", sshd.log()));
        assert_eq!(
            exec.results[0].outcome.as_ref().unwrap().output,
            format!("{i}\n")
        );
    }
    let stats = pool.stats();
    assert!(stats.connects <= 3, "pool opened {stats:?}");
    assert!(
        sshd.accepted() <= 3,
        "device saw {} connections",
        sshd.accepted()
    );
    assert!(sshd.accepted() >= 1);
}

/// The same bound with 10,000 callers naming one (simulated, in-process)
/// device: at most the limit of connections, every caller answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_callers_to_one_device_share_the_limit() {
    init();
    let fleet = switchyard::sim::server::SimFleet::start(Default::default())
        .await
        .unwrap();
    let ep = fleet.endpoints()[0].clone();
    let pool = SshPool::new(SshDriverConfig {
        max_connections_per_device: 4,
        ..Default::default()
    });
    let creds = switchyard::sim::server::SimCredentials::default();
    let t = DeviceTarget {
        name: ep.name.clone(),
        host: "127.0.0.1".into(),
        port: ep.port,
        driver: DriverKind::Ssh,
        credentials: DeviceCredentials {
            username: Some(creds.username.clone()),
            password: Some(creds.password.clone()),
            private_key: None,
            enable_password: None,
        },
        known_host_key: None,
        legacy_algorithms: None,
        profile: Default::default(),
        jump: None,
    };
    let command = cmds(&["show version"]);
    let runs = (0..10_000).map(|_| pool.exec(&t, &command, Duration::from_secs(120)));
    let results = within(240, "10,000 callers", futures::future::join_all(runs)).await;
    let mut ok = 0;
    for r in results {
        let exec = r.unwrap_or_else(|e| panic!("{e}"));
        let out = exec.results[0].outcome.as_ref().unwrap();
        assert!(out.output.contains(&ep.name), "{}", out.output);
        ok += 1;
    }
    assert_eq!(ok, 10_000);
    let stats = pool.stats();
    assert!(stats.connects <= 4, "pool opened {stats:?}");
    fleet.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_timeout_fails_that_command_only() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let t = target(sshd.port, TEST_PASSWORD);
    let exec = within(
        30,
        "exec",
        pool.exec(
            &t,
            &cmds(&["sleep 30", "echo after"]),
            Duration::from_millis(300),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        exec.results[0].outcome,
        Err(CommandError::TimedOut(Duration::from_millis(300)))
    );
    assert_eq!(exec.results[1].outcome.as_ref().unwrap().output, "after\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_an_authentication_error() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let err = within(
        30,
        "exec",
        pool.exec(&target(sshd.port, "wrong"), &cmds(&["true"]), T),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, DriverError::AuthenticationFailed { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(TEST_USER));
    assert!(
        !err.to_string().contains("wrong"),
        "password must not be echoed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_host_is_a_connect_error() {
    init();
    // A port that was just free: nothing listens there now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = SshPool::new(SshDriverConfig::default());
    let err = within(
        30,
        "exec",
        pool.exec(&target(port, "x"), &cmds(&["true"]), T),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DriverError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_host_times_out_connecting() {
    init();
    // Accepts TCP but never speaks SSH.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pool = SshPool::new(SshDriverConfig {
        connect_timeout: Duration::from_millis(300),
        ..Default::default()
    });
    let err = within(
        30,
        "exec",
        pool.exec(&target(port, "x"), &cmds(&["true"]), T),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DriverError::ConnectTimeout { .. }), "{err}");
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig::default());
    let mut t = target(sshd.port, TEST_PASSWORD);
    // Recorded key belongs to some other machine.
    t.known_host_key = Some(switchyard::sim::server::public_host_key_for("elsewhere"));
    let err = within(30, "exec", pool.exec(&t, &cmds(&["true"]), T))
        .await
        .unwrap_err();
    let DriverError::HostKeyChanged {
        expected,
        presented,
        ..
    } = &err
    else {
        panic!("expected HostKeyChanged, got {err}");
    };
    assert!(expected.starts_with("SHA256:") && presented.starts_with("SHA256:"));
    assert_ne!(expected, presented);
    assert_eq!(pool.stats().connects, 0);

    // The genuine key is accepted.
    t.known_host_key = Some(sshd.host_public_key());
    let exec = within(30, "exec", pool.exec(&t, &cmds(&["true"]), T))
        .await
        .unwrap();
    assert!(exec.learned_host_key.is_none(), "nothing new to record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig {
        idle_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    within(
        30,
        "exec",
        pool.exec(&target(sshd.port, TEST_PASSWORD), &cmds(&["true"]), T),
    )
    .await
    .unwrap();
    eventually(10, "idle connection reaped", || {
        pool.stats().connections == 0
    })
    .await;
    assert_eq!(pool.stats().connects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_output_is_cut_off() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = SshPool::new(SshDriverConfig {
        max_output_bytes: 1000,
        ..Default::default()
    });
    let exec = within(
        30,
        "exec",
        pool.exec(
            &target(sshd.port, TEST_PASSWORD),
            &cmds(&["head -c 100000 /dev/zero", "echo fine"]),
            T,
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        exec.results[0].outcome,
        Err(CommandError::TooMuchOutput { limit: 1000 })
    );
    assert_eq!(exec.results[1].outcome.as_ref().unwrap().output, "fine\n");
}

/// A caller that finds every allowed connection's channels taken queues,
/// and past `connect_timeout` + its command timeout gets `Busy`, naming
/// the limit; no connection beyond the limit is opened for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_device_answers_busy_after_the_queue_bound() {
    init();
    let sshd = Sshd::start(10).await;
    let pool = std::sync::Arc::new(SshPool::new(SshDriverConfig {
        connect_timeout: Duration::from_secs(5),
        max_connections_per_device: 1,
        max_sessions_per_connection: 1,
        ..Default::default()
    }));
    let t = target(sshd.port, TEST_PASSWORD);
    // The only channel is held by a command that runs until the test ends.
    let pid_file = sshd.scratch().join("pid");
    let holder = {
        let (pool, t) = (pool.clone(), t.clone());
        let command = vec![endless_command(&pid_file)];
        tokio::spawn(async move { pool.exec(&t, &command, Duration::from_secs(120)).await })
    };
    within(30, "the holding command starts", async {
        while read_pid(&pid_file).is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let err = within(
        30,
        "queued exec",
        pool.exec(&t, &cmds(&["echo never"]), Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    let DriverError::Busy {
        connections,
        waited,
        ..
    } = &err
    else {
        panic!("expected Busy, got {err}");
    };
    assert_eq!(*connections, 1);
    assert_eq!(*waited, Duration::from_millis(5500));
    assert!(
        err.to_string().contains("max_connections_per_device"),
        "{err}"
    );
    assert_eq!(sshd.accepted(), 1, "no connection beyond the limit");
    holder.abort();
}
