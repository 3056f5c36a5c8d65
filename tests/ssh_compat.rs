//! The SSH driver against stock OpenSSH servers configured like old or
//! AAA-backed network gear (issue 15, inputs 1 and 2): legacy algorithms
//! only, and keyboard-interactive password prompts only.
//!
//! OpenSSH 9.2 (Debian 12) still enables every legacy algorithm russh
//! implements when configured to, so each is tested alone here: the SHA-1
//! key exchanges, the CBC ciphers including `3des-cbc`, the SHA-1 MACs and
//! `ssh-rsa` host keys.

mod common;

use std::time::Duration;

use common::sshd::{Sshd, TEST_PASSWORD, TEST_USER};
use common::{init, key_body, within};
use switchyard::service::drivers::ssh::{SshDriverConfig, SshPool};
use switchyard::service::drivers::{DeviceExec, DeviceTarget, DriverError};

const T: Duration = Duration::from_secs(20);

fn target(port: u16, password: &str, legacy: Option<bool>) -> DeviceTarget {
    DeviceTarget {
        legacy_algorithms: legacy,
        ..common::loopback_device("old-router", port, TEST_USER, password)
    }
}

/// Runs `id -un` on `sshd` with the device's and the service's settings.
async fn exec(
    sshd: &Sshd,
    password: &str,
    device: Option<bool>,
    service: bool,
) -> Result<DeviceExec, DriverError> {
    let pool = SshPool::new(SshDriverConfig {
        legacy_algorithms: service,
        ..SshDriverConfig::default()
    });
    let t = target(sshd.port, password, device);
    within(40, "exec", pool.exec(&t, &["id -un".to_string()], T)).await
}

fn assert_ran(result: Result<DeviceExec, DriverError>, sshd: &Sshd, what: &str) -> DeviceExec {
    let exec = result.unwrap_or_else(|e| panic!("{what}: {e}\nsshd log:\n{}", sshd.log()));
    let out = exec.results[0]
        .outcome
        .as_ref()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(out.output.trim(), TEST_USER, "{what}");
    exec
}

