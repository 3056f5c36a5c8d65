//! How exec results are shown: readable blocks on a terminal, or one JSON
//! object per device per line for scripts. Results arrive as events (output
//! chunks, command completions, device completions) from the broker or
//! from local drivers; [`ExecCollector`] assembles them per device.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::outln;
use crate::wire::messages::{CommandDone, Response};

/// What to run, shared by `switchyard exec` and `switchyard service exec`.
#[derive(Debug, Args)]
pub struct ExecOptions {
    /// Devices to run on (a device named twice runs and is reported once).
    #[arg(required = true)]
    pub devices: Vec<String>,
    /// Command to run (repeatable; run in order).
    #[arg(short = 'c', long = "command", required = true)]
    pub commands: Vec<String>,
    /// Per-command timeout in seconds.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// One JSON object per device on stdout, each printed whole when its
    /// device ends (`--raw` streams one device's output as it comes).
    #[arg(long)]
    pub json: bool,
}

impl ExecOptions {
    /// The devices, each once, in the order first named. The service
    /// merges duplicates too; sending each once keeps the request small and
    /// the report's count right.
    pub fn distinct_devices(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.devices
            .iter()
            .filter(|d| seen.insert(d.as_str()))
            .cloned()
            .collect()
    }

    pub fn timeout(&self) -> Result<Option<Duration>, super::CliError> {
        self.timeout
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        super::CliError::Usage(
                            "--timeout must be a positive number of seconds".into(),
                        )
                    })
            })
            .transpose()
    }
}

/// One device's results.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub device: String,
    pub status: &'static str,
    /// Why the device failed as a whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The gRPC code name of `error` (`NOT_FOUND` for a device that does
    /// not exist or that the remote user may not use, `UNAVAILABLE` for
    /// one that cannot be reached, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    pub results: Vec<CommandReport>,
}

/// Why a device failed as a whole: its gRPC code name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceError {
    pub code: String,
    pub message: String,
}

/// One command's result. In JSON, `output`/`stderr` are the bytes decoded
/// as UTF-8 with invalid sequences replaced (U+FFFD); when the bytes are
/// not valid UTF-8, `output_base64`/`stderr_base64` carry them exactly
/// (standard base64, RFC 4648 §4), so nothing is lost.
#[derive(Debug, Clone, Serialize)]
pub struct CommandReport {
    pub command: String,
    pub status: &'static str,
    pub output: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_base64: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    pub exit_status: Option<u32>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The stdout bytes exactly (text output writes these).
    #[serde(skip)]
    pub raw: Vec<u8>,
    /// The stderr bytes exactly.
    #[serde(skip)]
    pub raw_stderr: Vec<u8>,
}

const SUCCESS: &str = "success";
const FAILURE: &str = "failure";

/// Output the CLI holds for reports it prints only when their device ends
/// (several devices), across all devices of the call: 256 MiB.
pub const DEFAULT_BUFFER: u64 = 256 * 1024 * 1024;

impl DeviceReport {
    pub fn succeeded(&self) -> bool {
        self.status == SUCCESS
    }
}

