//! File transfer with a device over its pooled SSH connection: SFTP (the
//! `sftp` subsystem, through `russh-sftp`), else SCP (`scp -f` / `scp -t`
//! on an exec channel, [`super::scp`]) for devices without SFTP.
//!
//! Owns: for the length of one transfer, one channel slot (`Lease`) and the
//! channel on it; the channel closes when the transfer ends or is dropped.
//!
//! Takes: a download (`download`: the file's bytes go to the caller as
//! `FileReady`, `FileData` chunks of at most [`FILE_CHUNK`] bytes, each sent
//! before the next is read, so a slow caller stalls the device read) or an
//! upload (`upload`: bytes from the caller's input frames, exactly the
//! announced size).
//!
//! On failure: a typed [`TransferError`] naming the device and path. An
//! SFTP upload writes a temporary file beside the target
//! (`.NAME.switchyard-XXXX.part`) and renames it into place only when every
//! byte arrived and was synced; on any failure, or when the caller goes
//! away, the temporary file is removed. SCP has no rename: an SCP upload cut
//! off midway may leave a partial file on the device (README says so).
//! Every wait on the device is bounded by `idle` (`ssh.command_timeout`).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use russh_sftp::client::SftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tracing::debug;

use super::scp::{self, Ack, FileHeader, Record};
use super::ssh::{Lease, SshPool};
use super::{DeviceTarget, DriverError, Stdin};
use crate::wire::messages::{ErrorCode, Response, TerminalInput, TransferProtocol};

/// Largest `FileData` chunk, in bytes.
pub const FILE_CHUNK: usize = 256 * 1024;

/// A finished transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    /// File bytes copied.
    pub bytes: u64,
    /// SFTP or SCP.
    pub protocol: TransferProtocol,
    /// A host key seen for the first time; the caller records it.
    pub learned_host_key: Option<String>,
}

/// Why a transfer failed. Each names the device and path.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{device} is simulated: it has no files to copy")]
    Simulated { device: String },
    #[error("{device} is reached over Telnet, which carries no files (SFTP and SCP need SSH)")]
    Telnet { device: String },
    #[error("{device}:{path}: no such file or directory")]
    NotFound { device: String, path: String },
    #[error("{device}:{path}: permission denied")]
    PermissionDenied { device: String, path: String },
    #[error("{device}:{path}: not a regular file")]
    NotAFile { device: String, path: String },
    #[error("{device}:{path} is {size} bytes, over the {limit}-byte limit (--max-size)")]
    TooLarge {
        device: String,
        path: String,
        size: u64,
        limit: u64,
    },
    #[error("{device} has no SFTP subsystem ({reason}); try --protocol scp")]
    NoSftp { device: String, reason: String },
    #[error("{device} does not run SCP ({reason})")]
    NoScp { device: String, reason: String },
    #[error(
        "{device} offers no file transfer for {path}: no SFTP subsystem ({sftp}) and no SCP ({scp})"
    )]
    Unsupported {
        device: String,
        path: String,
        sftp: String,
        scp: String,
    },
    #[error("{device}:{path}: the caller sent {got} bytes where it announced {announced}")]
    SizeMismatch {
        device: String,
        path: String,
        announced: u64,
        got: u64,
    },
    #[error("{device}:{path}: the device did not answer within {after:?}")]
    Stalled {
        device: String,
        path: String,
        after: Duration,
    },
    #[error("{device}:{path}: {reason}")]
    Remote {
        device: String,
        path: String,
        reason: String,
    },
    #[error("the caller went away")]
    CallerGone,
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl TransferError {
    /// The wire code; `None` for driver errors (the caller maps those).
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            Self::NotAFile { .. }
            | Self::SizeMismatch { .. }
            | Self::Simulated { .. }
            | Self::Telnet { .. } => ErrorCode::InvalidArgument,
            Self::TooLarge { .. } => ErrorCode::ResourceExhausted,
            Self::NoSftp { .. } | Self::NoScp { .. } | Self::Unsupported { .. } => {
                ErrorCode::Unavailable
            }
            Self::Stalled { .. } => ErrorCode::DeadlineExceeded,
            Self::Remote { .. } => ErrorCode::Unavailable,
            Self::CallerGone => ErrorCode::Cancelled,
            Self::Driver(_) => return None,
        })
    }
}

/// One transfer's fixed facts, for error messages and bounds.
struct Job<'a> {
    device: &'a str,
    path: &'a str,
    idle: Duration,
}

