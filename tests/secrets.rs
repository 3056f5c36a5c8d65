//! No secret leaks: a scenario that uses every kind of secret the product
//! handles — the relay's user password (SSO page), its access token, an
//! enrollment OTP, a client key's password, the service's admin password,
//! a remote user's password, a device password, wrong guesses of each,
//! credentials in a relay URL — across real relay, service and broker
//! processes and the CLI. Then every daemon's log (complete: read only
//! after the daemon exited, its stderr written straight to a file), the
//! output of `status` (text and `--json`) and every command's output and
//! error text are searched for each secret.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{switchyard_bin, within};
use switchyard::wire::messages::{AuthRequest, AuthResponse, Credentials};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

const ALICE: &str = "alice@example.com";
const SERIAL: &str = "SN-SECRETS";

/// Every secret of the scenario, each a string found nowhere else.
struct Secrets {
    sso_password: &'static str,
    wrong_sso_password: &'static str,
    admin_password: &'static str,
    bob_password: &'static str,
    wrong_bob_password: &'static str,
    device_password: &'static str,
    key_password: &'static str,
    wrong_key_password: &'static str,
    url_password: &'static str,
}

const SECRETS: Secrets = Secrets {
    sso_password: "sso-pw-Q7x2Lm",
    wrong_sso_password: "sso-guess-Zt81",
    admin_password: "admin-pw-Hk3Vb",
    bob_password: "bob-pw-Ww9Re",
    wrong_bob_password: "bob-guess-Pp4Nn",
    device_password: "device-pw-Ux5Yq",
    key_password: "key-pw-Jr6Cs",
    wrong_key_password: "key-guess-Ld2Mf",
    url_password: "url-pw-Bn7Gt",
};

