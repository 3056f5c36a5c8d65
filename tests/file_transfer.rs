//! File transfer (`switchyard cp`, gRPC `FileDownload`/`FileUpload`) end
//! to end: a real broker process, a service on loopback QUIC, a stock
//! OpenSSH device (its sftp-server, or its `scp` when the `Subsystem` line
//! is left out). Files are compared by SHA-256. A copy cut off midway
//! leaves nothing under the target name (local side: temporary file,
//! rename on success; device side: SFTP temporary name, rename).

mod common;

use std::path::{Path, PathBuf};

use common::broker::{TestBroker, in_session};
use common::service::{TestService, sshd_device, start_service};
use common::sshd::Sshd;
use common::{eventually, within};
use sha2::{Digest, Sha256};
use switchyard::api::pb;
use switchyard::service::rpc::RpcConfig;

const SFTP: &str = "Subsystem sftp /usr/lib/openssh/sftp-server";

/// Size of the round-trip file: 20 MB (debug builds), or
/// `SWITCHYARD_TEST_CP_MB`.
fn round_trip_bytes() -> usize {
    std::env::var("SWITCHYARD_TEST_CP_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        << 20
}

/// Pseudo-random bytes (xorshift), so a lost or repeated chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(path).unwrap()))
}

/// A broker with the named service `lab` reaching `linux-1` (the sshd).
struct Lab {
    sshd: Sshd,
    svc: TestService,
    broker: TestBroker,
    local: tempfile::TempDir,
}

