//! Which commands show which shared options in their `--help`.
//!
//! Options declared `global` (`--socket`, `--metrics-listen`, the service's
//! `--db` and `--admin-password-file`) are accepted after any subcommand, so
//! clap lists them in every subcommand's help, including the ones that
//! ignore them. They are listed under headings of their own ("Global
//! options", "Inventory options"), apart from a command's own options, and
//! [`command`] builds the whole command tree with each one hidden from the
//! leaf commands that do not use it. A hidden option is still accepted there
//! (scripts that pass it everywhere keep working); it only leaves the help
//! and the man pages (clap_complete's scripts still offer hidden options).

use clap::{Arg, CommandFactory};

use super::Cli;

/// The heading the root's shared options are listed under (as their
/// `help_heading` attributes in [`super::GlobalArgs`] say).
pub const GLOBAL_HEADING: &str = "Global options";

/// Which leaf commands use an option declared on an ancestor.
struct Scope {
    /// The option's id (its field name).
    id: &'static str,
    /// The command that declares it (path of subcommand names from the
    /// root; empty for the root).
    declared_at: &'static [&'static str],
    /// Whether the leaf command at this path (from the root) uses it.
    used_by: fn(&[&str]) -> bool,
}

const SCOPES: &[Scope] = &[
    Scope {
        id: "metrics_listen",
        declared_at: &[],
        used_by: is_daemon,
    },
    Scope {
        id: "socket",
        declared_at: &[],
        used_by: talks_to_the_broker,
    },
    Scope {
        id: "admin_password_file",
        declared_at: &["service"],
        used_by: reads_secrets,
    },
];

/// The daemons: what [`super::Command::is_daemon`] says, by path.
fn is_daemon(path: &[&str]) -> bool {
    matches!(
        path,
        ["broker"] | ["sim"] | ["demo"] | ["relay", "run"] | ["service", "run" | "exec"]
    )
}

/// Commands that reach (or are) the broker on its socket.
fn talks_to_the_broker(path: &[&str]) -> bool {
    !matches!(
        path.first(),
        Some(&("service" | "relay" | "sim" | "completions" | "man"))
    )
}

/// `switchyard service` commands that unseal the inventory (listings and
/// `info` read no secret).
fn reads_secrets(path: &[&str]) -> bool {
    !matches!(
        path,
        ["service", "info"] | ["service", "device" | "user", "list"]
    )
}

/// The full command tree ([`Cli`]) with shared options scoped as the module
/// docs say: what `switchyardd` parses with and what the completions and
/// man pages are made from.
pub fn command() -> clap::Command {
    let root = Cli::command();
    let mut path = Vec::new();
    scope(root.clone(), &root, &mut path)
}

fn scope(mut cmd: clap::Command, root: &clap::Command, path: &mut Vec<String>) -> clap::Command {
    let children: Vec<String> = cmd
        .get_subcommands()
        .map(|sc| sc.get_name().to_owned())
        .collect();
    if children.is_empty() {
        return hide_unused(cmd, root, path);
    }
    for name in children {
        path.push(name.clone());
        cmd = cmd.mut_subcommand(&name, |sc| scope(sc, root, path));
        path.pop();
    }
    cmd
}

/// Gives a leaf command a hidden copy of each shared option it does not
/// use: clap then does not add the visible one to it (a subcommand's own
/// argument of the same id wins), and the parsed value still reaches the
/// field that declares it.
fn hide_unused(mut cmd: clap::Command, root: &clap::Command, path: &[String]) -> clap::Command {
    let names: Vec<&str> = path.iter().map(String::as_str).collect();
    for scope in SCOPES {
        let declared_here = names.starts_with(scope.declared_at) && names != scope.declared_at;
        if !declared_here || (scope.used_by)(&names) {
            continue;
        }
        if let Some(arg) = declared(root, scope.declared_at, scope.id) {
            cmd = cmd.arg(arg.hide(true));
        }
    }
    cmd
}

fn declared(root: &clap::Command, at: &[&str], id: &str) -> Option<Arg> {
    let mut cmd = root;
    for name in at {
        cmd = cmd.find_subcommand(name)?;
    }
    cmd.get_arguments()
        .find(|a| a.get_id().as_str() == id)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn help(path: &[&str]) -> String {
        let mut cmd = command();
        cmd.build();
        let mut sc = &mut cmd;
        for name in path {
            sc = sc.find_subcommand_mut(name).expect("subcommand");
        }
        sc.render_long_help().to_string()
    }

    #[test]
    fn shared_options_are_shown_only_where_used_under_their_heading() {
        let status = help(&["status"]);
        assert!(status.contains("--socket"), "{status}");
        assert!(status.contains(GLOBAL_HEADING), "{status}");
        assert!(!status.contains("--metrics-listen"), "{status}");
        let broker = help(&["broker"]);
        assert!(broker.contains("--metrics-listen") && broker.contains("--socket"));
        let list = help(&["service", "device", "list"]);
        assert!(!list.contains("--admin-password-file"), "{list}");
        assert!(
            !list.contains("--socket") && !list.contains("--metrics-listen"),
            "{list}"
        );
        assert!(list.contains("--db"), "{list}");
        let add = help(&["service", "device", "add"]);
        assert!(add.contains("--admin-password-file"), "{add}");
        let run = help(&["service", "run"]);
        assert!(run.contains("--metrics-listen"), "{run}");
        // The command's own options come first, apart from the shared ones.
        let own = add.find("--host").expect("--host");
        let shared = add.find(GLOBAL_HEADING).expect("heading");
        assert!(own < shared, "{add}");
    }

    /// Every visible argument and subcommand of every command, by path,
    /// that has no description in `--help` (issue 20, item 11).
    fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(sub_path.clone());
            }
            undescribed(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_option_argument_and_command_has_a_description() {
        let mut cmd = command();
        cmd.build();
        let mut missing = Vec::new();
        undescribed(&cmd, "switchyard", &mut missing);
        assert!(missing.is_empty(), "no description in --help: {missing:#?}");
    }

    #[test]
    fn help_shows_the_default_socket_rule() {
        // Issue 20, item 12: the rule for every user, not only the one
        // with $XDG_RUNTIME_DIR.
        for path in [&["status"][..], &["broker"], &["exec"]] {
            let text = help(path);
            for part in [
                "$SWITCHYARD_SOCKET",
                "$XDG_RUNTIME_DIR/switchyard/broker.sock",
                "/run/switchyard/broker.sock",
            ] {
                assert!(text.contains(part), "{path:?} --help lacks {part}:\n{text}");
            }
        }
    }

    #[test]
    fn hidden_shared_options_are_still_accepted() {
        use clap::FromArgMatches;
        let matches = command()
            .try_get_matches_from([
                "switchyard",
                "status",
                "--metrics-listen",
                "127.0.0.1:9",
                "--socket",
                "/tmp/s.sock",
            ])
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("Cli");
        assert_eq!(
            cli.globals.metrics_listen,
            Some("127.0.0.1:9".parse().expect("addr"))
        );
        let matches = command()
            .try_get_matches_from([
                "switchyard",
                "service",
                "device",
                "list",
                "--admin-password-file",
                "/dev/null",
            ])
            .expect("parses");
        let cli = Cli::from_arg_matches(&matches).expect("Cli");
        let super::super::Command::Service(args) = cli.command else {
            panic!("not a service command");
        };
        assert_eq!(
            args.admin_password_file.as_deref(),
            Some(std::path::Path::new("/dev/null"))
        );
    }
}
