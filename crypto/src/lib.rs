//! Otobot's cryptography, over [`aws_lc_rs`] (AWS-LC, a FIPS-validated
//! module): AES-256-GCM in the stored form `version:iv:tag:ciphertext`,
//! HKDF-SHA256 key derivation and the audit chain's HMAC-SHA256.
//!
//! No PostgreSQL here: the extension is a thin layer over this crate, and
//! every property is tested without a server (unit tests, the legacy fixture
//! in `tests/`, fuzz targets in `fuzz/`).
//!
//! SECURITY:
//! - IVs are 96 random bits drawn per encryption from AWS-LC's CSPRNG
//!   ([`aws_lc_rs::rand::fill`]); this crate keeps no random state of its own.
//! - Key material lives in AWS-LC objects (an `EVP_AEAD_CTX`, `HMAC_CTX`s),
//!   which AWS-LC wipes when they are freed (`OPENSSL_free` cleanses every
//!   allocation, `HMAC_CTX_cleanup` the context), and in [`Zeroizing`]
//!   buffers. Plaintext passes only through zeroized buffers.
//! - Errors name the problem, never a key, IV, tag, plaintext or ciphertext.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::{hkdf, hmac};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use zeroize::Zeroizing;

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

/// What can go wrong. SECURITY: the messages carry no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The stored form is not `version:iv:tag:ciphertext`.
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    /// The tag does not verify: altered value, wrong key or wrong associated data.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// Plaintext above [`MAX_PLAINTEXT`].
    #[error("plaintext is larger than 1 MiB")]
    PlaintextTooLarge,
    /// The library refused to seal or draw an IV (not expected to happen).
    #[error("encryption failed")]
    SealFailed,
}

/// One master key version's AES-256-GCM key (AWS-LC's `EVP_AEAD_CTX`,
/// wiped by AWS-LC when dropped).
pub struct Cipher(LessSafeKey);

impl Cipher {
    pub fn new(master: &[u8; KEY_LEN]) -> Self {
        let key = UnboundKey::new(&AES_256_GCM, master).expect("AES-256-GCM takes a 32-byte key");
        Cipher(LessSafeKey::new(key))
    }

    /// Encrypt `plaintext` bound to `aad` under a fresh random IV; returns
    /// the stored form `version:iv:tag:ciphertext`.
    pub fn seal(&self, version: u32, plaintext: &[u8], aad: &[u8]) -> Result<String, Error> {
        let mut iv = [0u8; IV_LEN];
        // SECURITY: the IV comes from AWS-LC's CSPRNG, per call.
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| Error::SealFailed)?;
        self.seal_with_iv(version, &iv, plaintext, aad)
    }

    /// [`Cipher::seal`] with a given IV: for the test vectors and the
    /// differential tests only. An IV must never repeat under one key.
    pub(crate) fn seal_with_iv(
        &self,
        version: u32,
        iv: &[u8; IV_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<String, Error> {
        if plaintext.len() > MAX_PLAINTEXT {
            return Err(Error::PlaintextTooLarge);
        }
        // GCM works in place: seal a copy (wiped when dropped, should
        // sealing fail half-way) and write the stored form from it.
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*iv), Aad::from(aad), &mut buf)
            .map_err(|_| Error::SealFailed)?;
        let mut out = String::with_capacity(10 + 1 + IV_LEN * 2 + 1 + TAG_LEN * 2 + 1 + buf.len().div_ceil(3) * 4);
        out.push_str(itoa(version, &mut [0u8; 10]));
        out.push(':');
        push_hex(&mut out, iv);
        out.push(':');
        push_hex(&mut out, tag.as_ref());
        out.push(':');
        B64.encode_string(&*buf, &mut out);
        Ok(out)
    }

    /// Check the tag and decrypt a parsed value, then hand the plaintext to
    /// `f`. The buffer that held it is wiped before this returns (also on
    /// error or panic), so `f` must copy what it keeps.
    pub fn open_with<R>(&self, sealed: &Sealed<'_>, aad: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<R, Error> {
        let b64 = sealed.ciphertext_b64.as_bytes();
        // Room for the decoded ciphertext (an upper bound) and the tag.
        let mut buf = Zeroizing::new(vec![0u8; b64.len().div_ceil(4) * 3 + TAG_LEN]);
        let len = B64
            .decode_slice(b64, &mut buf[..])
            .map_err(|_| Error::Malformed("ciphertext is not standard padded base64"))?;
        buf[len..len + TAG_LEN].copy_from_slice(&sealed.tag);
        let plain = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(sealed.iv), Aad::from(aad), &mut buf[..len + TAG_LEN])
            .map_err(|_| Error::AuthenticationFailed)?;
        Ok(f(plain))
    }

    /// [`Cipher::open_with`] into a zeroized copy.
    pub fn open(&self, sealed: &Sealed<'_>, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        self.open_with(sealed, aad, |plain| Zeroizing::new(plain.to_vec()))
    }
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(AES-256-GCM)")
    }
}

