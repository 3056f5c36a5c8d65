//! The SCP protocol's records and answers (sans-IO): what `scp -f` (the
//! source) and `scp -t` (the sink) exchange on an exec channel.
//!
//! There is no RFC; the protocol is OpenSSH's `scp.c` (the "rcp protocol"):
//! each record is one line — `C<mode> <size> <name>\n` announces a file of
//! `size` bytes that follow, then one status byte; `T…`, `D…`, `E` (times,
//! directories) are not used here. Every record and every file is answered
//! by one byte: `0` (ok), `1` (a warning: a message line follows), `2` (a
//! fatal error: a message line follows). OpenSSH's sink and source both
//! send a status byte before anything else.
//!
//! **Invariant:** nothing here trusts a length the device sends: a line is
//! at most [`MAX_LINE`] bytes (the caller's reader enforces it), a size is
//! a `u64` parsed strictly, a name never carries a `/`.

/// Longest record or message line accepted from a device, in bytes.
pub const MAX_LINE: usize = 4096;

/// A file record: `C<mode> <size> <name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Permission bits (the record's octal field).
    pub mode: u32,
    /// Bytes of file data after the record.
    pub size: u64,
    /// The file's name (no directory part).
    pub name: String,
}

impl FileHeader {
    /// The record as sent to a sink, newline included.
    pub fn line(&self) -> String {
        format!("C{:04o} {} {}\n", self.mode & 0o7777, self.size, self.name)
    }
}

/// What a source sends first: a file, or a status line instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    File(FileHeader),
    /// Any other record (`T`, `D`, `E`): not a single file.
    Other(char),
}

/// A status byte with its message, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    Ok,
    /// Status 1: a message; the peer goes on.
    Warning(String),
    /// Status 2 (or any other byte): a message; the peer gave up.
    Error(String),
}

impl Ack {
    /// Whether the status byte `first` is followed by a message line.
    pub fn has_message(first: u8) -> bool {
        first != 0
    }

    /// The status from its byte and message line (without the newline).
    pub fn parse(first: u8, message: &[u8]) -> Self {
        let text = String::from_utf8_lossy(message).trim().to_string();
        match first {
            0 => Self::Ok,
            1 => Self::Warning(text),
            _ => Self::Error(text),
        }
    }
}

/// A malformed record from the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SCP record {line:?}: {reason}")]
pub struct RecordError {
    pub line: String,
    pub reason: &'static str,
}

/// Parses a source's record line (without its newline).
pub fn parse_record(line: &[u8]) -> Result<Record, RecordError> {
    let text = String::from_utf8_lossy(line);
    let bad = |reason| RecordError {
        line: text.chars().take(80).collect(),
        reason,
    };
    let Some(kind) = text.chars().next() else {
        return Err(bad("empty"));
    };
    if kind != 'C' {
        return Ok(Record::Other(kind));
    }
    let mut fields = text[1..].splitn(3, ' ');
    let mode = fields.next().ok_or_else(|| bad("no mode"))?;
    let size = fields.next().ok_or_else(|| bad("no size"))?;
    let name = fields.next().ok_or_else(|| bad("no name"))?;
    let mode = u32::from_str_radix(mode, 8).map_err(|_| bad("mode is not octal"))?;
    if !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("size is not a number"));
    }
    let size = size
        .parse::<u64>()
        .map_err(|_| bad("size is not a number"))?;
    if name.is_empty() || name.contains('/') || name == ".." {
        return Err(bad("bad file name"));
    }
    Ok(Record::File(FileHeader {
        mode,
        size,
        name: name.to_string(),
    }))
}

/// The command line that runs SCP on the device: `scp -f PATH` (send us
/// the file) or `scp -t PATH` (take a file). The path is single-quoted for
/// a POSIX shell only when it holds anything beyond a plain path's
/// characters, so devices that parse the command themselves (no shell)
/// still get plain paths as they are.
pub fn command(sending_to_device: bool, path: &str) -> String {
    let flag = if sending_to_device { "-t" } else { "-f" };
    let plain = !path.is_empty()
        && !path.starts_with('-')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:+@%,=~".contains(&b));
    if plain {
        format!("scp {flag} {path}")
    } else {
        format!("scp {flag} -- '{}'", path.replace('\'', r"'\''"))
    }
}

/// The last part of a path (the name a file record carries).
pub fn base_name(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_record_round_trips() {
        let header = FileHeader {
            mode: 0o644,
            size: 104_857_600,
            name: "image.bin".into(),
        };
        let line = header.line();
        assert_eq!(line, "C0644 104857600 image.bin\n");
        let parsed = parse_record(line.trim_end().as_bytes()).unwrap();
        assert_eq!(parsed, Record::File(header));
    }

    #[test]
    fn names_with_spaces_are_kept_and_bad_records_refused() {
        let Record::File(h) = parse_record(b"C0600 3 a b c").unwrap() else {
            panic!("not a file");
        };
        assert_eq!((h.mode, h.size, h.name.as_str()), (0o600, 3, "a b c"));
        for bad in [
            &b""[..],
            b"C0644",
            b"C0644 12",
            b"C0689 1 x",
            b"C0644 -1 x",
            b"C0644 +1 x",
            b"C0644 99999999999999999999999 x",
            b"C0644 1 ../x",
            b"C0644 1 ..",
        ] {
            assert!(
                parse_record(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_record(b"D0755 0 dir").unwrap(), Record::Other('D'));
    }

    #[test]
    fn status_bytes() {
        assert_eq!(Ack::parse(0, b""), Ack::Ok);
        assert!(!Ack::has_message(0));
        assert_eq!(
            Ack::parse(1, b"scp: /x: No such file or directory\n"),
            Ack::Warning("scp: /x: No such file or directory".into())
        );
        assert_eq!(Ack::parse(2, b"lost"), Ack::Error("lost".into()));
        assert_eq!(Ack::parse(7, b"?"), Ack::Error("?".into()));
    }

    #[test]
    fn paths_are_quoted_only_when_needed() {
        assert_eq!(command(false, "/tmp/a.bin"), "scp -f /tmp/a.bin");
        assert_eq!(command(true, "flash:/x"), "scp -t flash:/x");
        assert_eq!(command(false, "/tmp/a b"), "scp -f -- '/tmp/a b'");
        assert_eq!(command(true, "it's;rm"), r"scp -t -- 'it'\''s;rm'");
        assert_eq!(command(false, "-rf"), "scp -f -- '-rf'");
        assert_eq!(base_name("/tmp/dir/f.txt"), "f.txt");
        assert_eq!(base_name("f"), "f");
        assert_eq!(base_name("/"), "file");
    }
}
