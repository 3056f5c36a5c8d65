//! The `switchyard` command. Scripts run it once per exec, so it is lean:
//! the everyday client commands (`cli::remote`) run here on a one-thread
//! runtime, and none of the daemons' code is linked in (a third of the
//! relocations and page faults of the full binary at start-up). Every other
//! command replaces this process with `switchyardd` (`cli::handoff`).
//!
//! No signal handlers: Ctrl-C ends a client command at once, and the broker
//! sees its caller go and cancels the caller's work.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{Cli, Command, handoff, remote};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Client(command) = cli.command else {
        eprintln!("error: {}", handoff::exec_full_binary());
        return ExitCode::FAILURE;
    };
    let socket = switchyard::broker::socket::client_path(cli.socket.as_deref());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(remote::run(&socket, command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