/// `bytes` as JSON text: lossy UTF-8, plus base64 when that lost anything.
fn text_and_base64(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

#[derive(Default)]
struct Partial {
    /// Per command: stdout, stderr.
    outputs: Vec<[Vec<u8>; 2]>,
    /// Per command: output dropped for the buffer budget.
    dropped: Vec<bool>,
    results: Vec<Option<CommandReport>>,
    held: u64,
}

/// Assembles exec events into per-device reports, holding at most `budget`
/// bytes of output across all devices (more is dropped, and the command
/// is reported failed saying so).
pub struct ExecCollector {
    devices: Vec<String>,
    commands: Vec<String>,
    partial: Vec<Partial>,
    budget: u64,
    held: u64,
}

impl ExecCollector {
    pub fn new(devices: Vec<String>, commands: Vec<String>) -> Self {
        Self::with_budget(devices, commands, DEFAULT_BUFFER)
    }

    /// A collector holding at most `budget` bytes of output at once.
    pub fn with_budget(devices: Vec<String>, commands: Vec<String>, budget: u64) -> Self {
        let partial = devices
            .iter()
            .map(|_| Partial {
                outputs: vec![[Vec::new(), Vec::new()]; commands.len()],
                dropped: vec![false; commands.len()],
                results: vec![None; commands.len()],
                held: 0,
            })
            .collect();
        Self {
            devices,
            commands,
            partial,
            budget,
            held: 0,
        }
    }

    /// A chunk of output (`stderr`: of the command's standard error).
    pub fn output(&mut self, device: u32, command: u32, stderr: bool, data: &[u8]) {
        let Some(p) = self.partial.get_mut(device as usize) else {
            return;
        };
        let (Some(out), Some(dropped)) = (
            p.outputs.get_mut(command as usize),
            p.dropped.get_mut(command as usize),
        ) else {
            return;
        };
        let len = data.len() as u64;
        if *dropped || self.held + len > self.budget {
            *dropped = true;
            return;
        }
        self.held += len;
        p.held += len;
        out[usize::from(stderr)].extend_from_slice(data);
    }

    /// A command finished; its output tails are what was not sent in
    /// chunks.
    pub fn command_done(&mut self, device: u32, done: CommandDone) {
        let budget = self.budget;
        let Some(p) = self.partial.get_mut(device as usize) else {
            return;
        };
        let index = done.command as usize;
        let (Some(name), Some(buffers)) = (self.commands.get(index), p.outputs.get_mut(index))
        else {
            return;
        };
        let [mut raw, mut raw_stderr] = std::mem::take(buffers);
        raw.extend_from_slice(&done.output);
        raw_stderr.extend_from_slice(&done.stderr);
        let error = if p.dropped[index] {
            Some(format!(
                "output beyond the {budget}-byte buffer for multi-device reports was \
                 dropped; raise --max-buffer, or run one device with --raw to stream it"
            ))
            .map(|e| match done.error {
                Some(other) => format!("{other}; {e}"),
                None => e,
            })
        } else {
            done.error
        };
        let ok = error.is_none() && done.exit_status.unwrap_or(0) == 0;
        let (output, output_base64) = text_and_base64(&raw);
        let (stderr, stderr_base64) = text_and_base64(&raw_stderr);
        p.results[index] = Some(CommandReport {
            command: name.clone(),
            status: if ok { SUCCESS } else { FAILURE },
            output,
            output_base64,
            stderr,
            stderr_base64,
            exit_status: done.exit_status,
            duration_ms: done.duration_us as f64 / 1000.0,
            error,
            raw,
            raw_stderr,
        });
    }

    /// A device finished: its command results, or its failure. Returns the
    /// device's report.
    pub fn device_done(
        &mut self,
        device: u32,
        commands: Vec<CommandDone>,
        error: Option<DeviceError>,
    ) -> Option<DeviceReport> {
        for done in commands {
            self.command_done(device, done);
        }
        let name = self.devices.get(device as usize)?.clone();
        let p = std::mem::take(self.partial.get_mut(device as usize)?);
        self.held = self.held.saturating_sub(p.held);
        let results: Vec<CommandReport> = p.results.into_iter().flatten().collect();
        let ok = error.is_none() && results.iter().all(|r| r.status == SUCCESS);
        Some(DeviceReport {
            device: name,
            status: if ok { SUCCESS } else { FAILURE },
            error_code: error.as_ref().map(|e| e.code.clone()),
            error: error.map(|e| e.message),
            results,
        })
    }

    /// Feeds a protocol event (local drivers produce these).
    pub fn feed(&mut self, event: Response) -> Option<DeviceReport> {
        match event {
            Response::ExecOutput {
                device,
                command,
                stderr,
                data,
            } => {
                self.output(device, command, stderr, &data);
                None
            }
            Response::ExecDevice {
                device,
                commands,
                error,
            } => self.device_done(
                device,
                commands,
                error.map(|e| DeviceError {
                    code: crate::api::convert::code_name(e.code).to_string(),
                    message: e.message,
                }),
            ),
            _ => None,
        }
    }
}

/// Prints reports as they arrive, with a progress bar on a terminal when
/// several devices are involved, and a summary line at the end.
pub struct ExecPrinter {
    json: bool,
    /// Output was printed as it came ([`super::exec_live::LivePrinter`]):
    /// reports print their status lines only.
    live: bool,
    total: usize,
    done: usize,
    failed: usize,
    progress: Option<ProgressBar>,
    started: std::time::Instant,
}

impl ExecPrinter {
    pub fn new(json: bool, total: usize) -> Self {
        let progress = (!json && total > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} devices {msg}") {
                bar.set_style(style);
            }
            bar
        });
        Self {
            json,
            live: false,
            total,
            done: 0,
            failed: 0,
            progress,
            started: std::time::Instant::now(),
        }
    }

    /// A printer for one device whose output was printed as it came: its
    /// report prints as the `=== DEVICE` and `--- COMMAND` status lines
    /// without the output.
    pub fn live() -> Self {
        Self {
            live: true,
            ..Self::new(false, 1)
        }
    }

    pub fn print(&mut self, report: &DeviceReport) {
        self.done += 1;
        self.failed += usize::from(!report.succeeded());
        if self.json {
            outln!("{}", serde_json::to_string(report).unwrap_or_default());
            return;
        }
        let text = render(report, self.done, self.total, !self.live);
        match &self.progress {
            Some(bar) => {
                bar.suspend(|| super::write_stdout_bytes(&text));
                bar.inc(1);
                if self.failed > 0 {
                    bar.set_message(format!("({} failed)", self.failed));
                }
            }
            None => super::write_stdout_bytes(&text),
        }
    }

    /// Number of devices that failed so far.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// Clears the progress bar and prints the summary: one line of text
    /// (`exec: 3 devices: 2 succeeded, 1 failed (partial success) in 1.2 s`)
    /// or, with `--json`, a last JSON line `{"summary": {...}}` (`status`
    /// SUCCESS / PARTIAL_SUCCESS / FAILURE, `devices`, `succeeded`,
    /// `failed`, `elapsed_ms`).
    pub fn finish(&self) {
        if let Some(bar) = &self.progress {
            bar.finish_and_clear();
        }
        let succeeded = self.done - self.failed;
        let status = match (succeeded, self.failed) {
            (s, 0) if s > 0 => "SUCCESS",
            (0, _) => "FAILURE",
            _ => "PARTIAL_SUCCESS",
        };
        let elapsed = self.started.elapsed();
        if self.json {
            let summary = serde_json::json!({"summary": {
                "status": status,
                "devices": self.total,
                "succeeded": succeeded,
                "failed": self.failed,
                "elapsed_ms": elapsed.as_secs_f64() * 1000.0,
            }});
            outln!("{summary}");
        } else {
            outln!(
                "exec: {} device{}: {succeeded} succeeded, {} failed ({}) in {:.2} s",
                self.total,
                if self.total == 1 { "" } else { "s" },
                self.failed,
                status.to_lowercase().replace('_', " "),
                elapsed.as_secs_f64()
            );
        }
    }
}