impl Job<'_> {
    /// An error the device reported as text (SCP, SFTP status messages).
    fn remote(&self, reason: impl Into<String>) -> TransferError {
        let reason = reason.into();
        let (device, path) = (self.device.to_string(), self.path.to_string());
        let lower = reason.to_ascii_lowercase();
        if lower.contains("no such file") {
            TransferError::NotFound { device, path }
        } else if lower.contains("permission denied") {
            TransferError::PermissionDenied { device, path }
        } else if lower.contains("not a regular file") || lower.contains("is a directory") {
            TransferError::NotAFile { device, path }
        } else {
            TransferError::Remote {
                device,
                path,
                reason: crate::label::tidy(&reason),
            }
        }
    }

    fn sftp(&self, e: SftpError) -> TransferError {
        match e {
            SftpError::Status(s) => match s.status_code {
                StatusCode::NoSuchFile => self.remote("no such file"),
                StatusCode::PermissionDenied => self.remote("permission denied"),
                code if s.error_message.is_empty() => self.remote(code.to_string()),
                _ => self.remote(s.error_message),
            },
            SftpError::Timeout => self.stalled(),
            other => self.remote(other.to_string()),
        }
    }

    fn io(&self, e: std::io::Error) -> TransferError {
        if e.kind() == std::io::ErrorKind::TimedOut {
            return self.stalled();
        }
        self.remote(e.to_string())
    }

    fn stalled(&self) -> TransferError {
        TransferError::Stalled {
            device: self.device.to_string(),
            path: self.path.to_string(),
            after: self.idle,
        }
    }

    /// `work`, bounded by the idle time.
    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, TransferError>>,
    ) -> Result<T, TransferError> {
        tokio::time::timeout(self.idle, work)
            .await
            .unwrap_or_else(|_| Err(self.stalled()))
    }
}

/// How a transfer runs for this call.
pub struct TransferRequest<'a> {
    pub path: &'a str,
    pub protocol: TransferProtocol,
    /// The longest the device may stay silent (and the channel wait).
    pub idle: Duration,
}

impl SshPool {
    /// Copies `request.path` from the device to `out` (`FileReady`, then
    /// `FileData` chunks); a file over `max_bytes` is refused before any
    /// byte is sent (and stopped if it grows past it).
    pub async fn download(
        &self,
        target: &DeviceTarget,
        request: TransferRequest<'_>,
        max_bytes: Option<u64>,
        out: &mpsc::Sender<Response>,
    ) -> Result<Transferred, TransferError> {
        let job = Job {
            device: &target.name,
            path: request.path,
            idle: request.idle,
        };
        match self.open(target, &job, request.protocol).await? {
            Opened::Sftp(lease, sftp) => {
                let bytes = sftp_download(&job, &sftp, max_bytes, out).await;
                let _ = sftp.close().await;
                transferred(bytes, TransferProtocol::Sftp, lease)
            }
            Opened::Scp(lease, channel, no_sftp) => {
                let bytes = scp_download(&job, channel, max_bytes, out).await;
                transferred(neither(&job, bytes, no_sftp), TransferProtocol::Scp, lease)
            }
        }
    }

    /// Copies exactly `size` bytes from `input` (`Data` frames; the
    /// sender's end is the end) to `request.path` on the device, with
    /// permission bits `mode`; `FileReady` goes to `out` once the device
    /// takes bytes.
    pub async fn upload(
        &self,
        target: &DeviceTarget,
        request: TransferRequest<'_>,
        size: u64,
        mode: u32,
        input: Stdin,
        out: &mpsc::Sender<Response>,
    ) -> Result<Transferred, TransferError> {
        let job = Job {
            device: &target.name,
            path: request.path,
            idle: request.idle,
        };
        let source = Source {
            input,
            announced: size,
            got: 0,
        };
        match self.open(target, &job, request.protocol).await? {
            Opened::Sftp(lease, sftp) => {
                let sftp = Arc::new(sftp);
                let bytes = sftp_upload(&job, &sftp, mode, source, out).await;
                let _ = sftp.close().await;
                transferred(bytes, TransferProtocol::Sftp, lease)
            }
            Opened::Scp(lease, channel, no_sftp) => {
                let bytes = scp_upload(&job, channel, mode, source, out).await;
                transferred(neither(&job, bytes, no_sftp), TransferProtocol::Scp, lease)
            }
        }
    }