/// Digits are ASCII by construction.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("digits are ASCII")
}

/// Lowercase hex of an IV or a tag (at most 16 bytes).
fn push_hex(out: &mut String, bytes: &[u8]) {
    let mut digits = [0u8; TAG_LEN * 2];
    out.push_str(base16ct::lower::encode_str(bytes, &mut digits).expect("room for twice as many digits as bytes"));
}

/// Decimal digits of `v` (no allocation).
fn itoa(mut v: u32, buf: &mut [u8; 10]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    ascii(&buf[i..])
}

/// A parsed stored value. Borrows the base64 part from the input.
#[derive(PartialEq, Eq)]
pub struct Sealed<'a> {
    pub version: u32,
    pub iv: [u8; IV_LEN],
    pub tag: [u8; TAG_LEN],
    pub ciphertext_b64: &'a str,
}

// SECURITY: a derived Debug would print IV, tag and ciphertext.
impl std::fmt::Debug for Sealed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed").field("version", &self.version).finish_non_exhaustive()
    }
}

/// Parse a key version: decimal digits only, no leading zero, 1..=i32::MAX
/// (it is an SQL integer).
pub fn parse_version(s: &str) -> Result<u32, Error> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
        return Err(Error::Malformed("key version is not a positive decimal number"));
    }
    match s.parse::<u32>() {
        Ok(v) if v <= i32::MAX as u32 => Ok(v),
        _ => Err(Error::Malformed("key version is out of range")),
    }
}

/// Exactly `2 * N` lowercase hex digits (the stored form has no uppercase).
/// `base16ct` (RustCrypto) decodes lowercase only, in constant time: no
/// branch on the digits, so random IVs and tags cost no mispredictions.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    (s.len() == 2 * N && base16ct::lower::decode(s, &mut out).is_ok()).then_some(out)
}

/// Split and validate the stored form `version:iv:tag:ciphertext`; never
/// touches a key. The base64 is checked when the value is opened.
pub fn parse(sealed: &str) -> Result<Sealed<'_>, Error> {
    if sealed.is_empty() {
        return Err(Error::Malformed("empty value"));
    }
    if sealed.len() > MAX_SEALED {
        return Err(Error::Malformed("value is too large"));
    }
    let mut parts = sealed.splitn(4, ':');
    let (Some(version), Some(iv), Some(tag), Some(ct)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Malformed("expected version:iv:tag:ciphertext"));
    };
    let version = parse_version(version)?;
    let iv = parse_hex::<IV_LEN>(iv).ok_or(Error::Malformed("iv must be 24 lowercase hex characters"))?;
    let tag = parse_hex::<TAG_LEN>(tag).ok_or(Error::Malformed("tag must be 32 lowercase hex characters"))?;
    if ct.contains(':') {
        return Err(Error::Malformed("expected version:iv:tag:ciphertext"));
    }
    Ok(Sealed { version, iv, tag, ciphertext_b64: ct })
}

/// HKDF-SHA256 output length.
struct Len32;

impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

/// Derive 32 bytes from a master key for one purpose (HKDF-SHA256, no salt,
/// the label as info).
pub fn derive(master: &[u8; KEY_LEN], label: &[u8]) -> Zeroizing<[u8; 32]> {
    // SECURITY: aws-lc-rs keeps its copy of the secret in a buffer it
    // zeroizes when the Prk is dropped, at the end of this function.
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(master);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[label], Len32).and_then(|okm| okm.fill(out.as_mut())).expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The check value stored in the database for a key version: a one-way
/// derivation, so it identifies the key without revealing it.
pub fn key_check(master: &[u8; KEY_LEN]) -> [u8; 32] {
    *derive(master, LABEL_KEY_CHECK)
}

/// The audit chain's HMAC-SHA256 key of one master key version (AWS-LC's
/// `HMAC_CTX`, cleansed when dropped).
pub struct MacKey(hmac::Key);

impl MacKey {
    /// The key derived from `master` with [`LABEL_AUDIT_CHAIN`].
    pub fn new(master: &[u8; KEY_LEN]) -> Self {
        MacKey(hmac::Key::new(hmac::HMAC_SHA256, derive(master, LABEL_AUDIT_CHAIN).as_ref()))
    }

    pub fn mac(&self, message: &[u8]) -> [u8; 32] {
        hmac::sign(&self.0, message).as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
    }
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(HMAC-SHA256)")
    }
}

#[cfg(test)]
mod tests;
