//! Values written by the implementation this crate replaced (hand-written
//! AES-NI/PCLMULQDQ GCM, commit 6933b8c; see fixtures/README.md) still
//! decrypt, and key checks and audit MACs are unchanged: the stored form,
//! `otobot.key_versions` and the audit chain are contracts.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use otobot_crypto::{key_check, parse, Cipher, Error, MacKey, KEY_LEN};

const VALUES: &str = include_str!("fixtures/legacy-6933b8c.tsv");
const DERIVATIONS: &str = include_str!("fixtures/legacy-6933b8c-derivations.tsv");

fn rows(tsv: &'static str, header: &str) -> impl Iterator<Item = Vec<&'static str>> {
    let mut lines = tsv.lines();
    assert_eq!(lines.next(), Some(header));
    lines.map(|l| l.split('\t').collect())
}

fn key(hex_key: &str) -> [u8; KEY_LEN] {
    hex::decode(hex_key).unwrap().try_into().unwrap()
}

#[test]
fn every_legacy_value_decrypts_to_its_plaintext() {
    let mut n = 0;
    let (mut versions, mut max_len) = (std::collections::BTreeSet::new(), 0);
    for f in rows(VALUES, "version\tkey_hex\taad\tplaintext_b64\tstored") {
        let (version, cipher, aad) = (f[0].parse::<u32>().unwrap(), Cipher::new(&key(f[1])), f[2].as_bytes());
        let plain = B64.decode(f[3]).unwrap();
        let sealed = parse(f[4]).unwrap_or_else(|e| panic!("row {n}: {e}"));
        assert_eq!(sealed.version, version, "row {n}");
        assert_eq!(cipher.open(&sealed, aad).unwrap().as_slice(), plain.as_slice(), "row {n}");
        // Still bound to its associated data.
        assert_eq!(cipher.open(&sealed, b"another:column").unwrap_err(), Error::AuthenticationFailed);
        // Re-sealed by this implementation, it reads back the same.
        let again = cipher.seal(version, &plain, aad).unwrap();
        assert_eq!(cipher.open(&parse(&again).unwrap(), aad).unwrap().as_slice(), plain.as_slice());
        versions.insert(version);
        max_len = max_len.max(plain.len());
        n += 1;
    }
    assert_eq!(n, 95, "the whole fixture was read");
    assert_eq!(versions.len(), 5);
    assert!(max_len > 65_536);
}

#[test]
fn key_checks_and_audit_macs_are_those_of_the_legacy_implementation() {
    let mut n = 0;
    for f in rows(DERIVATIONS, "version\tkey_hex\tkey_check_hex\tmessage_hex\taudit_mac_hex") {
        let k = key(f[1]);
        assert_eq!(hex::encode(key_check(&k)), f[2], "key check of version {}", f[0]);
        let message = hex::decode(f[3]).unwrap();
        assert_eq!(hex::encode(MacKey::new(&k).mac(&message)), f[4], "audit MAC of version {}", f[0]);
        n += 1;
    }
    assert_eq!(n, 5);
}
