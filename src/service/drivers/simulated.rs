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
                    Ok(CommandOutput {
                        output: String::from_utf8_lossy(&buf).into_owned(),
                        exit_status: Some(0),
                    })
                }
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
