//! The device-type table: what a shell session needs to know about each kind
//! of device (sans-IO, no state).
//!
//! For each [`Platform`]: how its prompt looks (and which prompts are
//! privileged), the commands that turn paging off, what its pager prints
//! when paging cannot be turned off, how `enable` asks for its secret, what
//! a confirmation question looks like, the error lines that mean a command
//! failed although the device gave no exit status, and whether commands run
//! on exec channels or in a shell by default.
//!
//! Sources: the vendors' CLI guides (Cisco IOS/IOS-XE/IOS-XR/NX-OS/ASA
//! command references, Juniper's Junos CLI user guide, Arista's EOS manual)
//! and, for the prompt shapes found in the field, the platform definitions
//! of netmiko and scrapli (read, not copied). Prompt patterns are matched
//! against one line (the last the device sent, ANSI escapes and carriage
//! returns removed), anchored at both ends.

use std::sync::LazyLock;

use regex::Regex;

use crate::service::inventory::SessionKind;

/// A kind of device, as `--device-type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Platform {
    /// Cisco IOS and IOS-XE (`IOS`, `IOS-XE`).
    IosXe,
    /// Cisco IOS-XR (`IOS-XR`).
    IosXr,
    /// Cisco NX-OS (`NX-OS`).
    NxOs,
    /// Cisco ASA (`ASA`).
    Asa,
    /// Juniper Junos (`JUNOS`).
    Junos,
    /// Arista EOS (`EOS`).
    Eos,
    /// A Linux or other Unix host with a POSIX shell (`LINUX`).
    Linux,
    /// Anything else (`GENERIC`): a prompt ending in `>`, `#`, `$` or `%`,
    /// no paging commands, no enable.
    #[default]
    Generic,
}

/// The names `--device-type` accepts, per platform (the first is canonical;
/// matching ignores case).
const NAMES: &[(Platform, &[&str])] = &[
    (
        Platform::IosXe,
        &["IOS-XE", "IOS", "IOSXE", "CISCO_IOS", "CISCO_XE"],
    ),
    (Platform::IosXr, &["IOS-XR", "IOSXR", "CISCO_XR"]),
    (Platform::NxOs, &["NX-OS", "NXOS", "CISCO_NXOS"]),
    (Platform::Asa, &["ASA", "CISCO_ASA"]),
    (Platform::Junos, &["JUNOS", "JUNIPER", "JUNIPER_JUNOS"]),
    (Platform::Eos, &["EOS", "ARISTA_EOS"]),
    (Platform::Linux, &["LINUX", "UNIX"]),
    (Platform::Generic, &["GENERIC"]),
];

impl Platform {
    /// Every platform, in the order the documentation lists them.
    pub const ALL: [Platform; 8] = [
        Platform::IosXe,
        Platform::IosXr,
        Platform::NxOs,
        Platform::Asa,
        Platform::Junos,
        Platform::Eos,
        Platform::Linux,
        Platform::Generic,
    ];

    /// The platform a device type names (case-insensitive, aliases
    /// included), or `None` for a name not in the table.
    pub fn parse(device_type: &str) -> Option<Platform> {
        NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(device_type)))
            .map(|(p, _)| *p)
    }

    /// The platform for a stored device type; names this build does not
    /// know (records older than the table) are [`Platform::Generic`].
    pub fn for_device_type(device_type: &str) -> Platform {
        Self::parse(device_type).unwrap_or_default()
    }

    /// The canonical name (what `device list` shows for a new device).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(p, _)| *p == self)
            .map(|(_, names)| names[0])
            .unwrap_or("GENERIC")
    }

    /// The accepted names, for error messages: `IOS-XE (IOS, ...), ...`.
    pub fn documented_list() -> String {
        NAMES
            .iter()
            .map(|(_, names)| names[0])
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether commands run on exec channels or in a shell when the device
    /// does not say. IOS/IOS-XE close the connection after one exec request
    /// on many releases and ASA refuses exec requests, so both use a shell;
    /// the others run each command on an exec channel (an exit status, no
    /// prompt guessing).
    pub fn default_session(self) -> SessionKind {
        match self {
            Platform::IosXe | Platform::Asa => SessionKind::Shell,
            _ => SessionKind::Exec,
        }
    }

    /// The platform's shell-session facts.
    pub fn spec(self) -> &'static PlatformSpec {
        match self {
            Platform::IosXe => &IOS_XE,
            Platform::IosXr => &IOS_XR,
            Platform::NxOs => &NX_OS,
            Platform::Asa => &ASA,
            Platform::Junos => &JUNOS,
            Platform::Eos => &EOS,
            Platform::Linux => &LINUX,
            Platform::Generic => &GENERIC,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a shell session needs to know about one platform.
#[derive(Debug)]
pub struct PlatformSpec {
    /// Any prompt of the platform's CLI (user, privileged, configuration),
    /// matched against one whole line.
    pub prompt: Regex,
    /// The privileged prompts among them; `None`: there is no enable step.
    pub privileged: Option<Regex>,
    /// Sent once, in order, after login (each answered by a prompt).
    pub paging_off: &'static [&'static str],
    /// What the pager prints at the end of a page (answered with a space).
    pub pager: Regex,
    /// The question `enable` asks (answered with the enable secret).
    pub enable_prompt: Regex,
    /// A question the device wants answered before it goes on (`[confirm]`,
    /// `[yes/no]`): answered only with a line the caller supplied.
    pub confirm: Regex,
    /// Output lines (at a line start) that mean the command failed.
    pub errors: &'static [&'static str],
}

