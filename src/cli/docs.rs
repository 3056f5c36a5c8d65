//! `switchyard completions SHELL` and `switchyard man DIR`: shell
//! completions (clap_complete) and man pages (clap_mangen) generated from
//! the same clap definitions as `--help`, so they never drift from it.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

use super::CliError;

/// The shells completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` to stdout.
pub fn completions(shell: CompletionShell) -> Result<ExitCode, CliError> {
    use clap_complete::Shell;
    let shell = match shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut super::help_scope::command(),
        "switchyard",
        &mut script,
    );
    super::write_stdout(format_args!("{}", String::from_utf8_lossy(&script)));
    Ok(ExitCode::SUCCESS)
}

/// Writes `switchyard.1` and a page per subcommand (`switchyard-NAME.1`,
/// nested ones `switchyard-service-device-add.1`) into `dir`.
pub fn man_pages(dir: &Path) -> Result<ExitCode, CliError> {
    std::fs::create_dir_all(dir)
        .map_err(CliError::io(format!("cannot create {}", dir.display())))?;
    clap_mangen::generate_to(super::help_scope::command(), dir).map_err(CliError::io(format!(
        "cannot write man pages into {}",
        dir.display()
    )))?;
    super::outln!("wrote man pages into {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
