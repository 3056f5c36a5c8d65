//! Secrets in memory and where they come from.
//!
//! A [`Secret`] zeroizes its bytes when dropped and never prints them: its
//! `Debug` and `Display` say `[redacted]`, so a secret that strays into a
//! log line or error message leaks nothing. Passwords are read from a file,
//! from a systemd credential, or from an interactive prompt — never from a
//! command-line argument, which any local user can read in `/proc`.

use std::fmt;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A secret string, wiped from memory on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The secret itself. Call sites are few and easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        what: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} in {path} is empty")]
    Empty { what: String, path: PathBuf },
    #[error("{what} is needed: {hint}")]
    NotGiven { what: String, hint: String },
    #[error("the two {what} entries do not match")]
    Mismatch { what: String },
    #[error("cannot prompt for {what}: {source}")]
    Prompt {
        what: String,
        source: std::io::Error,
    },
}

/// Where to look for one secret, in order: an explicit file, a systemd
/// credential (`$CREDENTIALS_DIRECTORY/<name>`), then a terminal prompt.
#[derive(Debug, Clone)]
pub struct SecretSource<'a> {
    /// Human name, used in prompts and errors ("admin password").
    pub what: &'a str,
    /// The flag that names a file, for error hints ("--admin-password-file").
    pub file_flag: &'a str,
    pub file: Option<&'a Path>,
    /// systemd credential name, if this secret may arrive as one.
    pub credential: Option<&'a str>,
    /// Ask twice at the prompt (when setting a new secret).
    pub confirm: bool,
}

impl SecretSource<'_> {
    /// Reads the secret from the first source that has it.
    pub fn read(&self) -> Result<Secret, SecretError> {
        if let Some(path) = self.file {
            return read_secret_file(self.what, path);
        }
        if let Some(name) = self.credential
            && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
        {
            let path = Path::new(&dir).join(name);
            if path.exists() {
                return read_secret_file(self.what, &path);
            }
        }
        if !std::io::stdin().is_terminal() {
            return Err(SecretError::NotGiven {
                what: self.what.to_string(),
                hint: format!(
                    "pass {} (stdin is not a terminal to prompt)",
                    self.file_flag
                ),
            });
        }
        self.prompt()
    }

    fn prompt(&self) -> Result<Secret, SecretError> {
        let ask = |label: String| {
            rpassword::prompt_password(label)
                .map(Secret::new)
                .map_err(|source| SecretError::Prompt {
                    what: self.what.to_string(),
                    source,
                })
        };
        let first = ask(format!("{}: ", capitalize(self.what)))?;
        if first.is_empty() {
            return Err(SecretError::NotGiven {
                what: self.what.to_string(),
                hint: "an empty value is not allowed".into(),
            });
        }
        if self.confirm {
            let second = ask(format!("Repeat {}: ", self.what))?;
            if first != second {
                return Err(SecretError::Mismatch {
                    what: self.what.to_string(),
                });
            }
        }
        Ok(first)
    }
}

/// Reads a secret file: the first line, without its line ending. A file may
/// end with a newline (as `echo` writes it); that newline is not part of it.
pub fn read_secret_file(what: &str, path: &Path) -> Result<Secret, SecretError> {
    let raw =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                what: what.to_string(),
                path: path.to_path_buf(),
                source,
            })?,
        );
    let line = raw.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(SecretError::Empty {
            what: what.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(Secret::new(line))
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn file_newline_is_trimmed_and_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(read_secret_file("pw", &p).unwrap().expose(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(
            read_secret_file("pw", &p),
            Err(SecretError::Empty { .. })
        ));
        let missing = dir.path().join("nope");
        let err = read_secret_file("admin password", &missing).unwrap_err();
        assert!(err.to_string().contains("admin password"));
    }
}