/// A report as text: header lines, then (`with_output`) each command's
/// stdout and stderr bytes exactly as the device sent them.
fn render(report: &DeviceReport, done: usize, total: usize, with_output: bool) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::new();
    let summary = match &report.error {
        Some(e) => format!("{FAILURE}: {e}"),
        None => report.status.to_string(),
    };
    let _ = writeln!(out, "=== {} [{done}/{total}] {summary}", report.device);
    for r in &report.results {
        let status = match (&r.error, r.exit_status) {
            (Some(e), _) => format!(" ({e})"),
            (None, Some(code)) if code != 0 => format!(" (exit status {code})"),
            _ => String::new(),
        };
        let _ = writeln!(out, "--- {}{} [{:.1} ms]", r.command, status, r.duration_ms);
        if !with_output {
            continue;
        }
        for bytes in [&r.raw, &r.raw_stderr] {
            out.extend_from_slice(bytes);
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                out.push(b'\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(command: u32, output: &[u8]) -> CommandDone {
        CommandDone {
            command,
            output: output.to_vec(),
            stderr: Vec::new(),
            exit_status: Some(0),
            duration_us: 1,
            error: None,
        }
    }

    #[test]
    fn reports_hold_at_most_the_budget_and_say_when_output_was_dropped() {
        let devices = vec!["a".to_string(), "b".to_string()];
        let mut c = ExecCollector::with_budget(devices, vec!["x".into()], 10);
        c.output(0, 0, false, b"12345678");
        // b's chunk would pass the budget across both devices: dropped.
        c.output(1, 0, false, b"abcdef");
        let b = c.device_done(1, vec![done(0, b"")], None).unwrap();
        assert_eq!(b.status, FAILURE);
        assert!(
            b.results[0]
                .error
                .as_deref()
                .unwrap()
                .contains("--max-buffer")
        );
        let a = c.device_done(0, vec![done(0, b"9")], None).unwrap();
        assert_eq!(a.status, SUCCESS);
        assert_eq!(a.results[0].raw, b"123456789");
    }

    #[test]
    fn json_carries_bytes_that_are_not_utf8_in_base64_beside_lossy_text() {
        let mut c = ExecCollector::new(vec!["a".into()], vec!["x".into()]);
        let mut d = done(0, b"ok\xff");
        d.stderr = b"warn\n".to_vec();
        let report = c.device_done(0, vec![d], None).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        let r = &json["results"][0];
        assert_eq!(r["output"], "ok\u{fffd}");
        assert_eq!(r["output_base64"], "b2v/");
        assert_eq!(r["stderr"], "warn\n");
        assert!(r.get("stderr_base64").is_none());
    }
}
