//! What the broker takes from callers as names and labels. They reach
//! `status`, the logs and link keys, so each must be one printable line of
//! bounded length; a named service's name is also typed on command lines.

use super::error::BrokerError;

/// Longest name of a named service.
pub const SERVICE_NAME_MAX: usize = 64;
/// Longest caller-given label (user name, host, serial, client name).
pub const LABEL_MAX: usize = 256;

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

/// A caller-given label: at most `LABEL_MAX` characters, no control
/// characters (a newline would forge a log line).
pub fn label(what: &str, value: &str) -> Result<(), BrokerError> {
    if value.chars().count() > LABEL_MAX {
        return Err(BrokerError::InvalidArgument(format!(
            "the {what} is longer than {LABEL_MAX} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(BrokerError::InvalidArgument(format!(
            "the {what} {:?} contains control characters",
            shorten(value)
        )));
    }
    Ok(())
}

/// A free-form label shown as given (a session's client name, which SDKs
/// fill from the command line): control characters are escaped and the
/// length is capped instead of refusing the caller.
pub fn tidy_label(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let escaped = c.is_control().then(|| c.escape_default());
            let plain = (!c.is_control()).then_some(c);
            escaped.into_iter().flatten().chain(plain)
        })
        .take(LABEL_MAX)
        .collect()
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
        assert_eq!(tidy_label(&"z".repeat(1000)).len(), LABEL_MAX);
        assert_eq!(tidy_label(&"\n".repeat(1000)).len(), LABEL_MAX);
    }
}
