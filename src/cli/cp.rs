//! `switchyard cp NAME DEVICE:REMOTE LOCAL` and `cp NAME LOCAL
//! DEVICE:REMOTE`: file transfer through a named service (the service runs
//! SFTP, else SCP, against the device).
//!
//! A download is written to a hidden temporary file in the target's
//! directory (`.NAME.XXXXXX.part`, mode 0600), fsynced and renamed over the
//! target only once the last byte came; any failure, Ctrl-C or SIGTERM
//! removes it, so the target name never holds a partial file. A progress
//! bar (bytes, rate) goes to stderr when it is a terminal; a summary line
//! (bytes, seconds, rate, protocol) ends every copy unless `--quiet`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;

use super::CliError;
use super::remote::{broker_client, named};
use crate::api::pb;

/// Bytes per upload message.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// `switchyard cp`'s arguments.
#[derive(Debug, clap::Args)]
pub struct CpArgs {
    /// The named service.
    pub name: String,
    /// What to copy: DEVICE:REMOTE_PATH (from the device) or a local path.
    pub source: String,
    /// Where to: a local path or directory, or DEVICE:REMOTE_PATH (a
    /// remote path ending in `/` takes the local file's name).
    pub destination: String,
    /// sftp, scp, or auto (SFTP, else SCP when the device has no SFTP
    /// subsystem).
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
    /// Refuse a file larger than this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_size: Option<u64>,
    /// No summary line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Auto,
    Sftp,
    Scp,
}

impl Protocol {
    fn api(self) -> i32 {
        match self {
            Self::Auto => pb::TransferProtocol::Auto,
            Self::Sftp => pb::TransferProtocol::Sftp,
            Self::Scp => pb::TransferProtocol::Scp,
        }
        .into()
    }
}

/// `DEVICE:PATH` split, or `None` for a local path (one starting with `/`
/// or `.`, or with no `:` before its first `/`).
pub fn remote_spec(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (device, path) = arg.split_once(':')?;
    (!device.is_empty() && !device.contains('/')).then_some((device, path))
}

/// Runs one `cp`.
pub async fn run(socket: &Path, args: CpArgs) -> Result<ExitCode, CliError> {
    let usage = |m: &str| CliError::Usage(m.to_string());
    let copy = match (remote_spec(&args.source), remote_spec(&args.destination)) {
        (Some(_), Some(_)) => return Err(usage("copy between two devices is not supported")),
        (None, None) => {
            return Err(usage(
                "name the device's side as DEVICE:PATH (source or destination)",
            ));
        }
        (Some((device, path)), None) => {
            futures::future::Either::Left(download(socket, &args, device, path))
        }
        (None, Some((device, path))) => {
            futures::future::Either::Right(upload(socket, &args, device, path))
        }
    };
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| io("SIGTERM handler", e))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted("Ctrl-C")),
            _ = term.recv() => Err(CliError::Interrupted("SIGTERM")),
        }
    };
    // A signal drops the copy, and with it the temporary file.
    let done = tokio::select! {
        done = copy => done?,
        stopped = stop => return stopped,
    };
    if !args.quiet {
        eprintln!("{}", done.summary());
    }
    Ok(ExitCode::SUCCESS)
}

fn io(what: impl Into<String>, source: std::io::Error) -> CliError {
    CliError::Io {
        what: what.into(),
        source,
    }
}

/// A finished copy, for the summary line.
struct Done {
    bytes: u64,
    took: Duration,
    protocol: i32,
}

impl Done {
    fn summary(&self) -> String {
        let secs = self.took.as_secs_f64().max(1e-6);
        let protocol = match pb::TransferProtocol::try_from(self.protocol) {
            Ok(pb::TransferProtocol::Scp) => "scp",
            _ => "sftp",
        };
        format!(
            "{} bytes in {:.2} s ({:.1} MB/s, {protocol})",
            self.bytes,
            secs,
            self.bytes as f64 / secs / 1e6
        )
    }
}

