//! The `simulator` driver: the simulated CLI run in-process, with no network
//! and no SSH. Benchmarks use it to measure the broker and service alone.

use std::time::Instant;

use super::{CommandError, CommandOutput, CommandResult, DeviceExec, DeviceTarget};
use crate::sim::model::{CliState, Output, SimDevice, bulk_fill};

/// Runs each command against a simulated device named like the target.
pub fn exec(target: &DeviceTarget, commands: &[String], max_output: u64) -> DeviceExec {
    let device = SimDevice::new(&target.name);
    let mut state = CliState::default();
    let results = commands
        .iter()
        .map(|command| {
            let started = Instant::now();
            let outcome = match device.run(&mut state, command) {
                Output::Text { text, exit_status } => Ok(CommandOutput {
                    output: text,
                    exit_status: Some(exit_status),
                }),
                Output::Bulk(n) if n > max_output => {
                    Err(CommandError::TooMuchOutput { limit: max_output })
                }
                Output::Bulk(n) => {
                    let mut buf = vec![0u8; n as usize];
                    bulk_fill(&mut buf, 0);
                    // The bulk text is ASCII: the buffer becomes the
                    // output as is, not a second copy of it.
                    let output = String::from_utf8(buf)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
                    Ok(CommandOutput {
                        output,
                        exit_status: Some(0),
                    })
                }
                Output::Enable => Ok(CommandOutput {
                    output: "% enable needs an interactive session\n".into(),
                    exit_status: Some(1),
                }),
                Output::Confirm(question) => Ok(CommandOutput {
                    output: format!("{question}\n"),
                    exit_status: Some(1),
                }),
                Output::Exit => Ok(CommandOutput {
                    output: String::new(),
                    exit_status: Some(0),
                }),
            };
            CommandResult {
                command: command.clone(),
                duration: started.elapsed(),
                outcome,
            }
        })
        .collect();
    DeviceExec {
        results,
        learned_host_key: None,
    }
}
