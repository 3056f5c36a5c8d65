//! An error's message followed by the causes under it. Some errors keep
//! the reason in their `source()` chain only: reqwest's "error sending
//! request for url (…)" hides "invalid peer certificate: UnknownIssuer"
//! or "Connection refused" there, and a user told only the first cannot
//! tell a missing CA from a dead host.

use std::error::Error;

/// `text`, then `": "` and the message of each error in the chain from
/// `cause` down, skipping a message `text` already contains (errors that
/// repeat their source's message).
pub fn with_causes(mut text: String, mut cause: Option<&(dyn Error + 'static)>) -> String {
    while let Some(err) = cause {
        let more = err.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = err.source();
    }
    text
}

/// `err`'s message with its causes (see [`with_causes`]).
pub fn describe(err: &(dyn Error + 'static)) -> String {
    with_causes(err.to_string(), err.source())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn causes_are_appended_once() {
        let io = || std::io::Error::other("invalid peer certificate: UnknownIssuer");
        assert_eq!(
            describe(&Outer(io())),
            "error sending request: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(
            describe(&Repeats(io())),
            "cannot connect: invalid peer certificate: UnknownIssuer"
        );
    }
}
