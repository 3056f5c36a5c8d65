//! Caller-supplied labels made safe for logs and `status`.
//!
//! Anything a stranger or a local caller chooses — a user name, a host, a
//! client description, the name a remote service gives itself — ends up in
//! log lines and status output. Each such value passes one of two gates
//! here before it is stored or logged:
//!
//! * [`check`] refuses a value that is too long or carries control
//!   characters (used where the value names something: user names, hosts,
//!   serials — a tidied copy would name something else);
//! * [`tidy`] escapes control characters and caps the length instead (used
//!   where the value only describes: client strings, names peers report).
//!
//! "Control characters" are Unicode's `Cc` (newline, escape, …) plus the
//! bidirectional and zero-width formatting marks, which can make a log
//! line read differently from what it holds.
//!
//! **Invariant:** shared by the broker (`broker::names`) and the service,
//! so both apply the same rule; it knows neither.

/// Longest label, in characters.
pub const LABEL_MAX: usize = 256;

/// Why a label was refused. The message quotes at most a short, escaped
/// prefix of the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error("the {what} is longer than {max} characters")]
    TooLong { what: String, max: usize },
    #[error("the {what} {shown} contains control characters")]
    Control { what: String, shown: String },
}

/// Whether `c` must not appear raw in a log line or status output.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width, LRM/RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}')
}

/// Refuses a label over `max` characters or with unsafe characters.
pub fn check_max(what: &str, value: &str, max: usize) -> Result<(), LabelError> {
    if value.chars().count() > max {
        return Err(LabelError::TooLong {
            what: what.into(),
            max,
        });
    }
    if value.chars().any(is_unsafe) {
        return Err(LabelError::Control {
            what: what.into(),
            shown: format!("\"{}\"", tidy_max(value, 80)),
        });
    }
    Ok(())
}

/// [`check_max`] with [`LABEL_MAX`].
pub fn check(what: &str, value: &str) -> Result<(), LabelError> {
    check_max(what, value, LABEL_MAX)
}

/// `value` with unsafe characters escaped (`\n`, `\u{202e}`), at most
/// [`LABEL_MAX`] characters (a longer one is cut and ends in `…`).
pub fn tidy(value: &str) -> String {
    tidy_max(value, LABEL_MAX)
}

/// [`tidy`] with a cap of `max` characters, the `…` included. Work is
/// bounded by `max`, however long `value` is.
pub fn tidy_max(value: &str, max: usize) -> String {
    let mut out: Vec<char> = value
        .chars()
        .flat_map(|c| {
            let escaped = is_unsafe(c).then(|| c.escape_default());
            let plain = (!is_unsafe(c)).then_some(c);
            escaped.into_iter().flatten().chain(plain)
        })
        .take(max + 1)
        .collect();
    if out.len() > max {
        out.truncate(max.saturating_sub(1));
        out.push('…');
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_labels_are_one_bounded_line() {
        assert!(check("host", "router-1.example.net").is_ok());
        assert!(check("user name", "Zoë Smith").is_ok());
        let e = check("user name", "alice\nINFO forged").unwrap_err();
        assert!(e.to_string().contains("control characters"), "{e}");
        assert!(e.to_string().contains("alice\\nINFO"), "{e}");
        assert!(
            check("host", "evil\u{202e}gnp.exe").is_err(),
            "bidi override"
        );
        let e = check("host", &"h".repeat(LABEL_MAX + 1)).unwrap_err();
        assert_eq!(e.to_string(), "the host is longer than 256 characters");
        let e = check("host", &format!("\n{}", "y".repeat(10_000))).unwrap_err();
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
    }

    #[test]
    fn tidied_labels_are_escaped_and_capped() {
        assert_eq!(tidy("script.py --x 1"), "script.py --x 1");
        assert_eq!(tidy("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(tidy("x\u{202e}y"), "x\\u{202e}y");
        let long = tidy(&"z".repeat(1 << 20));
        assert_eq!(long.chars().count(), LABEL_MAX);
        assert!(long.ends_with('…'));
        let escaped = tidy(&"\n".repeat(1000));
        assert_eq!(escaped.chars().count(), LABEL_MAX);
        assert!(!escaped.contains('\n'));
    }
}
