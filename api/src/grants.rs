//! Grant tokens: a user's consent that a workflow reads their secrets.
//!
//! A token is `otg_` followed by 32 random bytes in base64url (43
//! characters): the prefix makes a leaked one recognisable (secret
//! scanners, logs). The database stores only its SHA-256, computed here; the
//! token itself is shown once, to the user who created it (or sent to n8n
//! with the run it was minted for), and never logged.
//!
//! SECURITY: the API never compares tokens: it hashes what it was sent and
//! the vault looks the hash up inside `otobot.get_user_credentials`, which
//! checks user, service, expiry and revocation.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// The header a credential fetch carries its grant in.
pub const HEADER: &str = "x-otobot-grant";
/// What every grant token starts with.
pub const PREFIX: &str = "otg_";

/// A fresh grant token and the SHA-256 the database stores.
pub struct NewGrant {
    pub token: SecretString,
    pub hash: [u8; 32],
}

/// A new random grant token (256 bits from the operating system's generator).
pub fn generate() -> NewGrant {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut *bytes);
    // Written straight into the string the secret takes over: no stray copy.
    let mut text = String::with_capacity(PREFIX.len() + 43);
    text.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes.as_slice(), &mut text);
    let token = SecretString::from(text);
    let hash = hash(token.expose_secret().as_bytes());
    NewGrant { token, hash }
}

/// SHA-256 of a presented grant, whatever its form: a malformed or unknown
/// one simply matches nothing (and the refusal is audited).
pub fn hash(presented: &[u8]) -> [u8; 32] {
    Sha256::digest(presented).into()
}

/// The grant a request presents in [`HEADER`], hashed; `None` when absent or empty.
pub fn presented(headers: &axum::http::HeaderMap) -> Option<[u8; 32]> {
    let value = headers.get(HEADER)?.as_bytes();
    let value = value.trim_ascii();
    (!value.is_empty()).then(|| hash(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_prefix_and_43_base64url_characters_and_hashes_to_its_sha256() {
        let g = generate();
        let t = g.token.expose_secret();
        assert!(t.starts_with(PREFIX));
        let body = &t[PREFIX.len()..];
        assert_eq!(body.len(), 43);
        assert!(body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
        assert_eq!(g.hash, hash(t.as_bytes()));
    }

    #[test]
    fn two_tokens_differ() {
        assert_ne!(
            generate().token.expose_secret(),
            generate().token.expose_secret()
        );
    }

    #[test]
    fn the_header_is_hashed_trimmed_and_an_empty_one_is_no_grant() {
        let mut h = axum::http::HeaderMap::new();
        assert!(presented(&h).is_none());
        h.insert(HEADER, " ".parse().unwrap());
        assert!(presented(&h).is_none());
        h.insert(HEADER, " otg_abc ".parse().unwrap());
        assert_eq!(presented(&h), Some(hash(b"otg_abc")));
    }

    #[test]
    fn a_token_never_shows_in_debug_output() {
        let g = generate();
        let shown = format!("{:?}", g.token);
        assert!(!shown.contains(PREFIX), "{shown}");
    }
}