impl PlatformSpec {
    /// Whether `output` (normalised text) contains one of the platform's
    /// error lines.
    pub fn is_error(&self, output: &str) -> bool {
        if self.errors.is_empty() {
            return false;
        }
        output.lines().any(|line| {
            let line = line.trim_start();
            self.errors.iter().any(|e| line.starts_with(e))
        })
    }
}

/// An exec channel's exit status judged by the platform's error lines:
/// IOS-style devices end `% Invalid input` with status 0, so a status 0
/// whose output rides inline (`tail`: small outputs, where such errors
/// are) and holds an error line becomes 1. Output already streamed on is
/// not judged (it is large, and judging would mean scanning every chunk).
pub fn judge(platform: Platform, exit_status: Option<u32>, tail: &super::Tail) -> Option<u32> {
    let ok = exit_status.unwrap_or(0) == 0;
    if ok
        && platform
            .spec()
            .is_error(&String::from_utf8_lossy(&tail.stdout))
    {
        Some(1)
    } else {
        exit_status
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("the platform table's patterns are valid")
}

/// Cisco-style pager and questions, shared by the Cisco-like platforms.
const CISCO_PAGER: &str = r"(?:--More--|<--- More --->)\s*$";
const CONFIRM: &str = r"(?i)(?:\[confirm\]|\[yes/no\]:?|\[y/n\]:?|\(y/n\)\??|\(yes/no\)\??)\s*$";
const ENABLE_PROMPT: &str = r"(?i)password:\s*$";
const CISCO_ERRORS: &[&str] = &[
    "% Invalid input",
    "% Incomplete command",
    "% Ambiguous command",
    "% Unknown command",
];

static IOS_XE: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    // `r1>`, `r1#`, `r1(config-if)#`.
    prompt: re(r"^[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?[>#]\s?$"),
    privileged: Some(re(r"#\s?$")),
    paging_off: &["terminal length 0", "terminal width 511"],
    pager: re(CISCO_PAGER),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: CISCO_ERRORS,
});

static IOS_XR: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    // `RP/0/RSP0/CPU0:r1#`, `RP/0/RP0/CPU0:r1(config)#`.
    prompt: re(r"^[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?#\s?$"),
    privileged: None,
    paging_off: &["terminal length 0", "terminal width 512"],
    pager: re(CISCO_PAGER),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: CISCO_ERRORS,
});

static NX_OS: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    prompt: re(r"^[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?#\s?$"),
    privileged: None,
    paging_off: &["terminal length 0", "terminal width 511"],
    pager: re(CISCO_PAGER),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: &[
        "% Invalid command",
        "% Invalid input",
        "% Incomplete command",
        "% Ambiguous command",
    ],
});

static ASA: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    // `fw>`, `fw#`, `fw/context(config)#`.
    prompt: re(r"^[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?[>#]\s?$"),
    privileged: Some(re(r"#\s?$")),
    paging_off: &["terminal pager 0"],
    pager: re(r"<--- More --->\s*$"),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: &["ERROR:", "% Invalid input", "% Incomplete command"],
});