/// A daemon whose stderr goes straight to a file (complete once it exits).
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(dir: &Path, name: &'static str, args: &[&str], env: &[(String, String)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(switchyard_bin());
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .env_remove("SWITCHYARD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            name,
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    /// The first stdout line (a daemon's readiness JSON); the rest of its
    /// stdout is kept for the scan.
    async fn ready_json(&mut self, out: &mut Vec<String>) -> serde_json::Value {
        let stdout = self.child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = within(30, self.name, lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{} exited before it was ready", self.name));
        out.push(line.clone());
        self.drain(lines);
        serde_json::from_str(&line).unwrap()
    }

    fn drain(&self, mut lines: tokio::io::Lines<BufReader<ChildStdout>>) {
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }

    /// SIGTERM, wait for the exit; then the log file is complete.
    async fn stop(mut self) -> (String, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        within(60, "daemon exit", self.child.wait()).await.unwrap();
        let log = std::fs::read_to_string(&self.log).unwrap();
        (self.name.to_string(), log)
    }
}

/// `connect direct lab` to 127.0.0.1:`port` as bob, his password in
/// `password_file`.
fn connect_as_bob<'a>(port: &'a str, password_file: &'a str) -> [&'a str; 11] {
    [
        "connect",
        "direct",
        "lab",
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--user",
        "bob",
        "--password-file",
        password_file,
    ]
}

/// Runs one CLI command to completion; its output joins the scan.
struct Cli {
    env: Vec<(String, String)>,
    /// (command, stdout, stderr) of every run whose output is scanned.
    outputs: Vec<(String, String, String)>,
}

impl Cli {
    async fn run(&mut self, args: &[&str]) -> Output {
        let out = self.run_unscanned(args).await;
        self.outputs.push((
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
        out
    }

    /// For the two commands whose job is to print a secret (`relay token
    /// issue`, `enroll service-otp`): only their error text is scanned.
    async fn run_printing_secret(&mut self, args: &[&str]) -> String {
        let out = self.run_unscanned(args).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        self.outputs.push((
            args.join(" "),
            String::new(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    async fn run_unscanned(&mut self, args: &[&str]) -> Output {
        let mut cmd = Command::new(switchyard_bin());
        cmd.args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        within(60, "command", cmd.output()).await.unwrap()
    }

    async fn ok(&mut self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    async fn fails(&mut self, args: &[&str]) -> String {
        let out = self.run(args).await;
        assert!(!out.status.success(), "{args:?} succeeded: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A login straight to the service's RPC socket with a chosen user name
/// and client string (what the broker never sends).
async fn raw_login(addr: std::net::SocketAddr, user: &str, client: &str) -> AuthResponse {
    use switchyard::wire::conn::{self, TransportLimits, client_endpoint, read_frame, write_frame};
    let limits = TransportLimits::default();
    let endpoint = client_endpoint(addr).unwrap();
    let verifier = switchyard::wire::pin::PinnedServerVerifier::new(None);
    let config = conn::client_config_with(
        verifier,
        std::sync::Arc::new(conn::transport_config(&limits)),
    )
    .unwrap();
    let connecting = endpoint
        .connect_with(config, addr, "switchyard-service")
        .unwrap();
    let c = within(20, "handshake", connecting).await.unwrap();
    let (mut send, mut recv) = c.open_bi().await.unwrap();
    let request = AuthRequest {
        credentials: Credentials::Password {
            username: user.into(),
            password: "guess".into(),
        },
        client: client.into(),
    };
    write_frame(&mut send, &request, limits.max_frame)
        .await
        .unwrap();
    let _ = send.finish();
    within(30, "login answer", read_frame(&mut recv, limits.max_frame))
        .await
        .unwrap()
        .expect("an answer")
}

fn cat<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    [a, b].concat()
}

fn file(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{content}\n")).unwrap();
    path.to_str().unwrap().to_string()
}

/// Approves (or fails to approve) an SSO login on the relay's page, as a
/// person would; returns the page.
async fn submit_approval(url: &str, ca: &Path, user_code: &str, password: &str) -> String {
    let roots = switchyard::tls::root_store(Some(ca)).unwrap();
    let http = switchyard::tls::http_client(roots).unwrap();
    let response = http
        .post(format!("{url}/device"))
        .form(&[
            ("user_code", user_code),
            ("email", ALICE),
            ("password", password),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_log_status_or_error_text() {
    common::init();
    let s = &SECRETS;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut stdout_lines = Vec::new();
    let mut pages = Vec::new();
    let mut cli = Cli {
        env: vec![
            (
                "XDG_STATE_HOME".into(),
                dir.join("cli-state").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".into(),
                dir.join("cli-config").display().to_string(),
            ),
        ],
        outputs: Vec::new(),
    };

    // The relay, with alice's SSO password.
    let state = dir.join("relay");
    let state_arg = state.to_str().unwrap().to_string();
    cli.ok(&["relay", "init", "--state", &state_arg]).await;
    let pw = file(dir, "sso-pw", s.sso_password);
    cli.ok(&[
        "relay",
        "user",
        "add",
        ALICE,
        "--state",
        &state_arg,
        "--password-file",
        &pw,
    ])
    .await;
    let mut relay = Daemon::spawn(
        dir,
        "relay",
        &[
            "relay",
            "run",
            "--state",
            &state_arg,
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--poll-interval",
            "1",
        ],
        &[],
    );
    let ready = relay.ready_json(&mut stdout_lines).await;
    let url = ready["url"].as_str().unwrap().to_string();
    let ca = state.join("ca.pem");
    let ca_arg = ca.to_str().unwrap().to_string();

    // The broker, naming the relay as its default domain.
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!("[domains.test]\nurl = \"{url}\"\nca_file = \"{ca_arg}\"\ndefault = true\n"),
    )
    .unwrap();
    let socket = dir.join("broker.sock");
    let broker_env = vec![
        (
            "XDG_STATE_HOME".to_string(),
            dir.join("broker-state").display().to_string(),
        ),
        (
            "XDG_CONFIG_HOME".to_string(),
            dir.join("broker-config").display().to_string(),
        ),
    ];
    let broker = Daemon::spawn(
        dir,
        "broker",
        &[
            "--config",
            config.to_str().unwrap(),
            "broker",
            "--socket",
            socket.to_str().unwrap(),
        ],
        &broker_env,
    );
    common::eventually(30, "broker listening", || {
        std::fs::read_to_string(&broker.log)
            .is_ok_and(|l| l.contains("switchyard broker listening on"))
    })
    .await;
    cli.env
        .push(("SWITCHYARD_SOCKET".into(), socket.display().to_string()));

    // An access token; an enrollment OTP minted with it.
    let token = cli
        .run_printing_secret(&[
            "relay",
            "token",
            "issue",
            ALICE,
            "--state",
            &state_arg,
            "--lifetime",
            "1h",
        ])
        .await;
    let token_file = file(dir, "token", &token);
    cli.ok(&["login", "token", "--token-file", &token_file])
        .await;
    let otp = cli
        .run_printing_secret(&["enroll", "service-otp", "--serial", SERIAL])
        .await;
    let otp_file = file(dir, "otp", &otp);

    // The service: admin password, a device password, bob's password, the
    // OTP redeemed.
    let admin = file(dir, "admin", s.admin_password);
    let db = dir.join("inv.db").display().to_string();
    let svc = ["service", "--db", &db, "--admin-password-file", &admin];
    cli.ok(&cat(&svc, &["init"])).await;
    cli.ok(&cat(
        &svc,
        &["device", "add", "core-1", "--driver", "simulator"],
    ))
    .await;
    let device_pw = file(dir, "device-pw", s.device_password);
    cli.ok(&cat(
        &svc,
        &[
            "device",
            "add",
            "dead-1",
            "--host",
            "127.0.0.1",
            "--port",
            "1",
            "--username",
            "ops",
            "--password-file",
            &device_pw,
        ],
    ))
    .await;
    cli.ok(&cat(&svc, &["user", "add", ALICE, "--cloud"])).await;
    let bob_pw = file(dir, "bob-pw", s.bob_password);
    cli.ok(&cat(
        &svc,
        &["user", "add", "bob", "--password-file", &bob_pw],
    ))
    .await;
    cli.ok(&cat(
        &svc,
        &[
            "enroll",
            "--relay",
            &url,
            "--otp-file",
            &otp_file,
            "--relay-ca",
            &ca_arg,
        ],
    ))
    .await;
    let wrong_admin = file(dir, "wrong-admin", s.wrong_bob_password);
    cli.fails(&[
        "service",
        "--db",
        &db,
        "--admin-password-file",
        &wrong_admin,
        "device",
        "add",
        "never-1",
        "--driver",
        "simulator",
    ])
    .await;
    let mut service = Daemon::spawn(
        dir,
        "service",
        &cat(
            &svc,
            &["run", "--listen", "127.0.0.1:0", "--name", "secrets-svc"],
        ),
        &[],
    );
    let ready = service.ready_json(&mut stdout_lines).await;
    let rpc_addr: std::net::SocketAddr = ready["rpc_addr"].as_str().unwrap().parse().unwrap();
    let port = rpc_addr.port().to_string();

    // Direct with a password: a wrong one, then bob's; a device whose
    // password is sealed (its connection fails).
    let wrong_bob = file(dir, "wrong-bob", s.wrong_bob_password);
    cli.fails(&connect_as_bob(&port, &wrong_bob)).await;
    cli.ok(&connect_as_bob(&port, &bob_pw)).await;
    let exec = cli
        .run(&[
            "exec",
            "lab",
            "core-1",
            "dead-1",
            "-c",
            "show version",
            "--timeout",
            "5",
        ])
        .await;
    assert!(
        String::from_utf8_lossy(&exec.stdout).contains("Simulated"),
        "{exec:?}"
    );

    // Relayed and direct-with-SSO, on the token login.
    cli.ok(&["connect", "cloud", "relayed", "--serial", SERIAL])
        .await;
    cli.ok(&[
        "connect",
        "direct-sso",
        "direct",
        "--serial",
        SERIAL,
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ])
    .await;
    cli.ok(&["exec", "relayed", "core-1", "-c", "show clock"])
        .await;
    // A caller-given address is a label: no control characters.
    let refused = cli
        .fails(&[
            "connect",
            "direct-sso",
            "forged",
            "--serial",
            SERIAL,
            "--host",
            "127.0.0.1\nFORGED-LOG-LINE",
            "--port",
            &port,
        ])
        .await;
    assert!(refused.contains("control characters"), "{refused}");

    // A client certificate under a key password; a wrong one; logging in
    // with it.
    let certs = dir.join("certs").display().to_string();
    let key_pw = file(dir, "key-pw", s.key_password);
    cli.ok(&[
        "enroll",
        "client",
        "--identity",
        ALICE,
        "--password-file",
        &key_pw,
        "--cert-dir",
        &certs,
    ])
    .await;
    cli.ok(&["logout"]).await;
    let wrong_key = file(dir, "wrong-key", s.wrong_key_password);
    cli.fails(&[
        "login",
        "cert",
        ALICE,
        "--password-file",
        &wrong_key,
        "--cert-dir",
        &certs,
    ])
    .await;
    cli.ok(&[
        "login",
        "cert",
        ALICE,
        "--password-file",
        &key_pw,
        "--cert-dir",
        &certs,
    ])
    .await;

    // SSO: a wrong password on the page, then the right one.
    let mut sso = Command::new(switchyard_bin());
    sso.args(["login", "sso", ALICE])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &cli.env {
        sso.env(k, v);
    }
    let mut sso = sso.spawn().unwrap();
    let mut prompt_lines = BufReader::new(sso.stdout.take().unwrap()).lines();
    let prompt = within(30, "SSO prompt", prompt_lines.next_line())
        .await
        .unwrap()
        .expect("a prompt");
    stdout_lines.push(prompt.clone());
    let prompt: serde_json::Value = serde_json::from_str(&prompt).unwrap();
    let code = prompt["user_code"].as_str().unwrap();
    pages.push(submit_approval(&url, &ca, code, s.wrong_sso_password).await);
    pages.push(submit_approval(&url, &ca, code, s.sso_password).await);
    let sso = within(60, "SSO login", sso.wait_with_output())
        .await
        .unwrap();
    assert!(sso.status.success(), "{sso:?}");
    cli.outputs.push((
        "login sso".into(),
        String::from_utf8_lossy(&sso.stdout).into_owned(),
        String::from_utf8_lossy(&sso.stderr).into_owned(),
    ));

    // Credentials in a relay URL are refused, and not repeated.
    let with_credentials = url.replacen("https://", &format!("https://ops:{}@", s.url_password), 1);
    let refused = cli
        .fails(&[
            "login",
            "token",
            "--token-file",
            &token_file,
            "--relay",
            &with_credentials,
        ])
        .await;
    assert!(refused.contains("user name or password"), "{refused}");

    // A stranger's login with a user name that would forge a log line and
    // a 1 MiB client string: refused, and logged as one bounded line.
    let forged = raw_login(
        rpc_addr,
        "mallory\nFORGED-LOG-LINE user=admin",
        &"client\n".repeat(1 << 17),
    )
    .await;
    assert!(matches!(forged, AuthResponse::Rejected(_)), "{forged:?}");

    // Status, both ways.
    let text = cli.ok(&["status"]).await;
    assert!(text.contains("relayed"), "{text}");
    let json = cli.ok(&["status", "--json"]).await;
    serde_json::from_str::<serde_json::Value>(&json).unwrap();

    // The daemons stop; their logs are complete.
    let mut logs = Vec::new();
    for daemon in [broker, service, relay] {
        logs.push(daemon.stop().await);
    }
    for (name, log) in &logs {
        assert!(!log.is_empty(), "{name} logged nothing");
    }

    let secrets = [
        ("SSO password", s.sso_password),
        ("wrong SSO password", s.wrong_sso_password),
        ("admin password", s.admin_password),
        ("remote user password", s.bob_password),
        ("wrong remote user password", s.wrong_bob_password),
        ("device password", s.device_password),
        ("client key password", s.key_password),
        ("wrong client key password", s.wrong_key_password),
        ("relay URL password", s.url_password),
        ("access token", token.as_str()),
        ("enrollment OTP", otp.as_str()),
    ];
    let mut places: Vec<(String, &str)> = Vec::new();
    for (name, log) in &logs {
        places.push((format!("{name} log"), log));
    }
    for (cmd, out, err) in &cli.outputs {
        places.push((format!("stdout of `{cmd}`"), out));
        places.push((format!("stderr of `{cmd}`"), err));
    }
    for line in &stdout_lines {
        places.push(("a daemon's stdout".into(), line));
    }
    for page in &pages {
        places.push(("the approval page".into(), page));
    }
    let mut leaks = Vec::new();
    for (kind, secret) in secrets {
        for (place, text) in &places {
            if text.contains(secret) {
                leaks.push(format!("{kind} in {place}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    for (name, log) in &logs {
        for line in log.lines() {
            assert!(!line.starts_with("FORGED-LOG-LINE"), "{name}: forged line");
            assert!(
                !line.contains("client\nclient"),
                "{name}: raw client string"
            );
            assert!(line.len() < 8192, "{name}: a {} byte log line", line.len());
        }
    }
    // The scan saw real traffic: each daemon logged the logins it served.
    let service_log = &logs[1].1;
    assert!(
        service_log.contains("remote user authenticated"),
        "{service_log}"
    );
    assert!(service_log.contains("login refused"), "{service_log}");
}
