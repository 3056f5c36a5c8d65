//! A relay's base URL as a person gives it (login, domain config, service
//! enrollment).
//!
//! The URL is logged, shown in `status` and stored in login files and the
//! inventory, so it must carry no secret: a URL with a user name or
//! password (`https://user:pw@relay`) is **refused**, not stripped — the
//! relay authenticates with tokens, certificates and OTPs, never with URL
//! credentials, so a URL that has them is a mistake whose secret must not
//! be kept anywhere. Error messages never repeat the credentials.
//!
//! **Invariant:** every relay URL the broker or the service keeps has
//! passed [`check`].

use crate::label;

/// Why a relay URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayUrlError {
    #[error("relay URL {shown}: {reason}")]
    Invalid { shown: String, reason: String },
    #[error(
        "relay URL {shown} carries a user name or password; give the relay's address \
         alone (https://HOST[:PORT]) and sign in with `switchyard login`"
    )]
    Credentials { shown: String },
}

/// `raw` without a trailing slash, if it is an `https://` URL with a host
/// and no user name, password, query or fragment.
pub fn check(raw: &str) -> Result<String, RelayUrlError> {
    let trimmed = raw.trim_end_matches('/');
    let shown = || redacted(trimmed);
    let invalid = |reason: &str| RelayUrlError::Invalid {
        shown: shown(),
        reason: reason.into(),
    };
    if trimmed.chars().any(label::is_unsafe) {
        return Err(invalid("contains control characters"));
    }
    let parsed = url::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(RelayUrlError::Credentials { shown: shown() });
    }
    if parsed.scheme() != "https" {
        return Err(invalid("a relay URL must be https://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid("a relay URL has no query or fragment"));
    }
    label::check("relay URL", trimmed).map_err(|e| invalid(&e.to_string()))?;
    Ok(trimmed.to_string())
}

/// A relay tier's base URLs separated by commas (its nodes, tried in
/// turn), each passing [`check`]; a single URL is a list of one. Returns
/// them joined by commas, without trailing slashes or blanks.
pub fn check_list(raw: &str) -> Result<String, RelayUrlError> {
    let urls = raw
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(check)
        .collect::<Result<Vec<_>, _>>()?;
    if urls.is_empty() {
        return Err(RelayUrlError::Invalid {
            shown: redacted(raw),
            reason: "no relay URL".into(),
        });
    }
    Ok(urls.join(","))
}

/// `raw` fit for a message: anything before an `@` in its authority is
/// replaced by `[redacted]`, and the rest is tidied.
pub fn redacted(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(at) => raw.split_at(at + 3),
        None => ("", raw),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("[redacted]@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    label::tidy_max(&format!("{scheme}{authority}{path}"), 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tiers_urls_are_checked_one_by_one() {
        assert_eq!(
            check_list(" https://a.example:8443/, https://b.example:8443").unwrap(),
            "https://a.example:8443,https://b.example:8443"
        );
        assert_eq!(
            check_list("https://a.example").unwrap(),
            "https://a.example"
        );
        let err = check_list("https://a.example,https://u:pw@b.example").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(check_list(" , ").is_err());
    }

    #[test]
    fn plain_https_urls_pass_without_their_trailing_slash() {
        assert_eq!(
            check("https://relay.example.net:8443/").unwrap(),
            "https://relay.example.net:8443"
        );
        assert_eq!(check("https://[::1]:4433").unwrap(), "https://[::1]:4433");
    }

    #[test]
    fn credentials_are_refused_and_never_repeated() {
        for raw in [
            "https://user:s3cr3t-pw@relay.example.net",
            "https://s3cr3t-pw@relay.example.net/",
            "http://user:s3cr3t-pw@relay.example.net",
            "https://user:s3cr3t-pw@relay.example.net/x?y#z",
        ] {
            let e = check(raw).unwrap_err();
            assert!(matches!(e, RelayUrlError::Credentials { .. }), "{raw}: {e}");
            let text = e.to_string();
            assert!(!text.contains("s3cr3t-pw"), "{text}");
            assert!(text.contains("[redacted]@relay.example.net"), "{text}");
        }
        // Even an unparsable URL's error hides what looks like credentials.
        let e = check("https://user:s3cr3t-pw@").unwrap_err().to_string();
        assert!(!e.contains("s3cr3t-pw"), "{e}");
    }

    #[test]
    fn other_mistakes_are_named() {
        let e = check("http://relay").unwrap_err().to_string();
        assert!(e.contains("must be https://"), "{e}");
        let e = check("https://relay/?token=1").unwrap_err().to_string();
        assert!(e.contains("no query"), "{e}");
        let e = check("https://relay\n.example").unwrap_err().to_string();
        assert!(e.contains("control characters"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(check("not a url").is_err());
    }
}