static JUNOS: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    // `user@r1>`, `user@r1#` (configuration mode).
    prompt: re(r"^[\w.\-@()/:]{1,63}[>#%]\s?$"),
    privileged: None,
    paging_off: &["set cli screen-length 0", "set cli screen-width 0"],
    pager: re(r"---\(more(?: \d+%)?\)---\s*$"),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: &[
        "error:",
        "syntax error",
        "unknown command",
        "is ambiguous",
        "No valid completions",
    ],
});

static EOS: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    prompt: re(r"^[\w.\-@/:]{1,63}(?:\([\w.\-@/:+]{0,32}\))?[>#]\s?$"),
    privileged: Some(re(r"#\s?$")),
    paging_off: &["terminal length 0", "terminal width 32767"],
    pager: re(r"--More--\s*$"),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: &[
        "% Invalid input",
        "% Incomplete command",
        "% Ambiguous command",
        "% Unavailable command",
        "% Error",
    ],
});

static LINUX: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    // `user@host:~$`, `[user@host dir]#`, `bash-5.2$`.
    prompt: re(r"^[^\n]{0,127}[$#]\s?$"),
    privileged: None,
    paging_off: &[],
    pager: re(r"--More--(?:\(\d+%\))?\s*$"),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(r"(?i)\[y/n\]\s*$"),
    errors: &[],
});

static GENERIC: LazyLock<PlatformSpec> = LazyLock::new(|| PlatformSpec {
    prompt: re(r"^[^\n]{1,127}[>#$%]\s?$"),
    privileged: None,
    paging_off: &[],
    pager: re(r"--More--\s*$"),
    enable_prompt: re(ENABLE_PROMPT),
    confirm: re(CONFIRM),
    errors: &[],
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases() {
        assert_eq!(Platform::parse("ios"), Some(Platform::IosXe));
        assert_eq!(Platform::parse("IOS-XE"), Some(Platform::IosXe));
        assert_eq!(Platform::parse("nx-os"), Some(Platform::NxOs));
        assert_eq!(Platform::parse("junos"), Some(Platform::Junos));
        assert_eq!(Platform::parse("frob"), None);
        assert_eq!(Platform::for_device_type("frob"), Platform::Generic);
        for p in Platform::ALL {
            assert_eq!(Platform::parse(p.name()), Some(p));
            // Every pattern compiles.
            let _ = p.spec();
        }
        assert_eq!(Platform::IosXe.default_session(), SessionKind::Shell);
        assert_eq!(Platform::Linux.default_session(), SessionKind::Exec);
    }

    #[test]
    fn prompts_per_platform() {
        let cases: &[(Platform, &str, bool)] = &[
            (Platform::IosXe, "r1#", true),
            (Platform::IosXe, "r1>", true),
            (Platform::IosXe, "r1(config-if)#", true),
            (Platform::IosXe, "show version", false),
            (Platform::IosXe, "Building configuration...", false),
            (Platform::IosXr, "RP/0/RSP0/CPU0:r1#", true),
            (Platform::NxOs, "n9k-1#", true),
            (Platform::Asa, "fw/admin(config)#", true),
            (Platform::Junos, "admin@mx1>", true),
            (Platform::Junos, "admin@mx1#", true),
            (Platform::Eos, "leaf1(config)#", true),
            (Platform::Linux, "user@host:~$ ", true),
            (Platform::Linux, "[root@host tmp]#", true),
            (Platform::Linux, "total 12", false),
        ];
        for (p, line, want) in cases {
            assert_eq!(p.spec().prompt.is_match(line), *want, "{p} {line:?}");
        }
    }

    #[test]
    fn errors_pagers_and_questions() {
        let ios = Platform::IosXe.spec();
        assert!(ios.is_error("\n% Invalid input detected at '^' marker.\n"));
        assert!(!ios.is_error("description % Invalid input is a line start only\n"));
        assert!(ios.pager.is_match("line\n --More-- "));
        assert!(
            ios.confirm
                .is_match("Clear counters on all interfaces [confirm]")
        );
        assert!(Platform::Junos.spec().pager.is_match("---(more 45%)---"));
        assert!(Platform::Junos.spec().is_error("error: syntax error"));
        assert!(!Platform::Linux.spec().is_error("% Invalid input"));
    }
}
