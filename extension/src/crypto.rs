//! AES-256-GCM sealing in Otobot's stored form `version:iv:tag:ciphertext`.
//!
//! Pure Rust, no PostgreSQL: the caller passes the cipher (from the keyring)
//! and the random source, so every property is unit-tested without a server.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hkdf::Hkdf;
use rand_core::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::OtobotError;

pub const KEY_LEN: usize = 32;
pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Largest plaintext accepted. Credentials are small; a cap keeps a stray
/// gigabyte value from exhausting backend memory.
pub const MAX_PLAINTEXT: usize = 1 << 20;
/// Largest stored form accepted: version, two hex fields, base64 of the cap.
pub const MAX_SEALED: usize = 11 + 1 + IV_LEN * 2 + 1 + TAG_LEN * 2 + 1 + MAX_PLAINTEXT.div_ceil(3) * 4;

/// HKDF labels: one purpose, one label, so keys derived for one use never
/// serve another.
pub const LABEL_KEY_CHECK: &[u8] = b"otobot/key-check/v1";
pub const LABEL_AUDIT_CHAIN: &[u8] = b"otobot/audit-chain/v1";

/// Derive 32 bytes from a master key for one purpose.
pub fn derive(master: &[u8; KEY_LEN], label: &[u8]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, master);
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand(label, out.as_mut()).expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The check value stored in the database for a key version: a one-way
/// derivation, so it identifies the key without revealing it.
pub fn key_check(master: &[u8; KEY_LEN]) -> [u8; 32] {
    *derive(master, LABEL_KEY_CHECK)
}

pub fn new_cipher(master: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new(master.into())
}

/// A parsed stored value. Borrows the base64 part from the input.
#[derive(PartialEq, Eq)]
pub struct Sealed<'a> {
    pub version: u32,
    pub iv: [u8; IV_LEN],
    pub tag: [u8; TAG_LEN],
    pub ciphertext_b64: &'a str,
}

// SECURITY: no Debug for Sealed would print IV or ciphertext; keep it opaque.
impl std::fmt::Debug for Sealed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("version", &self.version).finish_non_exhaustive()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0x0f) as usize] as char);
    }
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Lowercase hex only, exact length, as the stored form requires.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (hex_nibble(pair[0])? << 4) | hex_nibble(pair[1])?;
    }
    Some(out)
}

/// Parse a key version: decimal digits only, 1..=i32::MAX (it is an SQL int).
pub fn parse_version(s: &str) -> Result<u32, OtobotError> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return Err(OtobotError::Malformed("key version is not a positive decimal number"));
    }
    match s.parse::<u32>() {
        Ok(v) if v >= 1 && v <= i32::MAX as u32 => Ok(v),
        _ => Err(OtobotError::Malformed("key version is out of range")),
    }
}

/// Split and validate the stored form; never touches the key.
pub fn parse(sealed: &str) -> Result<Sealed<'_>, OtobotError> {
    if sealed.is_empty() {
        return Err(OtobotError::Malformed("empty value"));
    }
    if sealed.len() > MAX_SEALED {
        return Err(OtobotError::Malformed("value is too large"));
    }
    let mut parts = sealed.splitn(4, ':');
    let (Some(v), Some(iv), Some(tag), Some(ct)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OtobotError::Malformed("expected version:iv:tag:ciphertext"));
    };
    let version = parse_version(v)?;
    let iv = parse_hex::<IV_LEN>(iv).ok_or(OtobotError::Malformed("iv must be 24 lowercase hex characters"))?;
    let tag = parse_hex::<TAG_LEN>(tag).ok_or(OtobotError::Malformed("tag must be 32 lowercase hex characters"))?;
    if ct.contains(':') {
        return Err(OtobotError::Malformed("expected version:iv:tag:ciphertext"));
    }
    Ok(Sealed { version, iv, tag, ciphertext_b64: ct })
}

