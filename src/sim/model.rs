//! The simulated network-OS CLI: a small IOS-like command set whose output is
//! a pure function of the device name and the command.
//!
//! Words may be abbreviated to any unique prefix (`sh ver`), as on real
//! devices. Unknown input gives the familiar `% Invalid input` error.

use sha2::{Digest, Sha256};

/// One simulated device's fixed facts, all derived from its name.
#[derive(Debug, Clone)]
pub struct SimDevice {
    name: String,
    serial: String,
    uptime_minutes: u64,
    mac_seed: [u8; 3],
    interface_count: usize,
}

/// Per-session CLI state (what `terminal length`, `enable` and `disable`
/// change).
#[derive(Debug, Clone, Default)]
pub struct CliState {
    /// Lines per page in a shell (`None` or 0: no pager).
    pub terminal_length: Option<u32>,
    /// In user mode (prompt `name>`): privileged commands are refused
    /// until `enable`. Sessions of devices with an enable secret start here.
    pub user_mode: bool,
}

/// What a command produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Text output and the exit status an SSH exec reports (0 or 1).
    Text { text: String, exit_status: u32 },
    /// Exactly this many bytes of filler output (streamed, never built
    /// whole in memory by the SSH server).
    Bulk(u64),
    /// Output that is not text (`show bytes`: every byte value once).
    Binary(Vec<u8>),
    /// The session should end (`exit`, `logout`).
    Exit,
    /// `enable` in user mode: the shell asks for the enable secret.
    Enable,
    /// Ask this question (ending in `[confirm]`) and wait for a line
    /// before going on (IOS's `clear counters`).
    Confirm(String),
}

/// The command that emits N bytes, for throughput tests: `show bulk N`.
pub const BULK_COMMAND: &str = "show bulk";

/// One line of bulk filler: 63 printable bytes and a newline.
pub const BULK_LINE: &[u8; 64] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+\n";

/// Fills `buf` with bulk filler starting at byte `offset` of the stream.
pub fn bulk_fill(buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = BULK_LINE[((offset + i as u64) % BULK_LINE.len() as u64) as usize];
    }
}

type Handler = fn(&SimDevice, &mut CliState, &[&str]) -> Output;

/// The command table: each entry's words, in full, and its handler.
/// Abbreviation matching works word by word against these.
const COMMANDS: &[(&[&str], Handler)] = &[
    (&["show", "version"], |d, _, _| d.text(d.show_version())),
    (&["show", "interfaces"], |d, _, _| {
        d.text(d.show_interfaces())
    }),
    (&["show", "ip", "interface", "brief"], |d, _, _| {
        d.text(d.show_ip_interface_brief())
    }),
    (&["show", "running-config"], |d, _, _| {
        d.text(d.show_running_config())
    }),
    (&["show", "clock"], |d, _, _| {
        d.text("*12:00:00.000 UTC Mon Jan 1 2024\n".into())
    }),
    (&["show", "bulk"], |_, _, args| match args {
        [n] => match n.parse::<u64>() {
            Ok(n) => Output::Bulk(n),
            Err(_) => invalid(n),
        },
        _ => incomplete(),
    }),
    // Every byte value 0..=255 once, in order: for tests that output is
    // bytes end to end, not text.
    (&["show", "bytes"], |_, _, _| {
        Output::Binary((0..=255).collect())
    }),
    (&["terminal", "length"], |d, state, args| match args {
        [n] => match n.parse::<u32>() {
            Ok(n) => {
                state.terminal_length = Some(n);
                d.text(String::new())
            }
            Err(_) => invalid(n),
        },
        _ => incomplete(),
    }),
    (&["enable"], |d, state, _| {
        if state.user_mode {
            Output::Enable
        } else {
            d.text(String::new())
        }
    }),
    (&["disable"], |d, state, _| {
        state.user_mode = true;
        d.text(String::new())
    }),
    (&["clear", "counters"], |_, _, _| {
        Output::Confirm("Clear \"show interface\" counters on all interfaces [confirm]".into())
    }),
    (&["terminal", "width"], |d, _, args| match args {
        [n] if n.parse::<u32>().is_ok() => d.text(String::new()),
        [n] => invalid(n),
        _ => incomplete(),
    }),
    (&["exit"], |_, _, _| Output::Exit),
    (&["logout"], |_, _, _| Output::Exit),
    (&["quit"], |_, _, _| Output::Exit),
];

