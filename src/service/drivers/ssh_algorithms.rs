//! Which SSH algorithms the driver offers a device, and what to say when a
//! device shares none of them.
//!
//! Two sets, both limited to what russh 0.65 implements (built with its
//! `ring` and `des` features, never `aws-lc-rs`):
//!
//! * **modern** (every device): russh's defaults — `mlkem768x25519-sha256`,
//!   `curve25519-sha256`, `diffie-hellman-group-exchange-sha256`,
//!   `diffie-hellman-group14-sha256` and the SHA-512 MODP groups; AES-GCM
//!   (preferred), ChaCha20-Poly1305, AES-CTR; HMAC-SHA2 MACs; Ed25519, ECDSA and RSA
//!   host keys with SHA-2 signatures — plus what OpenSSH's own client
//!   offers by default beyond them: `ecdh-sha2-nistp256/384/521` and
//!   `aes128-gcm@openssh.com`.
//! * **legacy** (opt-in: the device's `legacy_algorithms`, else the
//!   service's `ssh.legacy_algorithms`): the modern set followed by
//!   `diffie-hellman-group14-sha1`, `diffie-hellman-group-exchange-sha1`,
//!   `diffie-hellman-group1-sha1` (RFC 4253 §8, RFC 4419), `aes128-cbc`,
//!   `aes192-cbc`, `aes256-cbc`, `3des-cbc` (RFC 4253 §6.3), `hmac-sha1`,
//!   `hmac-sha1-etm@openssh.com` (RFC 4253 §6.4) and `ssh-rsa` host keys
//!   with SHA-1 signatures (RFC 4253 §6.6). Modern ones stay preferred, so
//!   the opt-in changes nothing for a device that speaks them.
//!
//! Not supported by russh, so not offered even with the opt-in: `ssh-dss`
//! host keys, `hmac-md5`, `hmac-sha1-96`, `umac-*`, `arcfour*`,
//! `blowfish-cbc`, `sntrup761x25519-sha512`.

use std::borrow::Cow;
use std::sync::Arc;

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{AlgorithmKind, Preferred, cipher, kex, mac};

use super::DriverError;

/// The setting that enables the legacy set, as errors name it.
pub const SETTING: &str = "legacy_algorithms";

const MODERN_KEX: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::ECDH_SHA2_NISTP256,
    kex::ECDH_SHA2_NISTP384,
    kex::ECDH_SHA2_NISTP521,
    kex::DH_GEX_SHA256,
    kex::DH_G18_SHA512,
    kex::DH_G17_SHA512,
    kex::DH_G16_SHA512,
    kex::DH_G15_SHA512,
    kex::DH_G14_SHA256,
];

/// SHA-1 Diffie-Hellman: 1024-bit group 1 and SHA-1 exchange hashes.
const LEGACY_KEX: &[kex::Name] = &[kex::DH_G14_SHA1, kex::DH_GEX_SHA1, kex::DH_G1_SHA1];

/// Protocol extensions russh signals through the kex list (RFC 8308
/// `ext-info-c`, OpenSSH strict kex); they go last in every set.
const KEX_EXTENSIONS: &[kex::Name] = &[
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
];

/// AES-GCM first: ring's AES-GCM (AES-NI and carry-less multiply, which
/// every x86-64 and ARMv8 server has) costs the service and the device
/// less per byte than ChaCha20-Poly1305, which OpenSSH's client puts first
/// for machines without AES instructions. Both are AEADs of the same
/// strength class; bulk output is where the choice shows
/// (`benches/exec_vs_ssh.py`).
const MODERN_CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_GCM,
    cipher::AES_128_GCM,
    cipher::CHACHA20_POLY1305,
    cipher::AES_256_CTR,
    cipher::AES_192_CTR,
    cipher::AES_128_CTR,
];

const LEGACY_CIPHERS: &[cipher::Name] = &[
    cipher::AES_256_CBC,
    cipher::AES_192_CBC,
    cipher::AES_128_CBC,
    cipher::TRIPLE_DES_CBC,
];

const MODERN_MACS: &[mac::Name] = &[
    mac::HMAC_SHA512_ETM,
    mac::HMAC_SHA256_ETM,
    mac::HMAC_SHA512,
    mac::HMAC_SHA256,
];

const LEGACY_MACS: &[mac::Name] = &[mac::HMAC_SHA1_ETM, mac::HMAC_SHA1];

