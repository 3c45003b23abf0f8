//! Secrets at rest: cloud account secrets and machine private keys are
//! sealed with XChaCha20-Poly1305 before they reach the store, under a key
//! from the configuration (`secret_key`, or `secret_key_file`, created on
//! first start). A database dump alone reveals none of them.

use std::{fmt, path::Path};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key is not 32 bytes of base64.
    #[error("secret key: {0}")]
    BadKey(String),
    /// The key file could not be read or created.
    #[error("secret key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The key file can be read or written by other users than DCP's.
    #[error(
        "secret key file {path} is readable by other users (mode {mode:o}); \
         run `chmod 600 {path}` (and check who read it) before starting DCP"
    )]
    KeyFileExposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// A sealed value did not open: another key sealed it, or it was altered.
    #[error("a sealed {0} cannot be opened with this server's secret key")]
    Open(&'static str),
}

/// Seals and opens secrets with the server's key.
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault(***)")
    }
}

const PREFIX: &str = "v1:";

impl Vault {
    /// A vault over a base64-encoded 32-byte key.
    pub fn from_base64(key: &str) -> Result<Self, Error> {
        let bytes = BASE64
            .decode(key.trim())
            .map_err(|e| Error::BadKey(format!("not base64 ({e})")))?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| Error::BadKey(format!("must be 32 bytes, not {}", bytes.len())))?;
        Ok(Self { cipher })
    }

    /// A vault over the key in `path`, creating the file (mode 0600) with a
    /// random key when it does not exist. An existing file that group or
    /// others may read is refused ([`Error::KeyFileExposed`]), as OpenSSH
    /// refuses such a private key: the key opens every sealed secret.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let io = |source| Error::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(key) => {
                if let Some(mode) = crate::data_dir::exposed_mode(path).map_err(io)? {
                    return Err(Error::KeyFileExposed {
                        path: path.display().to_string(),
                        mode,
                    });
                }
                Self::from_base64(&key)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    crate::data_dir::ensure_dir(dir).map_err(io)?;
                }
                let key = BASE64.encode(XChaCha20Poly1305::generate_key(&mut OsRng));
                crate::data_dir::create_private(path, key.as_bytes()).map_err(io)?;
                tracing::info!(file = %path.display(), "created the secret key that seals account secrets and machine keys; back it up with the database");
                Self::from_base64(&key)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Seals `plain` for `purpose` (e.g. `account-secret`); a value sealed
    /// for one purpose does not open as another.
    #[must_use]
    pub fn seal(&self, purpose: &'static str, plain: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: purpose.as_bytes(),
                },
            )
            // Encryption only fails for plaintexts beyond ~256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", BASE64.encode(out))
    }

    /// Opens what [`Vault::seal`] sealed for `purpose`.
    pub fn open(&self, purpose: &'static str, sealed: &str) -> Result<Vec<u8>, Error> {
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| BASE64.decode(b).ok())
            .filter(|b| b.len() > 24)
            .ok_or(Error::Open(purpose))?;
        let (nonce, ciphertext) = bytes.split_at(24);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| Error::Open(purpose))
    }

    /// Opens a sealed UTF-8 text.
    pub fn open_text(&self, purpose: &'static str, sealed: &str) -> Result<String, Error> {
        String::from_utf8(self.open(purpose, sealed)?).map_err(|_| Error::Open(purpose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::from_file(&dir.path().join("k")).unwrap();
        let sealed = vault.seal("account-secret", b"s3cret");
        assert!(!sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            vault.seal("account-secret", b"s3cret"),
            "nonces differ"
        );
        assert_eq!(vault.open("account-secret", &sealed).unwrap(), b"s3cret");
        assert!(vault.open("machine-key", &sealed).is_err());
        // The file persists the key: a restart opens what was sealed before.
        let again = Vault::from_file(&dir.path().join("k")).unwrap();
        assert_eq!(
            again.open_text("account-secret", &sealed).unwrap(),
            "s3cret"
        );
        let other = Vault::from_file(&dir.path().join("other")).unwrap();
        assert!(matches!(
            other.open("account-secret", &sealed),
            Err(Error::Open(_))
        ));
        assert!(Vault::from_base64("c2hvcnQ=").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        Vault::from_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "created private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Vault::from_file(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Vault::from_file(&path).unwrap();
    }
}
