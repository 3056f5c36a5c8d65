//! Real HTTP at both ends: `python3 -m http.server` as a "device" and
//! `curl` as the client (forwards, the SOCKS5 proxy).

use std::process::Stdio;

use super::within;

/// `python3 -m http.server` on a port-0 loopback socket, serving `dir`.
pub struct HttpServer {
    pub child: tokio::process::Child,
    pub port: u16,
}

impl HttpServer {
    pub async fn start(dir: &std::path::Path) -> Self {
        let mut child = tokio::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        let port = within(20, "http.server ready", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // "Serving HTTP on 127.0.0.1 port 40123 (http://...) ..."
                if let Some(rest) = line.split(" port ").nth(1) {
                    return rest.split_whitespace().next().unwrap().parse().unwrap();
                }
            }
            panic!("http.server exited")
        })
        .await;
        Self { child, port }
    }
}

/// `curl -sS --max-time 20 ARGS...`, bounded.
pub async fn curl(args: &[&str]) -> std::process::Output {
    within(
        30,
        "curl",
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .args(args)
            .output(),
    )
    .await
    .unwrap()
}

/// One page (`page.bin`, 150,000 bytes) served by [`HttpServer`] from a
/// directory of its own: a device's web UI in the forward and SOCKS5
/// tests.
pub struct ServedPage {
    pub page: Vec<u8>,
    pub http: HttpServer,
    _site: tempfile::TempDir,
}

impl ServedPage {
    pub async fn start() -> Self {
        let site = tempfile::tempdir().unwrap();
        let page: Vec<u8> = (0..150_000u32).map(|i| (i * 13 % 241) as u8).collect();
        std::fs::write(site.path().join("page.bin"), &page).unwrap();
        let http = HttpServer::start(site.path()).await;
        Self {
            page,
            http,
            _site: site,
        }
    }

    /// `got` (curl's output) succeeded with the whole page; `context` is
    /// shown when it did not.
    pub fn assert_served(&self, got: &std::process::Output, context: &str) {
        assert!(got.status.success(), "{got:?}\n{context}");
        assert!(
            got.stdout == self.page,
            "curl got {} bytes",
            got.stdout.len()
        );
    }
}