    /// A channel with SFTP running on it, or (by `protocol`) one on which
    /// SCP is about to run.
    async fn open(
        &self,
        target: &DeviceTarget,
        job: &Job<'_>,
        protocol: TransferProtocol,
    ) -> Result<Opened, TransferError> {
        let device = target.name.clone();
        if protocol == TransferProtocol::Scp {
            let (lease, channel) = self.open_channel(target, job.idle).await?;
            return Ok(Opened::Scp(lease, channel, None));
        }
        let (lease, mut channel) = self.open_channel(target, job.idle).await?;
        let refused = match job.bounded(subsystem(&mut channel, &device)).await {
            Ok(()) => None,
            Err(TransferError::NoSftp { reason, .. }) => Some(reason),
            Err(e) => return Err(e),
        };
        let Some(sftp_reason) = refused else {
            let config = russh_sftp::client::Config {
                request_timeout_secs: job.idle.as_secs().max(1),
                max_concurrent_writes: 32,
                max_write_packet_len: 128 * 1024,
                ..Default::default()
            };
            let sftp = SftpSession::new_with_config(channel.into_stream(), config)
                .await
                .map_err(|e| job.sftp(e))?;
            return Ok(Opened::Sftp(lease, sftp));
        };
        drop(channel);
        drop(lease);
        if protocol == TransferProtocol::Sftp {
            return Err(TransferError::NoSftp {
                device,
                reason: sftp_reason,
            });
        }
        debug!(device = %device, reason = %sftp_reason, "no SFTP; trying SCP");
        let (lease, channel) = self.open_channel(target, job.idle).await?;
        Ok(Opened::Scp(lease, channel, Some(sftp_reason)))
    }
}

/// A channel ready for the transfer: SFTP running, or SCP about to (with
/// why SFTP was refused, when SCP is the fallback).
enum Opened {
    Sftp(Lease, SftpSession),
    Scp(Lease, russh::Channel<russh::client::Msg>, Option<String>),
}

/// A fallback SCP that is not there either: the device offers neither.
fn neither(
    job: &Job<'_>,
    result: Result<u64, TransferError>,
    no_sftp: Option<String>,
) -> Result<u64, TransferError> {
    match (result, no_sftp) {
        (Err(TransferError::NoScp { reason, .. }), Some(sftp)) => Err(TransferError::Unsupported {
            device: job.device.to_string(),
            path: job.path.to_string(),
            sftp,
            scp: reason,
        }),
        (result, _) => result,
    }
}

fn transferred(
    bytes: Result<u64, TransferError>,
    protocol: TransferProtocol,
    lease: Lease,
) -> Result<Transferred, TransferError> {
    Ok(Transferred {
        bytes: bytes?,
        protocol,
        learned_host_key: lease.host_key.clone(),
    })
}

/// Asks for the `sftp` subsystem and waits for the device's answer.
async fn subsystem(
    channel: &mut russh::Channel<russh::client::Msg>,
    device: &str,
) -> Result<(), TransferError> {
    super::ssh_subsystem::request(channel, "sftp")
        .await
        .map_err(|reason| TransferError::NoSftp {
            device: device.to_string(),
            reason,
        })
}

/// The caller's bytes for an upload, counted against what it announced.
struct Source {
    input: Stdin,
    announced: u64,
    got: u64,
}

impl Source {
    /// The next piece, `None` at the end; more than announced is an error.
    async fn next(&mut self, job: &Job<'_>) -> Result<Option<Vec<u8>>, TransferError> {
        loop {
            match self.input.recv().await {
                Some(TerminalInput::Data(bytes)) => {
                    self.got += bytes.len() as u64;
                    if self.got > self.announced {
                        return Err(self.mismatch(job));
                    }
                    if !bytes.is_empty() {
                        return Ok(Some(bytes));
                    }
                }
                Some(TerminalInput::Resize { .. }) => {}
                None => return Ok(None),
            }
        }
    }

    /// Fails unless every announced byte came.
    fn check_complete(&self, job: &Job<'_>) -> Result<(), TransferError> {
        if self.got == self.announced {
            Ok(())
        } else {
            Err(self.mismatch(job))
        }
    }

    fn mismatch(&self, job: &Job<'_>) -> TransferError {
        TransferError::SizeMismatch {
            device: job.device.to_string(),
            path: job.path.to_string(),
            announced: self.announced,
            got: self.got,
        }
    }
}

async fn send(out: &mpsc::Sender<Response>, response: Response) -> Result<(), TransferError> {
    out.send(response)
        .await
        .map_err(|_| TransferError::CallerGone)
}