fn modern_host_keys() -> Vec<Algorithm> {
    vec![
        Algorithm::Ed25519,
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP384,
        },
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP521,
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha512),
        },
        Algorithm::Rsa {
            hash: Some(HashAlg::Sha256),
        },
    ]
}

/// `ssh-rsa`: RSA host keys signing with SHA-1.
fn legacy_host_keys() -> Vec<Algorithm> {
    vec![Algorithm::Rsa { hash: None }]
}

/// The algorithm lists offered, modern only or modern then legacy.
pub fn preferred(legacy: bool) -> Preferred {
    fn join<T: Clone>(modern: &[T], legacy: &[T], tail: &[T], with_legacy: bool) -> Vec<T> {
        let mut all = modern.to_vec();
        if with_legacy {
            all.extend_from_slice(legacy);
        }
        all.extend_from_slice(tail);
        all
    }
    Preferred {
        kex: Cow::Owned(join(MODERN_KEX, LEGACY_KEX, KEX_EXTENSIONS, legacy)),
        key: Cow::Owned(join(&modern_host_keys(), &legacy_host_keys(), &[], legacy)),
        cipher: Cow::Owned(join(MODERN_CIPHERS, LEGACY_CIPHERS, &[], legacy)),
        mac: Cow::Owned(join(MODERN_MACS, LEGACY_MACS, &[], legacy)),
        ..Preferred::DEFAULT
    }
}

/// The names of the legacy set in one family, for telling whether a device
/// would have agreed with the opt-in.
fn legacy_names(kind: &AlgorithmKind) -> Vec<String> {
    fn names<T: AsRef<str>>(list: &[T]) -> Vec<String> {
        list.iter().map(|n| n.as_ref().to_string()).collect()
    }
    match kind {
        AlgorithmKind::Kex => names(LEGACY_KEX),
        AlgorithmKind::Cipher => names(LEGACY_CIPHERS),
        AlgorithmKind::Mac => names(LEGACY_MACS),
        AlgorithmKind::Key => legacy_host_keys().iter().map(|a| a.to_string()).collect(),
        AlgorithmKind::Compression => Vec::new(),
    }
}

fn family(kind: &AlgorithmKind) -> &'static str {
    match kind {
        AlgorithmKind::Kex => "key-exchange",
        AlgorithmKind::Key => "host-key",
        AlgorithmKind::Cipher => "cipher",
        AlgorithmKind::Mac => "MAC",
        AlgorithmKind::Compression => "compression",
    }
}

/// Group sizes asked for in a legacy group exchange (RFC 4419 §3): down to
/// 2048 bits (russh's floor; old gear often has nothing larger than 2048 or
/// 4096), preferring 3072 (NIST's 128-bit level, what OpenSSH asks with
/// AES-128). russh's defaults (3072/8192/8192) refuse such devices, and
/// an 8192-bit exchange takes seconds on a small device.
fn legacy_gex() -> russh::client::GexParams {
    russh::client::GexParams::new(2048, 3072, 8192).expect("valid group sizes")
}

/// Client configurations for both sets, built once per pool.
#[derive(Debug, Clone)]
pub struct ClientConfigs {
    modern: Arc<russh::client::Config>,
    legacy: Arc<russh::client::Config>,
}

impl ClientConfigs {
    /// `base` makes everything but the algorithm lists (russh's config is
    /// not `Clone`).
    pub fn new(base: impl Fn() -> russh::client::Config) -> Self {
        let with = |legacy: bool| {
            let mut config = russh::client::Config {
                preferred: preferred(legacy),
                ..base()
            };
            if legacy {
                config.gex = legacy_gex();
            }
            Arc::new(config)
        };
        Self {
            modern: with(false),
            legacy: with(true),
        }
    }

    /// The configuration offering the legacy set too, or not.
    pub fn get(&self, legacy: bool) -> Arc<russh::client::Config> {
        if legacy {
            self.legacy.clone()
        } else {
            self.modern.clone()
        }
    }
}

/// Longest peer-sent algorithm list kept in an error (names are bounded by
/// the SSH packet size, but an error should stay readable).
const MAX_NAMES: usize = 64;