impl Lab {
    async fn start(sshd_extra: &str) -> Self {
        let sshd = Sshd::start_with(10, sshd_extra).await;
        let svc = start_service(&[sshd_device("linux-1", sshd.port)], RpcConfig::default());
        let broker = TestBroker::start(&[]).await;
        let out = broker.connect_direct(&svc, "lab", &[]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        Self {
            sshd,
            svc,
            broker,
            local: tempfile::tempdir().unwrap(),
        }
    }

    /// A path in the device's scratch directory.
    fn remote(&self, name: &str) -> PathBuf {
        self.sshd.scratch().join(name)
    }

    fn local(&self, name: &str) -> PathBuf {
        self.local.path().join(name)
    }

    /// `switchyard cp lab ARGS...`.
    fn cp(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = self.broker.command();
        cmd.args(["cp", "lab"]).args(args);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    async fn run_cp(&self, args: &[&str]) -> std::process::Output {
        within(300, "switchyard cp", self.cp(args).output())
            .await
            .unwrap()
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files in `dir` whose names end in `.part` (temporary files).
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect()
}

/// Uploads a pattern file to the device and downloads it back, each time
/// comparing SHA-256; the summary names `protocol`.
async fn round_trip(lab: &Lab, protocol: &str) {
    let size = round_trip_bytes();
    let original = lab.local("original.bin");
    std::fs::write(&original, pattern(size)).unwrap();
    let want = sha256_file(&original);
    let remote = lab.remote("copy.bin");
    let spec = format!("linux-1:{}", remote.display());

    let up = lab.run_cp(&[original.to_str().unwrap(), &spec]).await;
    assert!(up.status.success(), "upload: {}", stderr(&up));
    assert!(
        stderr(&up).contains(&format!("{size} bytes in")) && stderr(&up).contains(protocol),
        "summary: {}",
        stderr(&up)
    );
    assert_eq!(sha256_file(&remote), want, "the device's copy differs");
    assert!(leftovers(&lab.sshd.scratch()).is_empty());

    let back = lab.local("back.bin");
    let down = lab.run_cp(&[&spec, back.to_str().unwrap()]).await;
    assert!(down.status.success(), "download: {}", stderr(&down));
    assert!(stderr(&down).contains(protocol), "{}", stderr(&down));
    assert_eq!(sha256_file(&back), want, "the downloaded copy differs");
    assert!(leftovers(lab.local.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_goes_both_ways_over_sftp_with_its_sha256_intact() {
    let lab = Lab::start(SFTP).await;
    round_trip(&lab, "sftp").await;
    // Overwriting an existing file on the device replaces it whole.
    let small = lab.local("small.txt");
    std::fs::write(&small, b"replaced\n").unwrap();
    let spec = format!("linux-1:{}", lab.remote("copy.bin").display());
    let out = lab.run_cp(&[small.to_str().unwrap(), &spec]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(lab.remote("copy.bin")).unwrap(),
        b"replaced\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_carries_the_file_when_the_device_has_no_sftp_subsystem() {
    // No `Subsystem` line: this sshd refuses SFTP.
    let lab = Lab::start("").await;
    round_trip(&lab, "scp").await;
    // Asked for SFTP only, the error names the device and the way out.
    let spec = format!("linux-1:{}", lab.remote("copy.bin").display());
    let back = lab.local("sftp-only.bin");
    let out = lab
        .run_cp(&["--protocol", "sftp", &spec, back.to_str().unwrap()])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("linux-1 has no SFTP subsystem"),
        "{}",
        stderr(&out)
    );
    assert!(!back.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_forbidden_remote_files_are_named_in_the_error() {
    for extra in [SFTP, ""] {
        let lab = Lab::start(extra).await;
        let target = lab.local("never.bin");
        let missing = format!("linux-1:{}", lab.remote("nope.bin").display());
        let out = lab.run_cp(&[&missing, target.to_str().unwrap()]).await;
        assert!(!out.status.success());
        let want = format!("{}: no such file or directory", &missing);
        assert!(stderr(&out).contains(&want), "{extra:?}: {}", stderr(&out));
        // The test account may not read the shadow file.
        let out = lab
            .run_cp(&["linux-1:/etc/shadow", target.to_str().unwrap()])
            .await;
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("linux-1:/etc/shadow: permission denied"),
            "{extra:?}: {}",
            stderr(&out)
        );
        assert!(!target.exists());
        assert!(leftovers(lab.local.path()).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_neither_sftp_nor_scp_is_named_with_both_reasons() {
    // No `Subsystem` line, and no `scp` on the session's PATH.
    let lab = Lab::start("SetEnv PATH=/nonexistent").await;
    let (path, _) = device_file(&lab.sshd, "some.bin", 1024);
    let target = lab.local("some.bin");
    let spec = format!("linux-1:{}", path.display());
    let out = lab.run_cp(&[&spec, target.to_str().unwrap()]).await;
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(
        text.contains(&format!(
            "linux-1 offers no file transfer for {}",
            path.display()
        )) && text.contains("no SFTP subsystem")
            && text.contains("no SCP"),
        "{text}"
    );
    assert!(!target.exists());
    let back = format!("linux-1:{}", lab.remote("up.bin").display());
    std::fs::write(lab.local("up.bin"), b"x").unwrap();
    let out = lab
        .run_cp(&[lab.local("up.bin").to_str().unwrap(), &back])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("offers no file transfer"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_off_midway_leaves_no_file_under_the_target_name() {
    let mut lab = Lab::start(SFTP).await;
    // 1 GiB, sparse on the device: far more than every buffer on the way.
    let remote = lab.remote("big.bin");
    std::fs::File::create(&remote)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let target = lab.local("big.bin");
    let spec = format!("linux-1:{}", remote.display());
    let mut cp = lab.cp(&["-q", &spec, target.to_str().unwrap()]);
    let mut child = cp.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let dir = lab.local.path().to_path_buf();
    eventually(60, "bytes in the temporary file", || {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
    })
    .await;
    // The service goes away mid-transfer.
    lab.svc.stop().await;
    let out = within(60, "cp after the service stopped", child.wait()).await;
    assert!(!out.unwrap().success(), "the copy cannot have completed");
    assert!(!target.exists(), "a partial file under the target name");
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_cut_off_midway_leaves_no_file_on_the_device() {
    let lab = Lab::start(SFTP).await;
    let local = lab.local("big.bin");
    std::fs::File::create(&local)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let remote = lab.remote("big.bin");
    let spec = format!("linux-1:{}", remote.display());
    let mut child = lab
        .cp(&["-q", local.to_str().unwrap(), &spec])
        .spawn()
        .unwrap();
    let scratch = lab.sshd.scratch();
    eventually(60, "the upload's temporary file on the device", || {
        !leftovers(&scratch).is_empty()
    })
    .await;
    // The caller dies mid-transfer.
    child.start_kill().unwrap();
    let _ = child.wait().await;
    eventually(30, "the temporary file removed", || {
        leftovers(&scratch).is_empty()
    })
    .await;
    assert!(!remote.exists(), "a partial file under the target name");
}

/// A file of `len` pattern bytes on the device, its SHA-256.
fn device_file(lab_sshd: &Sshd, name: &str, len: usize) -> (PathBuf, String) {
    let path = lab_sshd.scratch().join(name);
    let data = pattern(len);
    std::fs::write(&path, &data).unwrap();
    (path, hex::encode(Sha256::digest(&data)))
}

/// The relayed test's device (the cloud user may reach `core-*`).
const CORE: &str = "core-files";

/// Downloads `path` from [`CORE`] with the gRPC API, returning the bytes
/// and the protocol used.
async fn grpc_download(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    service: Option<pb::ServiceRef>,
    path: &Path,
) -> (Vec<u8>, i32) {
    use pb::file_download_event::Event;
    let mut events = client
        .file_download(pb::FileDownloadRequest {
            service,
            device: CORE.into(),
            remote_path: path.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut data = Vec::new();
    while let Some(event) = events.message().await.unwrap() {
        match event.event {
            Some(Event::Data(chunk)) => data.extend_from_slice(&chunk),
            Some(Event::Done(done)) => {
                assert_eq!(done.bytes, data.len() as u64);
                return (data, done.protocol);
            }
            _ => {}
        }
    }
    panic!("the download ended without `done`");
}

/// Uploads `data` to `path` on [`CORE`] with the gRPC API in 256 KiB
/// messages.
async fn grpc_upload(
    client: &mut pb::broker_client::BrokerClient<tonic::transport::Channel>,
    service: Option<pb::ServiceRef>,
    path: &Path,
    data: Vec<u8>,
) -> pb::FileTransferResult {
    use pb::file_upload_input::Input;
    let start = pb::FileUploadInput {
        input: Some(Input::Start(pb::FileUploadStart {
            service,
            device: CORE.into(),
            remote_path: path.display().to_string(),
            size: data.len() as u64,
            ..Default::default()
        })),
    };
    let chunks: Vec<_> = data
        .chunks(256 << 10)
        .map(|c| pb::FileUploadInput {
            input: Some(Input::Data(bytes::Bytes::copy_from_slice(c))),
        })
        .collect();
    let messages = futures::stream::iter(std::iter::once(start).chain(chunks));
    client.file_upload(messages).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_a_relayed_link_both_ways() {
    use common::cloud::{ALICE, CloudService, TestRelay, broker_for, cloud_service, token_session};
    let sshd = Sshd::start_with(10, SFTP).await;
    let relay = TestRelay::start().await;
    let _svc = CloudService::start(&relay, "SN-CP", &[sshd_device(CORE, sshd.port)]).await;
    let broker = broker_for(&relay).await;
    let (mut client, session, _attach) = token_session(&broker, &relay.token(ALICE)).await;
    let service = cloud_service(&mut client, &session, "SN-CP", None).await;
    let (path, want) = device_file(&sshd, "relayed.bin", 4 << 20);
    let (data, protocol) = grpc_download(&mut client, in_session(&session, &service), &path).await;
    assert_eq!(hex::encode(Sha256::digest(&data)), want);
    assert_eq!(protocol, pb::TransferProtocol::Sftp as i32);
    let back = sshd.scratch().join("relayed-back.bin");
    let done = grpc_upload(&mut client, in_session(&session, &service), &back, data).await;
    assert_eq!(done.bytes, 4 << 20);
    assert_eq!(sha256_file(&back), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_cross_an_integrated_link_both_ways() {
    let sshd = Sshd::start_with(10, SFTP).await;
    let broker = TestBroker::start(&[]).await;
    let out = broker
        .connect_integrated("lab", &[sshd_device("linux-1", sshd.port)])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (path, want) = device_file(&sshd, "integrated.bin", 4 << 20);
    let local = tempfile::tempdir().unwrap();
    let copy = local.path().join("copy.bin");
    let spec = format!("linux-1:{}", path.display());
    let out = broker
        .command()
        .args(["cp", "lab", &spec, copy.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&copy), want);
    let back = sshd.scratch().join("integrated-back.bin");
    let spec = format!("linux-1:{}", back.display());
    let out = broker
        .command()
        .args(["cp", "lab", copy.to_str().unwrap(), &spec])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sha256_file(&back), want);
}
