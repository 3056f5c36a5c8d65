//! Keyboard-interactive prompts a stock sshd cannot produce: a prompt that
//! is not a password, and a device that asks for the password again. A
//! scripted russh server stands in for the device.

mod common;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{init, within};
use russh::server::{Auth, Response};
use russh::{MethodKind, MethodSet};
use switchyard::secret::Secret;
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{DeviceTarget, DriverError};
use switchyard::service::inventory::{DeviceCredentials, DriverKind};
use tokio::net::TcpListener;

/// Asks `prompt` in every keyboard-interactive round, never accepts, and
/// counts the answers it gets.
#[derive(Clone)]
struct Prompter {
    prompt: &'static str,
    answers: Arc<AtomicUsize>,
}

impl russh::server::Handler for Prompter {
    type Error = russh::Error;

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        _user: &str,
        _submethods: &str,
        response: Option<Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        if let Some(response) = response {
            self.answers.fetch_add(response.count(), Ordering::SeqCst);
        }
        Ok(Auth::Partial {
            name: Cow::Borrowed(""),
            instructions: Cow::Borrowed(""),
            prompts: Cow::Owned(vec![(Cow::Borrowed(self.prompt), false)]),
        })
    }
}

/// Serves one scripted device; returns its port and its answer count.
async fn device(prompt: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let answers = Arc::new(AtomicUsize::new(0));
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::KeyboardInteractive);
    let config = Arc::new(russh::server::Config {
        keys: vec![switchyard::sim::server::host_key_for("prompter")],
        methods,
        auth_rejection_time: Duration::ZERO,
        auth_rejection_time_initial: Some(Duration::ZERO),
        ..Default::default()
    });
    let handler = Prompter {
        prompt,
        answers: answers.clone(),
    };
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (config, handler) = (config.clone(), handler.clone());
            tokio::spawn(async move {
                if let Ok(running) = russh::server::run_stream(config, socket, handler).await {
                    let _ = running.await;
                }
            });
        }
    });
    (port, answers)
}

async fn exec(port: u16) -> DriverError {
    let pool = SshPool::new(SshDriverConfig::default());
    let target = DeviceTarget {
        name: "aaa-switch".into(),
        host: "127.0.0.1".into(),
        port,
        driver: DriverKind::Ssh,
        credentials: DeviceCredentials {
            username: Some("netops".into()),
            password: Some(Secret::new("s3cret-pw")),
            private_key: None,
            enable_password: None,
        },
        known_host_key: None,
        legacy_algorithms: None,
        profile: Default::default(),
        jump: None,
    };
    within(
        30,
        "exec",
        pool.exec(&target, &["show clock".into()], Duration::from_secs(10)),
    )
    .await
    .expect_err("the scripted device never lets anyone in")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prompt_that_is_not_a_password_fails_naming_it() {
    init();
    let (port, answers) = device("Verification code: ").await;
    let err = exec(port).await;
    assert!(
        matches!(&err, DriverError::UnexpectedPrompt { prompt, .. } if prompt == "Verification code: "),
        "{err:?}"
    );
    assert!(err.to_string().contains("Verification code"), "{err}");
    assert_eq!(answers.load(Ordering::SeqCst), 0, "nothing was answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_asking_for_the_password_again_gets_it_once() {
    init();
    let (port, answers) = device("Password: ").await;
    let err = exec(port).await;
    assert!(
        matches!(err, DriverError::AuthenticationFailed { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
    assert_eq!(answers.load(Ordering::SeqCst), 1, "the password went once");
}
