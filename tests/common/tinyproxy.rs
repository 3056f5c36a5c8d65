//! A real HTTP CONNECT proxy: Debian's tinyproxy, on a free loopback port,
//! with a temporary config (optionally Basic authentication) and its own
//! log of the CONNECTs it served.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Tinyproxy {
    pub dir: tempfile::TempDir,
    pub port: u16,
    _child: Child,
}

impl Tinyproxy {
    /// Starts tinyproxy on 127.0.0.1, requiring `auth` (user, password)
    /// when given; returns once it accepts connections.
    pub async fn start(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // tinyproxy cannot report a port it picked: take a free one (and
        // try again in the unlikely case another process took it first).
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut conf = format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\n\
                 LogLevel Connect\nMaxClients 64\nAllow 127.0.0.1\n",
                dir.path().join("tinyproxy.log").display()
            );
            if let Some((user, password)) = auth {
                conf.push_str(&format!("BasicAuth {user} {password}\n"));
            }
            let conf_path = dir.path().join("tinyproxy.conf");
            std::fs::write(&conf_path, conf).unwrap();
            let mut child = Command::new("tinyproxy")
                .arg("-d")
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("tinyproxy (scripts/setup-test-host.sh installs it)");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Self {
                        dir,
                        port,
                        _child: child,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
        }
        panic!("tinyproxy did not start");
    }

    /// `http://127.0.0.1:PORT`, optionally with a user name.
    pub fn url(&self, user: Option<&str>) -> String {
        match user {
            Some(user) => format!("http://{user}@127.0.0.1:{}", self.port),
            None => format!("http://127.0.0.1:{}", self.port),
        }
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// What tinyproxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}