fn over_limit(job: &Job<'_>, size: u64, max_bytes: Option<u64>) -> Result<(), TransferError> {
    match max_bytes {
        Some(limit) if size > limit => Err(TransferError::TooLarge {
            device: job.device.to_string(),
            path: job.path.to_string(),
            size,
            limit,
        }),
        _ => Ok(()),
    }
}

/// Reads `reader` to its end (or `expect` bytes), sending full chunks.
async fn pump_to_caller(
    job: &Job<'_>,
    reader: &mut (impl AsyncRead + Unpin),
    expect: Option<u64>,
    max_bytes: Option<u64>,
    out: &mpsc::Sender<Response>,
) -> Result<u64, TransferError> {
    let mut total = 0u64;
    loop {
        let want = match expect {
            Some(size) if size - total < FILE_CHUNK as u64 => (size - total) as usize,
            _ => FILE_CHUNK,
        };
        if want == 0 {
            return Ok(total);
        }
        let mut chunk = BytesMut::with_capacity(want);
        let mut ended = false;
        while chunk.len() < want {
            let mut limited = (&mut *reader).take((want - chunk.len()) as u64);
            let n = job
                .bounded(async { limited.read_buf(&mut chunk).await.map_err(|e| job.io(e)) })
                .await?;
            if n == 0 {
                ended = true;
                break;
            }
        }
        total += chunk.len() as u64;
        over_limit(job, total, max_bytes)?;
        if !chunk.is_empty() {
            let data = chunk.freeze();
            send(out, Response::FileData { data }).await?;
        }
        if ended {
            return match expect {
                Some(size) if total < size => Err(job.remote(format!(
                    "the device ended the file after {total} of {size} bytes"
                ))),
                _ => Ok(total),
            };
        }
    }
}

async fn sftp_download(
    job: &Job<'_>,
    sftp: &SftpSession,
    max_bytes: Option<u64>,
    out: &mpsc::Sender<Response>,
) -> Result<u64, TransferError> {
    let mut file = job
        .bounded(async { sftp.open(job.path).await.map_err(|e| job.sftp(e)) })
        .await?;
    let meta = job
        .bounded(async { file.metadata().await.map_err(|e| job.sftp(e)) })
        .await?;
    if meta.is_dir() {
        return Err(job.remote("is a directory"));
    }
    if let Some(size) = meta.size {
        over_limit(job, size, max_bytes)?;
    }
    let ready = Response::FileReady {
        protocol: TransferProtocol::Sftp,
        size: meta.size,
    };
    send(out, ready).await?;
    let bytes = pump_to_caller(job, &mut file, None, max_bytes, out).await?;
    let _ = file.shutdown().await;
    Ok(bytes)
}

/// The temporary name an SFTP upload writes before its rename.
fn temporary_name(path: &str) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(0)
        ^ std::process::id().rotate_left(16);
    format!("{dir}.{name}.switchyard-{nonce:08x}.part")
}

/// Removes an SFTP upload's temporary file unless disarmed, also when the
/// upload is dropped (its caller went away): the removal then runs in a
/// task of its own, bounded by 10 s.
struct TempFile {
    sftp: Arc<SftpSession>,
    path: Option<String>,
}

impl TempFile {
    async fn remove(mut self) {
        if let Some(path) = self.path.take() {
            let _ = self.sftp.remove_file(path).await;
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        let sftp = self.sftp.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), sftp.remove_file(path)).await;
            });
        }
    }
}

async fn sftp_upload(
    job: &Job<'_>,
    sftp: &Arc<SftpSession>,
    mode: u32,
    mut source: Source,
    out: &mpsc::Sender<Response>,
) -> Result<u64, TransferError> {
    let temp = temporary_name(job.path);
    let attrs = FileAttributes {
        permissions: Some(mode & 0o7777),
        ..FileAttributes::empty()
    };
    let flags = OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE | OpenFlags::TRUNCATE;
    let mut file = job
        .bounded(async {
            sftp.open_with_flags_and_attributes(temp.clone(), flags, attrs)
                .await
                .map_err(|e| job.sftp(e))
        })
        .await?;
    let guard = TempFile {
        sftp: sftp.clone(),
        path: Some(temp.clone()),
    };
    let ready = Response::FileReady {
        protocol: TransferProtocol::Sftp,
        size: None,
    };
    let written = async {
        send(out, ready).await?;
        while let Some(piece) = source.next(job).await? {
            job.bounded(async { file.write_all(&piece).await.map_err(|e| job.io(e)) })
                .await?;
        }
        source.check_complete(job)?;
        job.bounded(async { file.flush().await.map_err(|e| job.io(e)) })
            .await?;
        job.bounded(async { file.sync_all().await.map_err(|e| job.sftp(e)) })
            .await?;
        job.bounded(async { file.shutdown().await.map_err(|e| job.io(e)) })
            .await?;
        job.bounded(rename_into_place(job, sftp, &temp)).await
    }
    .await;
    match written {
        Ok(()) => {
            // Renamed: nothing left to remove.
            let mut guard = guard;
            guard.path = None;
            Ok(source.got)
        }
        Err(e) => {
            guard.remove().await;
            Err(e)
        }
    }
}

