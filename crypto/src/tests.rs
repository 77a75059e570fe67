//! The library path against independent references: the GCM specification's
//! vectors, the RustCrypto `aes-gcm`, `hkdf` and `hmac` crates (differential,
//! both directions), and the stored form's rules.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use super::*;

fn key(b: u8) -> [u8; KEY_LEN] {
    [b; KEY_LEN]
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(12)
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The stored form's parts as bytes: (iv, tag, ciphertext).
fn parts(stored: &str) -> ([u8; IV_LEN], [u8; TAG_LEN], Vec<u8>) {
    let s = parse(stored).unwrap();
    (s.iv, s.tag, B64.decode(s.ciphertext_b64).unwrap())
}

fn stored(version: u32, iv: &[u8], tag: &[u8], ct: &[u8]) -> String {
    format!("{version}:{}:{}:{}", hex::encode(iv), hex::encode(tag), B64.encode(ct))
}

#[test]
fn gcm_matches_the_specification_vectors() {
    // McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", test
    // cases 13 to 16 (AES-256, 96-bit IV).
    let k15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let iv15 = "cafebabefacedbaddecaf888";
    let p15 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
               1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let c15 = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
               8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";
    let zero_key = "00".repeat(32);
    let zero_iv = "00".repeat(12);
    let zero_block = "00".repeat(16);
    let cases = [
        (zero_key.as_str(), zero_iv.as_str(), "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
        (&zero_key, &zero_iv, &zero_block, "", "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"),
        (k15, iv15, p15, "", c15, "b094dac5d93471bdec1a502270e3cc6c"),
        (
            k15,
            iv15,
            &p15[..120],
            "feedfacedeadbeeffeedfacedeadbeefabaddad2",
            &c15[..120],
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (k, iv, p, a, c, t) in cases {
        let k: [u8; 32] = unhex(k).try_into().unwrap();
        let iv: [u8; 12] = unhex(iv).try_into().unwrap();
        let (p, a, c, t) = (unhex(p), unhex(a), unhex(c), unhex(t));
        let cipher = Cipher::new(&k);
        let s = cipher.seal_with_iv(3, &iv, &p, &a).unwrap();
        assert_eq!(s, stored(3, &iv, &t, &c));
        assert_eq!(cipher.open(&parse(&s).unwrap(), &a).unwrap().as_slice(), p.as_slice());
    }
}

/// Sealed by the library, opened by `aes-gcm`, and the other way round, for
/// random keys, IVs, associated data and every length that matters; any
/// flipped bit fails both.
#[test]
fn the_library_agrees_with_the_aes_gcm_crate_both_ways() {
    let mut r = rng();
    let aad_lens = [0, 1, 8, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 80, 127, 128, 129, 200, 1000];
    let pt_lens = (0..=300).chain([383, 384, 385, 495, 496, 497, 752, 753, 1000, 4096, 65_541, MAX_PLAINTEXT]);
    for (round, n) in pt_lens.enumerate() {
        let k: [u8; 32] = r.gen();
        let iv: [u8; 12] = r.gen();
        let version = r.gen_range(1..=i32::MAX as u32);
        let (cipher, reference) = (Cipher::new(&k), Aes256Gcm::new(&k.into()));
        let mut aad = vec![0u8; aad_lens[round % aad_lens.len()]];
        let mut plain = vec![0u8; n];
        r.fill_bytes(&mut aad);
        r.fill_bytes(&mut plain);

        // Library -> aes-gcm.
        let s = cipher.seal_with_iv(version, &iv, &plain, &aad).unwrap();
        let (iv_s, tag, mut ct) = parts(&s);
        assert_eq!(iv_s, iv);
        assert_eq!(parse(&s).unwrap().version, version);
        reference
            .decrypt_in_place_detached((&iv).into(), &aad, &mut ct, (&tag).into())
            .unwrap_or_else(|_| panic!("aes-gcm opens the library's value ({n} bytes, aad {})", aad.len()));
        assert_eq!(ct, plain);

        // aes-gcm -> library.
        let mut ct2 = plain.clone();
        let tag2 = reference.encrypt_in_place_detached((&iv).into(), &aad, &mut ct2).unwrap();
        let s2 = stored(version, &iv, &tag2, &ct2);
        assert_eq!(s2, s, "the same IV gives the same stored value");
        assert_eq!(cipher.open(&parse(&s2).unwrap(), &aad).unwrap().as_slice(), plain.as_slice());

        // Any flipped bit in ciphertext, associated data, tag or IV fails
        // in both implementations.
        let bit = r.gen::<usize>();
        let fails = |iv: &[u8; 12], aad: &[u8], ct: &[u8], tag: &[u8; 16]| {
            let e = cipher.open(&parse(&stored(1, iv, tag, ct)).unwrap(), aad);
            assert_eq!(e.unwrap_err(), Error::AuthenticationFailed);
            let mut c = ct.to_vec();
            assert!(reference.decrypt_in_place_detached(iv.into(), aad, &mut c, tag.into()).is_err());
        };
        let tag2: [u8; 16] = tag2.into();
        if n > 0 {
            let mut c = ct2.clone();
            c[bit / 8 % n] ^= 1 << (bit % 8);
            fails(&iv, &aad, &c, &tag2);
        }
        if !aad.is_empty() {
            let mut a = aad.clone();
            let i = bit / 8 % a.len();
            a[i] ^= 1 << (bit % 8);
            fails(&iv, &a, &ct2, &tag2);
        }
        let mut t = tag2;
        t[bit / 8 % 16] ^= 1 << (bit % 8);
        fails(&iv, &aad, &ct2, &t);
        let mut v = iv;
        v[bit / 8 % 12] ^= 1 << (bit % 8);
        fails(&v, &aad, &ct2, &tag2);
    }
}

/// Many credential-sized values under one key, each under a fresh IV of the
/// library's own choosing, opened by `aes-gcm`.
#[test]
fn values_sealed_with_library_ivs_open_with_the_aes_gcm_crate() {
    let k = key(7);
    let (cipher, reference) = (Cipher::new(&k), Aes256Gcm::new(&k.into()));
    let mut ivs = std::collections::HashSet::new();
    for i in 0..20_000u32 {
        let plain = vec![i as u8; (i as usize * 7919) % 301];
        let aad = format!("{i}:encrypted_access_token");
        let s = cipher.seal(1, &plain, aad.as_bytes()).unwrap();
        let (iv, tag, mut ct) = parts(&s);
        assert!(ivs.insert(iv), "an IV repeated");
        reference.decrypt_in_place_detached((&iv).into(), aad.as_bytes(), &mut ct, (&tag).into()).unwrap();
        assert_eq!(ct, plain);
    }
}

#[test]
fn derivations_agree_with_the_hkdf_and_hmac_crates() {
    use ::hmac::Mac as _;
    let mut r = rng();
    for _ in 0..200 {
        let master: [u8; 32] = r.gen();
        let mut label = vec![0u8; r.gen_range(0..80)];
        r.fill_bytes(&mut label);
        let mut want = [0u8; 32];
        ::hkdf::Hkdf::<sha2::Sha256>::new(None, &master).expand(&label, &mut want).unwrap();
        assert_eq!(*derive(&master, &label), want);

        let mut message = vec![0u8; r.gen_range(0..300)];
        r.fill_bytes(&mut message);
        let mac_key = derive(&master, LABEL_AUDIT_CHAIN);
        let mut m = <::hmac::Hmac<sha2::Sha256> as ::hmac::Mac>::new_from_slice(mac_key.as_ref()).unwrap();
        m.update(&message);
        assert_eq!(MacKey::new(&master).mac(&message), <[u8; 32]>::from(m.finalize().into_bytes()));
    }
}

#[test]
fn the_key_check_identifies_a_key_without_being_it() {
    let a = key_check(&key(1));
    assert_eq!(a, key_check(&key(1)));
    assert_ne!(a, key_check(&key(2)));
    assert_ne!(a, key(1));
    assert_ne!(*derive(&key(1), LABEL_AUDIT_CHAIN), a);
}

#[test]
fn a_value_decrypts_to_what_was_encrypted() {
    let c = Cipher::new(&key(1));
    for plain in [&b"ya29.token"[..], b"", &vec![b'x'; MAX_PLAINTEXT]] {
        let s = c.seal(1, plain, b"c:encrypted_access_token").unwrap();
        assert_eq!(c.open(&parse(&s).unwrap(), b"c:encrypted_access_token").unwrap().as_slice(), plain);
    }
}

#[test]
fn the_stored_form_is_version_iv_tag_base64() {
    let s = Cipher::new(&key(1)).seal(42, b"hello", b"aad").unwrap();
    let p: Vec<&str> = s.split(':').collect();
    assert_eq!(p.len(), 4);
    assert_eq!(p[0], "42");
    assert_eq!((p[1].len(), p[2].len()), (24, 32));
    assert!(p[1].bytes().chain(p[2].bytes()).all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
    assert_eq!(B64.decode(p[3]).unwrap().len(), 5);
    for version in [1, 9, 10, 2_147_483_647] {
        let s = Cipher::new(&key(1)).seal(version, b"", b"").unwrap();
        assert!(s.starts_with(&format!("{version}:")) && s.ends_with(':'), "{s}");
    }
}

#[test]
fn two_encryptions_of_one_plaintext_differ() {
    let c = Cipher::new(&key(1));
    let (a, b) = (c.seal(1, b"same", b"aad").unwrap(), c.seal(1, b"same", b"aad").unwrap());
    assert_ne!(a, b);
    assert_ne!(a.split(':').nth(1), b.split(':').nth(1), "IVs must differ");
}

#[test]
fn the_wrong_associated_data_or_key_fails_authentication() {
    let c = Cipher::new(&key(1));
    let s = c.seal(1, b"token", b"11111111-1111-1111-1111-111111111111:encrypted_access_token").unwrap();
    let p = parse(&s).unwrap();
    for aad in [
        &b"22222222-2222-2222-2222-222222222222:encrypted_access_token"[..],
        b"11111111-1111-1111-1111-111111111111:encrypted_refresh_token",
        b"",
    ] {
        assert_eq!(c.open(&p, aad).unwrap_err(), Error::AuthenticationFailed);
    }
    let aad = b"11111111-1111-1111-1111-111111111111:encrypted_access_token";
    assert_eq!(Cipher::new(&key(2)).open(&p, aad).unwrap_err(), Error::AuthenticationFailed);
}

#[test]
fn malformed_values_are_errors_not_panics() {
    let c = Cipher::new(&key(1));
    let good = c.seal(1, b"x", b"aad").unwrap();
    let p: Vec<&str> = good.split(':').collect();
    let cases: Vec<String> = vec![
        String::new(),
        ":::".into(),
        p[..3].join(":"),
        format!("{good}:extra"),
        format!("0:{}:{}:{}", p[1], p[2], p[3]),
        format!("-1:{}:{}:{}", p[1], p[2], p[3]),
        format!("+1:{}:{}:{}", p[1], p[2], p[3]),
        format!("01:{}:{}:{}", p[1], p[2], p[3]),
        format!(" 1:{}:{}:{}", p[1], p[2], p[3]),
        format!("2147483648:{}:{}:{}", p[1], p[2], p[3]),
        format!("99999999999:{}:{}:{}", p[1], p[2], p[3]),
        format!("1:{}:{}:{}", p[1].to_uppercase(), p[2], p[3]),
        format!("1:{}:{}:{}", p[1], p[2].to_uppercase(), p[3]),
        format!("1:zz{}:{}:{}", &p[1][2..], p[2], p[3]),
        format!("1:{}:{}:{}", &p[1][2..], p[2], p[3]),
        format!("1:{}:{}0:{}", p[1], p[2], p[3]),
        format!("1:{}{}:{}", p[1], p[2], p[3]),
        format!("1:{}:{}:{}", p[1], p[2], "not base64!"),
        format!("1:{}:{}:{}", p[1], p[2], "eA"),
        format!("1:{}:{}:{}", p[1], p[2], "eB=="),
        format!("1:{}:{}:{}", p[1], p[2], "eA==\n"),
        format!("1:{}:{}:{}", p[1], p[2], "eA-_"),
        format!("1:é{}:{}:{}", &p[1][2..], p[2], p[3]),
        "1:".to_string() + &"a".repeat(MAX_SEALED),
    ];
    for case in &cases {
        let r = parse(case).and_then(|s| c.open(&s, b"aad"));
        assert!(matches!(r, Err(Error::Malformed(_))), "{:?} gave {:?}", &case[..case.len().min(60)], r);
    }
}

#[test]
fn the_largest_accepted_stored_value_is_the_sealed_cap() {
    let c = Cipher::new(&key(1));
    let s = c.seal(2_147_483_647, &vec![0u8; MAX_PLAINTEXT], b"").unwrap();
    assert!(s.len() <= MAX_SEALED);
    assert_eq!(c.open(&parse(&s).unwrap(), b"").unwrap().len(), MAX_PLAINTEXT);
}

#[test]
fn an_oversized_plaintext_is_refused() {
    let big = vec![0u8; MAX_PLAINTEXT + 1];
    assert_eq!(Cipher::new(&key(1)).seal(1, &big, b"").unwrap_err(), Error::PlaintextTooLarge);
}

#[test]
fn errors_and_debug_output_never_carry_the_value_or_the_key() {
    let c = Cipher::new(&key(0xab));
    let s = c.seal(1, b"SUPERSECRET", b"aad").unwrap();
    let p: Vec<&str> = s.split(':').collect();
    let bad = format!("1:{}:{}:@@@@", p[1], p[2]);
    let texts = [
        parse(&bad).and_then(|v| c.open(&v, b"aad")).unwrap_err().to_string(),
        Cipher::new(&key(2)).open(&parse(&s).unwrap(), b"aad").unwrap_err().to_string(),
        format!("{:?}", parse(&s).unwrap()),
        format!("{c:?}"),
        format!("{:?}", MacKey::new(&key(0xab))),
    ];
    for text in texts {
        for needle in [p[1], p[2], p[3], "SUPERSECRET", "@@@@", "abab", "171"] {
            assert!(!text.contains(needle), "{text}");
        }
    }
}

#[test]
fn a_failed_open_hands_nothing_to_the_caller() {
    let c = Cipher::new(&key(1));
    let s = c.seal(1, b"secret", b"aad").unwrap();
    let mut called = false;
    let r = c.open_with(&parse(&s).unwrap(), b"other", |_| called = true);
    assert_eq!(r.unwrap_err(), Error::AuthenticationFailed);
    assert!(!called);
}

#[test]
fn hex_fields_accept_exactly_lowercase_hex_digits() {
    for c in 0u8..128 {
        let want = c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        for at in [0, 1, 11, 23] {
            let mut iv = vec![b'0'; 24];
            iv[at] = c;
            let iv = String::from_utf8(iv).unwrap();
            assert_eq!(parse_hex::<IV_LEN>(&iv).is_some(), want, "{c:#x} at {at}");
        }
    }
    // Agrees with the `hex` crate on lowercase input; never longer or shorter.
    let mut r = rng();
    for _ in 0..10_000 {
        let bytes: [u8; TAG_LEN] = r.gen();
        let lower = hex::encode(bytes);
        assert_eq!(parse_hex::<TAG_LEN>(&lower), Some(bytes));
        assert_eq!(parse_hex::<TAG_LEN>(&lower.to_uppercase()).is_some(), lower == lower.to_uppercase());
        assert_eq!(parse_hex::<TAG_LEN>(&lower[1..]), None);
        assert_eq!(parse_hex::<IV_LEN>(&lower), None);
        assert_eq!(parse_hex::<TAG_LEN>(&format!("{lower}0")), None);
    }
    assert_eq!(parse_hex::<1>("é"), None);
}