/// Turns a failed negotiation into [`DriverError::NoCommonAlgorithm`],
/// listing what we offered and what the device offered (russh reports both
/// from the device's KEXINIT) and naming [`SETTING`]. Other errors come
/// back unchanged.
pub fn negotiation_error(
    device: &str,
    error: russh::Error,
    legacy: bool,
) -> Result<DriverError, russh::Error> {
    let russh::Error::NoCommonAlgo { kind, ours, theirs } = error else {
        return Err(error);
    };
    // Protocol markers in the kex list (RFC 8308, OpenSSH strict kex) are
    // not algorithms: leave them out of what the device "offered".
    let markers = [
        "ext-info-c",
        "ext-info-s",
        "kex-strict-c-v00@openssh.com",
        "kex-strict-s-v00@openssh.com",
    ];
    let theirs: Vec<String> = theirs
        .into_iter()
        .filter(|n| !markers.contains(&n.as_str()))
        .take(MAX_NAMES)
        .map(|n| {
            n.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect()
        })
        .collect();
    let legacy_match: Vec<String> = legacy_names(&kind)
        .into_iter()
        .filter(|n| theirs.contains(n))
        .collect();
    let hint = if legacy {
        format!(
            "{SETTING} is on for this device and the SSH library supports none of the \
             device's {} algorithms",
            family(&kind)
        )
    } else if legacy_match.is_empty() {
        format!(
            "{SETTING} is off, and would not help: the SSH library supports none of the \
             device's {} algorithms",
            family(&kind)
        )
    } else {
        format!(
            "the device offers legacy algorithms ({}): enable them for this device with \
             `switchyard service device add … --legacy-algorithms`, or for every device \
             with `ssh.{SETTING} = true`",
            legacy_match.join(", ")
        )
    };
    Ok(DriverError::NoCommonAlgorithm {
        device: device.to_string(),
        family: family(&kind),
        ours,
        theirs,
        hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<T: AsRef<str>>(list: &[T]) -> Vec<&str> {
        list.iter().map(AsRef::as_ref).collect()
    }

    #[test]
    fn legacy_is_modern_then_legacy_and_modern_has_no_sha1() {
        let modern = preferred(false);
        let legacy = preferred(true);
        for sha1 in ["diffie-hellman-group14-sha1", "diffie-hellman-group1-sha1"] {
            assert!(!names(&modern.kex).contains(&sha1));
            assert!(names(&legacy.kex).contains(&sha1));
        }
        assert!(!names(&modern.cipher).contains(&"aes128-cbc"));
        assert!(names(&legacy.cipher).contains(&"3des-cbc"));
        assert!(!names(&modern.mac).contains(&"hmac-sha1"));
        assert!(names(&legacy.mac).contains(&"hmac-sha1"));
        let rsa_sha1 = Algorithm::Rsa { hash: None };
        assert!(!modern.key.contains(&rsa_sha1));
        assert!(legacy.key.contains(&rsa_sha1));
        // Modern first: a device that speaks both never gets a legacy one.
        assert_eq!(legacy.kex[0], modern.kex[0]);
        assert_eq!(legacy.cipher[..MODERN_CIPHERS.len()], modern.cipher[..]);
        // The extension markers stay in both.
        assert!(names(&legacy.kex).contains(&"ext-info-c"));
        assert!(names(&modern.kex).contains(&"kex-strict-c-v00@openssh.com"));
    }

    #[test]
    fn aes_gcm_is_preferred_and_chacha20_still_offered() {
        for set in [preferred(false), preferred(true)] {
            let ciphers = names(&set.cipher);
            assert_eq!(
                ciphers[..2],
                ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com"]
            );
            assert!(ciphers.contains(&"chacha20-poly1305@openssh.com"));
        }
    }

    #[test]
    fn no_common_kex_names_both_sides_and_the_setting() {
        let err = russh::Error::NoCommonAlgo {
            kind: AlgorithmKind::Kex,
            ours: vec!["curve25519-sha256".into()],
            theirs: vec![
                "diffie-hellman-group1-sha1".into(),
                "kex-strict-s-v00@openssh.com".into(),
            ],
        };
        let text = negotiation_error("r1", err, false).unwrap().to_string();
        assert!(!text.contains("kex-strict"), "{text}");
        assert!(text.contains("curve25519-sha256"), "{text}");
        assert!(text.contains("diffie-hellman-group1-sha1"), "{text}");
        assert!(text.contains("--legacy-algorithms"), "{text}");
        assert!(text.contains("ssh.legacy_algorithms"), "{text}");
        let other = negotiation_error("r1", russh::Error::Disconnect, false);
        assert!(other.is_err());
    }
}