/// Renames the finished temporary file over the target. SFTP v3's rename
/// (OpenSSH: `link` + `unlink`) refuses an existing target, so an existing
/// regular file is removed first.
async fn rename_into_place(
    job: &Job<'_>,
    sftp: &SftpSession,
    temp: &str,
) -> Result<(), TransferError> {
    if sftp.rename(temp, job.path).await.is_ok() {
        return Ok(());
    }
    match sftp.metadata(job.path).await {
        Ok(meta) if meta.is_dir() => return Err(job.remote("is a directory")),
        Ok(_) => sftp.remove_file(job.path).await.map_err(|e| job.sftp(e))?,
        Err(_) => {}
    }
    sftp.rename(temp, job.path).await.map_err(|e| job.sftp(e))
}

/// Reads one status byte (and its message), or a record line when the
/// first byte starts one.
async fn read_line(
    job: &Job<'_>,
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> Result<Vec<u8>, TransferError> {
    let mut line = Vec::new();
    let mut limited = (&mut *reader).take(scp::MAX_LINE as u64);
    job.bounded(async {
        limited
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| job.io(e))
    })
    .await?;
    if line.last() != Some(&b'\n') {
        return Err(job.remote("the device's SCP sent a line that never ended"));
    }
    line.pop();
    Ok(line)
}