/// A progress bar on stderr when it is a terminal.
fn progress(size: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(size, indicatif::ProgressDrawTarget::stderr());
    let template = "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}";
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Where a download goes: `local`, or the remote file's name inside it
/// when it is a directory.
fn download_target(local: &str, remote: &str) -> PathBuf {
    let local = PathBuf::from(local);
    if local.is_dir() || local.as_os_str().to_string_lossy().ends_with('/') {
        local.join(crate::service::drivers::scp::base_name(remote))
    } else {
        local
    }
}

async fn download(
    socket: &Path,
    args: &CpArgs,
    device: &str,
    remote: &str,
) -> Result<Done, CliError> {
    use pb::file_download_event::Event;
    let started = Instant::now();
    let target = download_target(&args.destination, remote);
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Created before the call, so an unwritable directory fails first.
    let mut part = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(dir)
        .map_err(|e| io(format!("cannot write in {}", dir.display()), e))?;
    let mut broker = broker_client(socket).await?;
    let mut events = broker
        .file_download(pb::FileDownloadRequest {
            service: named(&args.name),
            device: device.to_string(),
            remote_path: remote.to_string(),
            protocol: args.protocol.api(),
            max_bytes: args.max_size.unwrap_or(0),
        })
        .await?
        .into_inner();
    let mut bar = None;
    let mut got = 0u64;
    let write_err = |e| io(format!("cannot write {}", part_name(&target)), e);
    let done = loop {
        let Some(event) = events.message().await? else {
            return Err(CliError::Remote(tonic::Status::unavailable(format!(
                "the copy of {device}:{remote} ended early; nothing was kept"
            ))));
        };
        match event.event {
            Some(Event::Started(s)) => bar = progress(s.size),
            Some(Event::Data(data)) => {
                part.write_all(&data).map_err(write_err)?;
                got += data.len() as u64;
                if let Some(bar) = &bar {
                    bar.set_position(got);
                }
            }
            Some(Event::Done(done)) => break done,
            None => {}
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if done.bytes != got {
        return Err(CliError::Remote(tonic::Status::data_loss(format!(
            "{device}:{remote}: the service counted {} bytes, {got} arrived; nothing was kept",
            done.bytes
        ))));
    }
    part.as_file().sync_all().map_err(write_err)?;
    part.persist(&target)
        .map_err(|e| io(format!("cannot rename into {}", target.display()), e.error))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Done {
        bytes: got,
        took: started.elapsed(),
        protocol: done.protocol,
    })
}

fn part_name(target: &Path) -> String {
    format!("a temporary file beside {}", target.display())
}

async fn upload(
    socket: &Path,
    args: &CpArgs,
    device: &str,
    remote: &str,
) -> Result<Done, CliError> {
    use pb::file_upload_input::Input;
    let started = Instant::now();
    let local = PathBuf::from(&args.source);
    let file = tokio::fs::File::open(&local)
        .await
        .map_err(|e| io(format!("cannot read {}", local.display()), e))?;
    let meta = file
        .metadata()
        .await
        .map_err(|e| io(format!("cannot read {}", local.display()), e))?;
    if !meta.is_file() {
        return Err(CliError::Usage(format!(
            "{} is not a regular file",
            local.display()
        )));
    }
    let size = meta.len();
    if let Some(limit) = args.max_size
        && size > limit
    {
        return Err(CliError::Usage(format!(
            "{} is {size} bytes, over the {limit}-byte limit (--max-size)",
            local.display()
        )));
    }
    let remote_path = if remote.is_empty() || remote.ends_with('/') {
        let name = local
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{remote}{name}")
    } else {
        remote.to_string()
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    let start = pb::FileUploadInput {
        input: Some(Input::Start(pb::FileUploadStart {
            service: named(&args.name),
            device: device.to_string(),
            remote_path,
            protocol: args.protocol.api(),
            size,
            mode,
        })),
    };
    let bar = progress(Some(size));
    let reader = file.take(size);
    let chunks = futures::stream::unfold((reader, bar.clone()), |(mut reader, bar)| async move {
        let mut buf = bytes::BytesMut::with_capacity(UPLOAD_CHUNK);
        while buf.len() < UPLOAD_CHUNK {
            match reader.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if buf.is_empty() {
            // End of file (a read error ends it short: the service
            // then refuses the copy as smaller than announced).
            return None;
        }
        if let Some(bar) = &bar {
            bar.inc(buf.len() as u64);
        }
        let message = pb::FileUploadInput {
            input: Some(Input::Data(buf.freeze())),
        };
        Some((message, (reader, bar)))
    });
    let messages = futures::StreamExt::chain(futures::stream::once(async { start }), chunks);
    let mut broker = broker_client(socket).await?;
    let result = broker.file_upload(messages).await?.into_inner();
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(Done {
        bytes: result.bytes,
        took: started.elapsed(),
        protocol: result.protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_sides_are_told_from_local_paths() {
        assert_eq!(remote_spec("r1:/tmp/x"), Some(("r1", "/tmp/x")));
        assert_eq!(remote_spec("r1:x"), Some(("r1", "x")));
        assert_eq!(remote_spec("r1:"), Some(("r1", "")));
        assert_eq!(remote_spec("/tmp/a:b"), None);
        assert_eq!(remote_spec("./a:b"), None);
        assert_eq!(remote_spec("dir/a:b"), None);
        assert_eq!(remote_spec("plain"), None);
        assert_eq!(remote_spec(":x"), None);
    }
}
