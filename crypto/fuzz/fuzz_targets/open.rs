//! Opening, two ways, against the RustCrypto `aes-gcm` crate:
//! - arbitrary input as a stored value under a fixed key: the library and
//!   `aes-gcm` (fed the same parsed IV, tag and base64-decoded ciphertext)
//!   must agree on accept/reject and on the plaintext;
//! - arbitrary (aad, plaintext) sealed by the library: `aes-gcm` opens it to
//!   the same plaintext, and a changed byte of its IV, tag or ciphertext is
//!   refused.
#![no_main]

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use otobot_crypto::{parse, Cipher, Error};

const KEY: [u8; 32] = *b"otobot fuzz key, never a secret!";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let cipher = Cipher::new(&KEY);
    let reference = Aes256Gcm::new(&KEY.into());
    // Split the rest at the first 0xff byte: associated data, then the value.
    let (aad, value) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&b""[..], rest),
    };
    if mode % 2 == 0 {
        let Ok(s) = std::str::from_utf8(value) else { return };
        let Ok(sealed) = parse(s) else { return };
        let ours = cipher.open(&sealed, aad);
        let theirs = B64.decode(sealed.ciphertext_b64).map(|mut ct| {
            reference.decrypt_in_place_detached((&sealed.iv).into(), aad, &mut ct, (&sealed.tag).into()).map(|()| ct)
        });
        match (ours, theirs) {
            (Ok(p), Ok(Ok(q))) => assert_eq!(p.as_slice(), q.as_slice()),
            (Err(Error::AuthenticationFailed), Ok(Err(_))) => {}
            (Err(Error::Malformed(_)), Err(_)) => {}
            (ours, theirs) => panic!("disagree: ours {:?}, aes-gcm {:?}", ours.map(|_| ()), theirs.map(|r| r.is_ok())),
        }
    } else {
        let version = u32::from(mode) + 1;
        let s = cipher.seal(version, value, aad).expect("seal");
        let sealed = parse(&s).expect("our own stored form parses");
        assert_eq!(sealed.version, version);
        let mut ct = B64.decode(sealed.ciphertext_b64).expect("our own base64");
        reference
            .decrypt_in_place_detached((&sealed.iv).into(), aad, &mut ct, (&sealed.tag).into())
            .expect("aes-gcm opens it");
        assert_eq!(ct, value);
        assert_eq!(cipher.open(&sealed, aad).expect("opens").as_slice(), value);
        // One changed byte in the IV, tag or ciphertext: refused. (The
        // version is not authenticated: it chooses the key, and another key
        // fails; the extension's keyring test covers that.)
        let head = s.find(':').expect("a version field") + 1;
        let at = head + (usize::from(mode) * 7919 + value.len()) % (s.len() - head);
        let mut bytes = s.into_bytes();
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
        let t = String::from_utf8(bytes).expect("ASCII");
        assert!(parse(&t).and_then(|p| cipher.open(&p, aad)).is_err(), "a changed byte was accepted");
    }
});