/// The peer's status; `None` when the channel ended first.
async fn read_ack(
    job: &Job<'_>,
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> Result<Option<Ack>, TransferError> {
    let mut first = [0u8; 1];
    let n = job
        .bounded(async { reader.read(&mut first).await.map_err(|e| job.io(e)) })
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if !Ack::has_message(first[0]) {
        return Ok(Some(Ack::Ok));
    }
    let message = read_line(job, reader).await?;
    Ok(Some(Ack::parse(first[0], &message)))
}

/// Fails unless the peer said ok.
async fn expect_ok(
    job: &Job<'_>,
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
    first: bool,
) -> Result<(), TransferError> {
    match read_ack(job, reader).await? {
        Some(Ack::Ok) => Ok(()),
        Some(Ack::Warning(m) | Ack::Error(m)) => Err(job.remote(m)),
        None if first => Err(TransferError::NoScp {
            device: job.device.to_string(),
            reason: "`scp` ended without answering; is it installed?".into(),
        }),
        None => Err(job.remote("the device's SCP ended the transfer early")),
    }
}

/// Starts `scp -f`/`scp -t` on the channel; its input and output.
async fn start_scp(
    job: &Job<'_>,
    channel: russh::Channel<russh::client::Msg>,
    to_device: bool,
) -> Result<
    (
        BufReader<impl AsyncRead + Unpin + use<>>,
        impl AsyncWrite + Unpin + use<>,
    ),
    TransferError,
> {
    let command = scp::command(to_device, job.path);
    channel
        .exec(false, command)
        .await
        .map_err(|e| TransferError::NoScp {
            device: job.device.to_string(),
            reason: e.to_string(),
        })?;
    let (reader, writer) = tokio::io::split(channel.into_stream());
    Ok((BufReader::with_capacity(FILE_CHUNK, reader), writer))
}

async fn write(
    job: &Job<'_>,
    writer: &mut (impl AsyncWrite + Unpin),
    bytes: &[u8],
) -> Result<(), TransferError> {
    job.bounded(async {
        writer.write_all(bytes).await.map_err(|e| job.io(e))?;
        writer.flush().await.map_err(|e| job.io(e))
    })
    .await
}

async fn scp_download(
    job: &Job<'_>,
    channel: russh::Channel<russh::client::Msg>,
    max_bytes: Option<u64>,
    out: &mpsc::Sender<Response>,
) -> Result<u64, TransferError> {
    let (mut reader, mut writer) = start_scp(job, channel, false).await?;
    // A device whose `scp` is missing may have closed the channel already:
    // what it read (nothing) then says so better than this write's error.
    let _ = write(job, &mut writer, &[0]).await;
    let header = loop {
        let Some(ack) = read_ack_or_record(job, &mut reader).await? else {
            return Err(TransferError::NoScp {
                device: job.device.to_string(),
                reason: "`scp` ended without answering; is it installed?".into(),
            });
        };
        match ack {
            Either::Record(Record::File(header)) => break header,
            Either::Record(Record::Other('T')) => write(job, &mut writer, &[0]).await?,
            Either::Record(Record::Other(_)) => return Err(job.remote("not a regular file")),
            Either::Ack(Ack::Ok) => {}
            Either::Ack(Ack::Warning(m) | Ack::Error(m)) => return Err(job.remote(m)),
        }
    };
    over_limit(job, header.size, max_bytes)?;
    let ready = Response::FileReady {
        protocol: TransferProtocol::Scp,
        size: Some(header.size),
    };
    send(out, ready).await?;
    write(job, &mut writer, &[0]).await?;
    let bytes = pump_to_caller(job, &mut reader, Some(header.size), max_bytes, out).await?;
    expect_ok(job, &mut reader, false).await?;
    write(job, &mut writer, &[0]).await?;
    let _ = writer.shutdown().await;
    Ok(bytes)
}

enum Either {
    Ack(Ack),
    Record(Record),
}

/// What a source sends: a status, or a record line.
async fn read_ack_or_record(
    job: &Job<'_>,
    reader: &mut (impl tokio::io::AsyncBufRead + Unpin),
) -> Result<Option<Either>, TransferError> {
    let buffered = job
        .bounded(async { reader.fill_buf().await.map_err(|e| job.io(e)) })
        .await?;
    let Some(&first) = buffered.first() else {
        return Ok(None);
    };
    if first <= 2 {
        return Ok(read_ack(job, reader).await?.map(Either::Ack));
    }
    let line = read_line(job, reader).await?;
    let record = scp::parse_record(&line).map_err(|e| job.remote(e.to_string()))?;
    Ok(Some(Either::Record(record)))
}

async fn scp_upload(
    job: &Job<'_>,
    channel: russh::Channel<russh::client::Msg>,
    mode: u32,
    mut source: Source,
    out: &mpsc::Sender<Response>,
) -> Result<u64, TransferError> {
    let (mut reader, mut writer) = start_scp(job, channel, true).await?;
    expect_ok(job, &mut reader, true).await?;
    let header = FileHeader {
        mode,
        size: source.announced,
        name: scp::base_name(job.path).to_string(),
    };
    write(job, &mut writer, header.line().as_bytes()).await?;
    expect_ok(job, &mut reader, false).await?;
    let ready = Response::FileReady {
        protocol: TransferProtocol::Scp,
        size: None,
    };
    send(out, ready).await?;
    while let Some(piece) = source.next(job).await? {
        job.bounded(async { writer.write_all(&piece).await.map_err(|e| job.io(e)) })
            .await?;
    }
    source.check_complete(job)?;
    write(job, &mut writer, &[0]).await?;
    expect_ok(job, &mut reader, false).await?;
    let _ = writer.shutdown().await;
    Ok(source.got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_sit_beside_the_target_and_are_hidden() {
        let t = temporary_name("/tmp/dir/image.bin");
        assert!(t.starts_with("/tmp/dir/.image.bin.switchyard-"), "{t}");
        assert!(t.ends_with(".part"), "{t}");
        let t = temporary_name("image.bin");
        assert!(t.starts_with(".image.bin.switchyard-"), "{t}");
    }

    #[test]
    fn device_messages_become_typed_errors() {
        let job = Job {
            device: "r1",
            path: "/x",
            idle: Duration::from_secs(1),
        };
        let e = job.remote("scp: /x: No such file or directory");
        assert!(matches!(e, TransferError::NotFound { .. }), "{e:?}");
        assert_eq!(e.to_string(), "r1:/x: no such file or directory");
        let e = job.remote("scp: /x: Permission denied");
        assert!(matches!(e, TransferError::PermissionDenied { .. }), "{e:?}");
        let e = job.remote("scp: /x: not a regular file");
        assert!(matches!(e, TransferError::NotAFile { .. }), "{e:?}");
        let e = job.remote("disk full");
        assert_eq!(e.to_string(), "r1:/x: disk full");
    }
}
