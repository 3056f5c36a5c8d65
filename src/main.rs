//! The `switchyard` command. Scripts run it once per exec, so it is lean:
//! the everyday client commands (`cli::remote`) run here on a one-thread
//! runtime, and none of the daemons' code is linked in (a fifth of the
//! relocations and half the page faults of the full binary at start-up).
//! It parses only those commands (`FrontCli`); every other command line
//! replaces this process with `switchyardd` (`cli::handoff`).
//!
//! Configuration: the front reads none. When any applies (`--config`,
//! `$SWITCHYARD_CONFIG`, a file at the default path, or a
//! `SWITCHYARD_<SECTION>__<KEY>` variable) it hands the command to
//! `switchyardd`, whose one loader reads it; so the socket rule
//! (`broker::socket::resolve`: `--socket`, `$SWITCHYARD_SOCKET`, the
//! config's `broker.socket`, the default) and the config errors are the
//! same for every command, and the front links no TOML parser. The cost
//! falls only on runs with configuration: on the CI machine class a
//! one-shot command took ≈2.4 ms in the front alone and ≈6.4 ms handed off
//! (release build, 50 runs each, no broker listening).
//!
//! No signal handlers: Ctrl-C ends a client command at once, and the broker
//! sees its caller go and cancels the caller's work.

use std::process::ExitCode;

use clap::Parser;
use switchyard::cli::{FrontCli, handoff, remote};

fn main() -> ExitCode {
    // Help, version, daemon and admin commands and malformed command lines
    // are all switchyardd's: it parses the whole command line.
    // So is any command configuration applies to.
    let parsed = FrontCli::try_parse()
        .ok()
        .filter(|cli| !switchyard::config::in_use(cli.globals.config.as_deref()));
    let Some(FrontCli { globals, command }) = parsed else {
        eprintln!("error: {}", handoff::exec_full_binary());
        return ExitCode::FAILURE;
    };
    let socket = switchyard::broker::socket::resolve(globals.socket.as_deref(), None);
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
