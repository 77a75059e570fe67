//! The extension's layer over `otobot-crypto` (AES-256-GCM, HKDF and HMAC
//! from AWS-LC): stored values sealed and opened with this session's keyring.
//! The stored form, the derivations and their tests live in `crypto/`.

pub use otobot_crypto::{key_check, Cipher, MacKey, KEY_LEN};

use crate::error::OtobotError;
use crate::keyring;

/// Encrypt `plaintext` under the session's current key version, bound to
/// `aad`, with a fresh random IV from AWS-LC's CSPRNG.
pub fn encrypt(plaintext: &str, aad: &str) -> Result<String, OtobotError> {
    keyring::with(|k| {
        let (version, entry) = k.current()?;
        Ok(entry.cipher.seal(version, plaintext.as_bytes(), aad.as_bytes())?)
    })
}

/// Decrypt with the key version the value names and hand the text to `f`.
/// The buffer that held the plaintext is wiped before this returns, so `f`
/// must copy what it keeps.
pub fn decrypt_into<R>(ciphertext: &str, aad: &str, f: impl FnOnce(&str) -> R) -> Result<R, OtobotError> {
    let sealed = otobot_crypto::parse(ciphertext)?;
    keyring::with(|k| {
        k.get(sealed.version)?.cipher.open_with(&sealed, aad.as_bytes(), |plain| {
            std::str::from_utf8(plain).map(f).map_err(|_| OtobotError::NotUtf8)
        })?
    })
}

/// The key version a stored value names (its first field); no key needed.
pub fn key_version(ciphertext: &str) -> Result<u32, OtobotError> {
    Ok(otobot_crypto::parse_version(ciphertext.split(':').next().unwrap_or(""))?)
}