/// Encrypt `plaintext` bound to `aad` with a fresh random IV.
pub fn encrypt(
    cipher: &Aes256Gcm,
    version: u32,
    rng: &mut impl RngCore,
    plaintext: &[u8],
    aad: &[u8],
) -> Result<String, OtobotError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(OtobotError::PlaintextTooLarge);
    }
    let mut iv = [0u8; IV_LEN];
    rng.fill_bytes(&mut iv);
    let mut buf = plaintext.to_vec();
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(&iv), aad, &mut buf)
        .map_err(|_| OtobotError::PlaintextTooLarge)?;
    let mut out = String::with_capacity(12 + IV_LEN * 2 + TAG_LEN * 2 + buf.len().div_ceil(3) * 4 + 3);
    out.push_str(itoa_u32(version, &mut [0u8; 10]));
    out.push(':');
    push_hex(&mut out, &iv);
    out.push(':');
    push_hex(&mut out, &tag);
    out.push(':');
    B64.encode_string(&buf, &mut out);
    Ok(out)
}

fn itoa_u32(mut v: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).expect("ascii digits")
}

/// Decrypt a parsed value with the cipher of its version. The plaintext
/// buffer is zeroized when dropped.
pub fn decrypt(cipher: &Aes256Gcm, sealed: &Sealed<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OtobotError> {
    let mut buf = Zeroizing::new(
        B64.decode(sealed.ciphertext_b64)
            .map_err(|_| OtobotError::Malformed("ciphertext is not standard padded base64"))?,
    );
    cipher
        .decrypt_in_place_detached(Nonce::from_slice(&sealed.iv), aad, &mut buf, Tag::from_slice(&sealed.tag))
        .map_err(|_| OtobotError::AuthenticationFailed)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn key(b: u8) -> [u8; 32] {
        [b; 32]
    }

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(7)
    }

    fn roundtrip(plain: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, OtobotError> {
        let c = new_cipher(&key(1));
        let s = encrypt(&c, 1, &mut rng(), plain, aad)?;
        decrypt(&c, &parse(&s)?, aad)
    }

    #[test]
    fn a_value_decrypts_to_what_was_encrypted() {
        assert_eq!(roundtrip(b"ya29.token", b"c:encrypted_access_token").unwrap().as_slice(), b"ya29.token");
        assert_eq!(roundtrip(b"", b"aad").unwrap().as_slice(), b"");
        let big = vec![b'x'; MAX_PLAINTEXT];
        assert_eq!(roundtrip(&big, b"aad").unwrap().len(), MAX_PLAINTEXT);
    }

    #[test]
    fn the_stored_form_is_version_iv_tag_base64() {
        let c = new_cipher(&key(1));
        let s = encrypt(&c, 42, &mut rng(), b"hello", b"aad").unwrap();
        let parts: Vec<&str> = s.split(':').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[0], "42");
        assert_eq!(parts[1].len(), 24);
        assert_eq!(parts[2].len(), 32);
        assert!(parts[1].bytes().chain(parts[2].bytes()).all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(B64.decode(parts[3]).unwrap().len(), 5);
    }

    #[test]
    fn two_encryptions_of_one_plaintext_differ() {
        let c = new_cipher(&key(1));
        let mut r = rng();
        let a = encrypt(&c, 1, &mut r, b"same", b"aad").unwrap();
        let b = encrypt(&c, 1, &mut r, b"same", b"aad").unwrap();
        assert_ne!(a, b);
        assert_ne!(a.split(':').nth(1), b.split(':').nth(1), "IVs must differ");
    }

    fn flip_hex_char(s: &str, field: usize) -> String {
        let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
        let f = &mut parts[field];
        let first = f.as_bytes()[0];
        let replacement = if first == b'0' { "1" } else { "0" };
        f.replace_range(0..1, replacement);
        parts.join(":")
    }

    #[test]
    fn a_flipped_byte_in_iv_tag_or_ciphertext_fails_authentication() {
        let c = new_cipher(&key(1));
        let s = encrypt(&c, 1, &mut rng(), b"secret-token-value", b"aad").unwrap();
        for field in [1, 2] {
            let t = flip_hex_char(&s, field);
            assert!(matches!(decrypt(&c, &parse(&t).unwrap(), b"aad"), Err(OtobotError::AuthenticationFailed)));
        }
        let mut parts: Vec<String> = s.split(':').map(str::to_string).collect();
        let mut raw = B64.decode(&parts[3]).unwrap();
        raw[0] ^= 1;
        parts[3] = B64.encode(raw);
        let t = parts.join(":");
        assert!(matches!(decrypt(&c, &parse(&t).unwrap(), b"aad"), Err(OtobotError::AuthenticationFailed)));
    }

    #[test]
    fn the_wrong_associated_data_fails_authentication() {
        let c = new_cipher(&key(1));
        let s = encrypt(&c, 1, &mut rng(), b"token", b"11111111-1111-1111-1111-111111111111:encrypted_access_token").unwrap();
        let p = parse(&s).unwrap();
        assert!(matches!(
            decrypt(&c, &p, b"22222222-2222-2222-2222-222222222222:encrypted_access_token"),
            Err(OtobotError::AuthenticationFailed)
        ));
        assert!(matches!(
            decrypt(&c, &p, b"11111111-1111-1111-1111-111111111111:encrypted_refresh_token"),
            Err(OtobotError::AuthenticationFailed)
        ));
    }

    #[test]
    fn the_wrong_key_fails_authentication() {
        let s = encrypt(&new_cipher(&key(1)), 1, &mut rng(), b"token", b"aad").unwrap();
        assert!(matches!(
            decrypt(&new_cipher(&key(2)), &parse(&s).unwrap(), b"aad"),
            Err(OtobotError::AuthenticationFailed)
        ));
    }

    #[test]
    fn malformed_values_are_errors_not_panics() {
        let good = encrypt(&new_cipher(&key(1)), 1, &mut rng(), b"x", b"aad").unwrap();
        let parts: Vec<&str> = good.split(':').collect();
        let huge = "1:".to_string() + &"a".repeat(MAX_SEALED);
        let cases: Vec<String> = vec![
            String::new(),
            ":::".into(),
            parts[..3].join(":"),
            format!("{}:{}", good, "extra"),
            format!("0:{}:{}:{}", parts[1], parts[2], parts[3]),
            format!("-1:{}:{}:{}", parts[1], parts[2], parts[3]),
            format!("01:{}:{}:{}", parts[1], parts[2], parts[3]),
            format!("99999999999:{}:{}:{}", parts[1], parts[2], parts[3]),
            format!("1:{}:{}:{}", parts[1].to_uppercase(), parts[2], parts[3]),
            format!("1:zz{}:{}:{}", &parts[1][2..], parts[2], parts[3]),
            format!("1:{}:{}:{}", &parts[1][2..], parts[2], parts[3]),
            format!("1:{}:{}0:{}", parts[1], parts[2], parts[3]),
            format!("1:{}:{}:{}", parts[1], parts[2], "not base64!"),
            format!("1:{}:{}:{}", parts[1], parts[2], "eA"),
            format!("1:é{}:{}:{}", &parts[1][2..], parts[2], parts[3]),
            huge,
        ];
        let c = new_cipher(&key(1));
        for case in &cases {
            let r = parse(case).and_then(|p| decrypt(&c, &p, b"aad"));
            assert!(matches!(r, Err(OtobotError::Malformed(_))), "case {:?} gave {:?}", &case[..case.len().min(60)], r.err());
        }
    }

    #[test]
    fn an_oversized_plaintext_is_refused() {
        let big = vec![0u8; MAX_PLAINTEXT + 1];
        assert!(matches!(
            encrypt(&new_cipher(&key(1)), 1, &mut rng(), &big, b""),
            Err(OtobotError::PlaintextTooLarge)
        ));
    }

    #[test]
    fn error_messages_never_carry_the_value() {
        let s = encrypt(&new_cipher(&key(1)), 1, &mut rng(), b"SUPERSECRET", b"aad").unwrap();
        let parts: Vec<&str> = s.split(':').collect();
        let bad = format!("1:{}:{}:{}", parts[1], parts[2], "@@@@");
        for e in [
            parse(&bad).and_then(|p| decrypt(&new_cipher(&key(1)), &p, b"aad")).unwrap_err(),
            decrypt(&new_cipher(&key(2)), &parse(&s).unwrap(), b"aad").unwrap_err(),
        ] {
            let msg = e.to_string();
            for needle in [parts[1], parts[2], parts[3], "SUPERSECRET", "@@@@"] {
                assert!(!msg.contains(needle), "{msg}");
            }
        }
    }

    #[test]
    fn the_key_check_identifies_a_key_without_being_it() {
        let a = key_check(&key(1));
        assert_eq!(a, key_check(&key(1)));
        assert_ne!(a, key_check(&key(2)));
        assert_ne!(&a[..], &key(1)[..]);
        assert_ne!(*derive(&key(1), LABEL_AUDIT_CHAIN), a);
    }
}
