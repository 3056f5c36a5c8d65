//! What the broker takes from callers as names and labels. They reach
//! `status`, the logs and link keys, so each must be one printable line of
//! bounded length; a named service's name is also typed on command lines.

use super::error::BrokerError;

/// Longest name of a named service.
pub const SERVICE_NAME_MAX: usize = 64;

/// A named service's name: 1 to 64 ASCII letters, digits and `-_.:@`.
pub fn service_name(name: &str) -> Result<(), BrokerError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
    if name.is_empty() || name.len() > SERVICE_NAME_MAX || !name.chars().all(allowed) {
        return Err(BrokerError::InvalidArgument(format!(
            "service name {:?} is not valid: use 1 to {SERVICE_NAME_MAX} letters, digits, \
             '-', '_', '.', ':' or '@'",
            shorten(name)
        )));
    }
    Ok(())
}

/// Longest caller-given label (user name, host, serial, client name).
pub const LABEL_MAX: usize = crate::label::LABEL_MAX;

/// A caller-given label: at most `LABEL_MAX` characters, no control
/// characters (a newline would forge a log line). [`crate::label::check`].
pub fn label(what: &str, value: &str) -> Result<(), BrokerError> {
    crate::label::check(what, value).map_err(|e| BrokerError::InvalidArgument(e.to_string()))
}

/// A free-form label shown as given (a session's client name, which SDKs
/// fill from the command line, or the name a service gives itself):
/// control characters are escaped and the length is capped instead of
/// refusing the caller. [`crate::label::tidy`].
pub fn tidy_label(value: &str) -> String {
    crate::label::tidy(value)
}

/// Enough of a refused value to recognise it, never the whole of a huge one.
fn shorten(value: &str) -> String {
    const SHOWN: usize = 80;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_short_plain_words() {
        for ok in ["lab", "core-dc1", "prod.eu_2", "alice@lab:8181"] {
            assert!(service_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "new\nline", "a/b", "ünï", &"x".repeat(65)] {
            let e = service_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not valid"), "{bad:?}: {e}");
        }
        assert!(service_name(&"x".repeat(64)).is_ok());
    }

    #[test]
    fn labels_are_one_bounded_line_and_errors_quote_little() {
        assert!(label("host", "router-1.example.net").is_ok());
        assert!(label("user name", "Zoë Smith").is_ok());
        let e = label("user name", "alice\nINFO forged")
            .unwrap_err()
            .to_string();
        assert!(e.contains("control characters"), "{e}");
        let e = label("host", &"h".repeat(LABEL_MAX + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than 256"), "{e}");
        let e = service_name(&"y".repeat(10_000)).unwrap_err().to_string();
        assert!(e.len() < 300, "{}", e.len());
    }

    #[test]
    fn free_form_labels_are_tidied_not_refused() {
        assert_eq!(tidy_label("script.py --x 1"), "script.py --x 1");
        assert_eq!(tidy_label("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(tidy_label(&"z".repeat(1000)).chars().count(), LABEL_MAX);
        assert_eq!(tidy_label(&"\n".repeat(1000)).chars().count(), LABEL_MAX);
    }
}
