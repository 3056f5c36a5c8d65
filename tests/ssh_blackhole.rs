//! Issue 15 input 6: a pooled connection whose path goes silent (black-holed
//! TCP: nothing arrives, nothing is refused or reset). A userspace TCP proxy
//! in front of a stock sshd stops forwarding on demand — it stops reading,
//! so the bytes wait in the kernel's buffers as they would on a lossy path
//! and nothing is lost when forwarding resumes. An exec on the silent
//! connection must fail within its timeout (plus slack), not hang on the
//! channel open; the dead connection is dropped, and the next exec after
//! the path heals succeeds.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, within};
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{DeviceTarget, DriverError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A TCP proxy to one upstream that can be switched to black-hole.
struct Proxy {
    port: u16,
    silent: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl Proxy {
    async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (silent, watching) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                pipes.spawn(pipe(cr, sw, watching.clone()));
                pipes.spawn(pipe(sr, cw, watching.clone()));
            }
        });
        Self {
            port,
            silent,
            _tasks: tasks,
        }
    }

    fn black_hole(&self, on: bool) {
        self.silent.send_replace(on);
    }
}

/// Copies one direction; while silent, reads nothing (so nothing is lost).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut silent: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if silent.wait_for(|s| !*s).await.is_err() {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Went silent while waiting: stop reading.
            _ = silent.wait_for(|s| *s) => continue,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn target(port: u16) -> DeviceTarget {
    common::loopback_device("far-router", port, TEST_USER, TEST_PASSWORD)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_on_a_black_holed_pooled_connection_ends_within_its_timeout() {
    init();
    let sshd = Sshd::start(10).await;
    let proxy = Proxy::start(sshd.port).await;
    let pool = Arc::new(SshPool::new(SshDriverConfig::default()));
    let t = target(proxy.port);
    let id = ["id -un".to_string()];
    let timeout = Duration::from_secs(3);

    // Warm: one pooled connection.
    let warm = within(30, "warm exec", pool.exec(&t, &id, timeout))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
    assert_eq!(
        warm.results[0].outcome.as_ref().unwrap().output.trim(),
        TEST_USER
    );
    assert_eq!(pool.stats().connections, 1);

    // The path goes silent: the exec fails within its timeout + slack.
    proxy.black_hole(true);
    let started = Instant::now();
    let silent = within(60, "exec on a silent path", pool.exec(&t, &id, timeout)).await;
    let took = started.elapsed();
    assert!(
        took < timeout + Duration::from_secs(2),
        "took {took:?} for a {timeout:?} timeout"
    );
    match silent {
        Err(e @ DriverError::Silent { .. }) => {
            assert!(e.to_string().contains("went silent"), "{e}")
        }
        Err(e) => panic!("expected a silent-connection error, got {e}"),
        Ok(exec) => panic!("expected a failure, got {:?}", exec.results[0].outcome),
    }
    // The silent connection is no longer pooled.
    assert_eq!(
        pool.stats().connections,
        0,
        "the dead connection was dropped"
    );

    // The path heals: the next exec connects afresh and succeeds.
    proxy.black_hole(false);
    let healed = within(30, "exec after healing", pool.exec(&t, &id, timeout))
        .await
        .unwrap();
    assert_eq!(
        healed.results[0].outcome.as_ref().unwrap().output.trim(),
        TEST_USER
    );
    assert_eq!(pool.stats().connects, 2);
}