/// Commands only privileged mode has.
const PRIVILEGED: &[&[&str]] = &[&["show", "running-config"], &["clear", "counters"]];

fn invalid(at: &str) -> Output {
    Output::Text {
        text: format!("% Invalid input detected at '^' marker: {at}\n"),
        exit_status: 1,
    }
}

fn incomplete() -> Output {
    Output::Text {
        text: "% Incomplete command.\n".into(),
        exit_status: 1,
    }
}

impl SimDevice {
    pub fn new(name: &str) -> Self {
        let digest = Sha256::digest(name.as_bytes());
        let serial = format!(
            "SIM{}",
            hex::encode_upper(&digest[..4]).chars().collect::<String>()
        );
        Self {
            name: name.to_string(),
            serial,
            uptime_minutes: u64::from(u16::from_be_bytes([digest[4], digest[5]])) + 60,
            mac_seed: [digest[6], digest[7], digest[8]],
            interface_count: 2 + (digest[9] % 4) as usize,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// The interactive prompt: `name#` privileged, `name>` in user mode.
    pub fn prompt(&self, state: &CliState) -> String {
        let mark = if state.user_mode { '>' } else { '#' };
        format!("{}{mark}", self.name)
    }

    /// Runs one command line.
    pub fn run(&self, state: &mut CliState, line: &str) -> Output {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.is_empty() {
            return self.text(String::new());
        }
        let lowered: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
        let prefix_matches = |spec: &[&str], n: usize| {
            spec.len() >= n
                && spec[..n]
                    .iter()
                    .zip(&lowered)
                    .all(|(full, given)| full.starts_with(given.as_str()))
        };
        // A word is ambiguous when it abbreviates two different keywords at
        // the same position (`show i` → interfaces / ip).
        for (j, given) in lowered.iter().enumerate() {
            let mut options: Vec<&str> = COMMANDS
                .iter()
                .filter(|(spec, _)| spec.len() > j && prefix_matches(spec, j + 1))
                .map(|(spec, _)| spec[j])
                .collect();
            options.sort_unstable();
            options.dedup();
            if options.len() > 1 && !options.contains(&given.as_str()) {
                return Output::Text {
                    text: format!("% Ambiguous command: \"{line}\"\n"),
                    exit_status: 1,
                };
            }
        }
        let best = COMMANDS
            .iter()
            .filter(|(spec, _)| words.len() >= spec.len() && prefix_matches(spec, spec.len()))
            .max_by_key(|(spec, _)| spec.len());
        match best {
            Some((spec, handler)) => {
                let rest = &words[spec.len()..];
                // Only commands that take arguments accept extra words.
                let takes_args = matches!(
                    spec,
                    ["show", "bulk"] | ["terminal", "length"] | ["terminal", "width"]
                );
                if !takes_args && !rest.is_empty() {
                    return invalid(rest[0]);
                }
                // IOS refuses privileged commands in user mode as unknown.
                if state.user_mode && PRIVILEGED.contains(spec) {
                    return invalid(words[0]);
                }
                handler(self, state, rest)
            }
            None => invalid(words[0]),
        }
    }

    fn text(&self, text: String) -> Output {
        Output::Text {
            text,
            exit_status: 0,
        }
    }

    fn mac(&self, index: usize) -> String {
        let [a, b, c] = self.mac_seed;
        format!("5254.{a:02x}{b:02x}.{c:02x}{index:02x}")
    }

    fn interfaces(&self) -> impl Iterator<Item = (usize, String, String)> + '_ {
        (0..self.interface_count).map(move |i| {
            let ip = format!(
                "10.{}.{}.{}",
                self.mac_seed[0],
                i,
                1 + self.mac_seed[1] % 250
            );
            (i, format!("GigabitEthernet0/{i}"), ip)
        })
    }

    fn show_version(&self) -> String {
        let (days, hours, minutes) = (
            self.uptime_minutes / 1440,
            self.uptime_minutes / 60 % 24,
            self.uptime_minutes % 60,
        );
        format!(
            "Switchyard Simulated Network OS Software, Version 1.0(sim)\n\
             Copyright (c) the Switchyard authors\n\
             \n\
             {name} uptime is {days} days, {hours} hours, {minutes} minutes\n\
             System image file is \"flash:simos-1.0.bin\"\n\
             \n\
             simulated SIM-9000 (virtual) processor with 4194304K bytes of memory.\n\
             Processor board ID {serial}\n\
             {count} Gigabit Ethernet interfaces\n\
             Configuration register is 0x2102\n",
            name = self.name,
            serial = self.serial,
            count = self.interface_count,
        )
    }

    fn show_interfaces(&self) -> String {
        let mut out = String::new();
        for (i, name, ip) in self.interfaces() {
            out.push_str(&format!(
                "{name} is up, line protocol is up\n  \
                 Hardware is Simulated Gigabit Ethernet, address is {mac}\n  \
                 Internet address is {ip}/24\n  \
                 MTU 1500 bytes, BW 1000000 Kbit/sec\n  \
                 {pkts} packets input, {pkts} packets output\n",
                mac = self.mac(i),
                pkts = (i as u64 + 1) * self.uptime_minutes * 17,
            ));
        }
        out
    }

    fn show_ip_interface_brief(&self) -> String {
        let mut out =
            String::from("Interface              IP-Address      OK? Method Status    Protocol\n");
        for (_, name, ip) in self.interfaces() {
            out.push_str(&format!("{name:<22} {ip:<15} YES manual up        up\n"));
        }
        out
    }

    fn show_running_config(&self) -> String {
        let mut out = format!(
            "Building configuration...\n\nCurrent configuration:\n!\nhostname {}\n!\n",
            self.name
        );
        for (_, name, ip) in self.interfaces() {
            out.push_str(&format!(
                "interface {name}\n ip address {ip} 255.255.255.0\n no shutdown\n!\n"
            ));
        }
        out.push_str("end\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(o: Output) -> (String, u32) {
        match o {
            Output::Text { text, exit_status } => (text, exit_status),
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn output_is_deterministic_per_name() {
        let a = SimDevice::new("sim-001");
        let b = SimDevice::new("sim-001");
        let c = SimDevice::new("sim-002");
        let mut s = CliState::default();
        let va = text(a.run(&mut s, "show version")).0;
        assert_eq!(va, text(b.run(&mut s, "show version")).0);
        assert_ne!(va, text(c.run(&mut s, "show version")).0);
        assert!(va.contains("sim-001 uptime is"));
        assert!(va.contains(a.serial()));
    }

    #[test]
    fn abbreviations_errors_and_state() {
        let d = SimDevice::new("r1");
        let mut s = CliState::default();
        assert_eq!(
            text(d.run(&mut s, "sh ver")).0,
            text(d.run(&mut s, "show version")).0
        );
        let (err, status) = text(d.run(&mut s, "show bogus"));
        assert!(err.starts_with("% Invalid input"), "{err}");
        assert_eq!(status, 1);
        let (err, _) = text(d.run(&mut s, "frobnicate"));
        assert!(err.contains("% Invalid input"));
        let (err, _) = text(d.run(&mut s, "show version extra"));
        assert!(err.contains("% Invalid input"));
        assert_eq!(text(d.run(&mut s, "terminal length 0")), (String::new(), 0));
        assert_eq!(s.terminal_length, Some(0));
        assert_eq!(d.run(&mut s, "show bulk 1000"), Output::Bulk(1000));
        assert_eq!(text(d.run(&mut s, "show bulk")).1, 1);
        assert_eq!(d.run(&mut s, "exit"), Output::Exit);
        assert!(
            matches!(d.run(&mut s, "clear counters"), Output::Confirm(q) if q.ends_with("[confirm]"))
        );
        assert_eq!(text(d.run(&mut s, "enable")), (String::new(), 0));
        assert_eq!(d.prompt(&s), "r1#");
        assert_eq!(text(d.run(&mut s, "disable")), (String::new(), 0));
        assert_eq!(d.prompt(&s), "r1>");
        assert_eq!(text(d.run(&mut s, "show running-config")).1, 1);
        assert_eq!(text(d.run(&mut s, "show version")).1, 0);
        assert_eq!(d.run(&mut s, "enable"), Output::Enable);
        // "show i" matches both "show interfaces" and "show ip ...".
        assert!(text(d.run(&mut s, "show i")).0.contains("Ambiguous"));
        assert!(text(d.run(&mut s, "sh ip int br")).0.contains("Interface"));
    }

    #[test]
    fn bulk_fill_is_continuous_across_chunks() {
        let mut whole = vec![0u8; 200];
        bulk_fill(&mut whole, 0);
        let mut a = vec![0u8; 70];
        let mut b = vec![0u8; 130];
        bulk_fill(&mut a, 0);
        bulk_fill(&mut b, 70);
        assert_eq!([a, b].concat(), whole);
        assert_eq!(whole[63], b'\n');
    }
}
