//! How exec results are shown: readable blocks on a terminal, or one JSON
//! object per device per line for scripts.

use serde::Serialize;

use crate::service::drivers::{CommandResult, DeviceExec, DriverError};

/// One device's results, in the shape both printers use.
#[derive(Debug, Serialize)]
pub struct DeviceReport {
    pub device: String,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub results: Vec<CommandReport>,
}

#[derive(Debug, Serialize)]
pub struct CommandReport {
    pub command: String,
    pub status: &'static str,
    pub output: String,
    pub exit_status: Option<u32>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

const SUCCESS: &str = "success";
const FAILURE: &str = "failure";

impl CommandReport {
    fn new(r: &CommandResult) -> Self {
        let duration_ms = r.duration.as_secs_f64() * 1000.0;
        match &r.outcome {
            Ok(out) => Self {
                command: r.command.clone(),
                status: if out.exit_status.unwrap_or(0) == 0 {
                    SUCCESS
                } else {
                    FAILURE
                },
                output: out.output.clone(),
                exit_status: out.exit_status,
                duration_ms,
                error: None,
            },
            Err(e) => Self {
                command: r.command.clone(),
                status: FAILURE,
                output: String::new(),
                exit_status: None,
                duration_ms,
                error: Some(e.to_string()),
            },
        }
    }
}

impl DeviceReport {
    pub fn new(device: String, result: Result<DeviceExec, DriverError>) -> Self {
        match result {
            Ok(exec) => {
                let results: Vec<_> = exec.results.iter().map(CommandReport::new).collect();
                let ok = results.iter().all(|r| r.status == SUCCESS);
                Self {
                    device,
                    status: if ok { SUCCESS } else { FAILURE },
                    error: None,
                    results,
                }
            }
            Err(e) => Self {
                device,
                status: FAILURE,
                error: Some(e.to_string()),
                results: Vec::new(),
            },
        }
    }

    pub fn succeeded(&self) -> bool {
        self.status == SUCCESS
    }
}

/// Prints reports as they arrive.
pub struct ExecPrinter {
    json: bool,
    total: usize,
    done: usize,
}

impl ExecPrinter {
    pub fn new(json: bool, total: usize) -> Self {
        Self {
            json,
            total,
            done: 0,
        }
    }

    pub fn print(&mut self, report: &DeviceReport) {
        self.done += 1;
        if self.json {
            println!("{}", serde_json::to_string(report).unwrap_or_default());
            return;
        }
        let summary = match &report.error {
            Some(e) => format!("{FAILURE}: {e}"),
            None => report.status.to_string(),
        };
        println!(
            "=== {} [{}/{}] {}",
            report.device, self.done, self.total, summary
        );
        for r in &report.results {
            let status = match (&r.error, r.exit_status) {
                (Some(e), _) => format!(" ({e})"),
                (None, Some(code)) if code != 0 => format!(" (exit status {code})"),
                _ => String::new(),
            };
            println!("--- {}{} [{:.1} ms]", r.command, status, r.duration_ms);
            print!("{}", r.output);
            if !r.output.is_empty() && !r.output.ends_with('\n') {
                println!();
            }
        }
    }

    pub fn finish(&self) {}
}