/// The negotiation error for a device offering only `theirs` in `family`:
/// both sides listed, the setting named.
fn assert_no_common(
    result: Result<DeviceExec, DriverError>,
    family: &str,
    theirs: &[&str],
    ours_sample: &str,
) -> String {
    let err = result.expect_err("no common algorithm without the opt-in");
    let DriverError::NoCommonAlgorithm {
        family: f,
        theirs: t,
        ..
    } = &err
    else {
        panic!("expected NoCommonAlgorithm, got {err:?}");
    };
    assert_eq!(*f, family);
    for name in theirs {
        assert!(t.iter().any(|x| x == name), "{name} missing from {t:?}");
    }
    let text = err.to_string();
    assert!(text.contains(ours_sample), "our list missing: {text}");
    assert!(
        text.contains("legacy_algorithms"),
        "setting not named: {text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_kex_only_device_needs_the_opt_in() {
    init();
    let kexes = [
        "diffie-hellman-group14-sha1",
        "diffie-hellman-group-exchange-sha1",
        "diffie-hellman-group1-sha1",
    ];
    let sshd = Sshd::start_with(10, &format!("KexAlgorithms {}", kexes.join(","))).await;
    let text = assert_no_common(
        exec(&sshd, TEST_PASSWORD, None, false).await,
        "key-exchange",
        &kexes,
        "curve25519-sha256",
    );
    assert!(text.contains("--legacy-algorithms"), "{text}");
    // The device's own opt-in, and the service-wide default.
    assert_ran(
        exec(&sshd, TEST_PASSWORD, Some(true), false).await,
        &sshd,
        "device opt-in",
    );
    assert_ran(
        exec(&sshd, TEST_PASSWORD, None, true).await,
        &sshd,
        "service default",
    );
    // A device that says no overrides the service default.
    assert_no_common(
        exec(&sshd, TEST_PASSWORD, Some(false), true).await,
        "key-exchange",
        &kexes,
        "curve25519-sha256",
    );
    // Each one alone works with the opt-in.
    for kex in kexes {
        let sshd = Sshd::start_with(10, &format!("KexAlgorithms {kex}")).await;
        assert_ran(
            exec(&sshd, TEST_PASSWORD, Some(true), false).await,
            &sshd,
            kex,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbc_only_device_needs_the_opt_in() {
    init();
    let ciphers = ["aes128-cbc", "aes256-cbc", "3des-cbc"];
    let sshd = Sshd::start_with(10, &format!("Ciphers {}", ciphers.join(","))).await;
    assert_no_common(
        exec(&sshd, TEST_PASSWORD, None, false).await,
        "cipher",
        &ciphers,
        "aes256-ctr",
    );
    assert_ran(
        exec(&sshd, TEST_PASSWORD, Some(true), false).await,
        &sshd,
        "CBC set",
    );
    for cipher in ["aes128-cbc", "aes192-cbc", "aes256-cbc", "3des-cbc"] {
        let sshd = Sshd::start_with(10, &format!("Ciphers {cipher}")).await;
        assert_ran(
            exec(&sshd, TEST_PASSWORD, Some(true), false).await,
            &sshd,
            cipher,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_mac_only_device_needs_the_opt_in() {
    init();
    // A cipher that needs a MAC (an AEAD one would make the MAC moot).
    for mac in ["hmac-sha1", "hmac-sha1-etm@openssh.com"] {
        let sshd = Sshd::start_with(10, &format!("Ciphers aes128-ctr\nMACs {mac}")).await;
        assert_no_common(
            exec(&sshd, TEST_PASSWORD, None, false).await,
            "MAC",
            &[mac],
            "hmac-sha2-256",
        );
        assert_ran(
            exec(&sshd, TEST_PASSWORD, Some(true), false).await,
            &sshd,
            mac,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_rsa_sha1_host_key_needs_the_opt_in() {
    init();
    let sshd = Sshd::start_with(10, "HostKeyAlgorithms ssh-rsa").await;
    assert_no_common(
        exec(&sshd, TEST_PASSWORD, None, false).await,
        "host-key",
        &["ssh-rsa"],
        "ssh-ed25519",
    );
    let exec = assert_ran(
        exec(&sshd, TEST_PASSWORD, Some(true), false).await,
        &sshd,
        "ssh-rsa",
    );
    let learned = exec
        .learned_host_key
        .expect("first contact records the key");
    assert!(learned.starts_with("ssh-rsa "), "{learned}");
    let rsa = std::fs::read_to_string(sshd.path().join("rsa_host_key.pub")).unwrap();
    assert_eq!(key_body(&learned), key_body(&rsa));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_openssh_defaults_need_no_opt_in() {
    init();
    // What OpenSSH's client offers by default beyond russh's own defaults.
    for extra in [
        "KexAlgorithms ecdh-sha2-nistp256",
        "KexAlgorithms ecdh-sha2-nistp521",
        "Ciphers aes128-gcm@openssh.com",
        "HostKeyAlgorithms rsa-sha2-256",
    ] {
        let sshd = Sshd::start_with(10, extra).await;
        assert_ran(exec(&sshd, TEST_PASSWORD, None, false).await, &sshd, extra);
    }
}

/// `UsePAM yes` is how a stock Debian sshd does keyboard-interactive: PAM
/// (pam_unix) asks "Password: ". Password authentication is off.
const KBDINT_ONLY: &str = "UsePAM yes\nPasswordAuthentication no\nKbdInteractiveAuthentication yes";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_only_device_takes_the_password() {
    init();
    let sshd = Sshd::start_with(10, KBDINT_ONLY).await;
    assert_ran(
        exec(&sshd, TEST_PASSWORD, None, false).await,
        &sshd,
        "keyboard-interactive",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_interactive_wrong_password_is_an_authentication_error() {
    init();
    let sshd = Sshd::start_with(10, KBDINT_ONLY).await;
    let err = exec(&sshd, "wrong-password", None, false)
        .await
        .expect_err("a wrong password is refused");
    assert!(
        matches!(err, DriverError::AuthenticationFailed { .. }),
        "{err:?}\nsshd log:\n{}",
        sshd.log()
    );
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
}
