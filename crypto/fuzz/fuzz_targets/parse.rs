//! The stored-form parser on arbitrary input: it never panics, accepts only
//! the canonical form (whatever it accepts is exactly what it would write
//! back: version without leading zero in 1..=2147483647, 24 and 32 lowercase
//! hex digits, no further ':'), and refuses anything over MAX_SEALED.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otobot_crypto::{parse, parse_version, Error, MAX_SEALED};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match parse(s) {
        Ok(p) => {
            let canonical = format!("{}:{}:{}:{}", p.version, hex::encode(p.iv), hex::encode(p.tag), p.ciphertext_b64);
            assert_eq!(canonical, s, "accepted a non-canonical stored form");
            assert!((1..=i32::MAX as u32).contains(&p.version));
            assert!(s.len() <= MAX_SEALED);
            assert!(!p.ciphertext_b64.contains(':'));
        }
        // Errors are static descriptions (`&'static str`): they cannot
        // carry the input.
        Err(e) => assert!(matches!(e, Error::Malformed(_))),
    }
    // The version alone: the same rule as the first field.
    let first = s.split(':').next().unwrap_or("");
    if let Ok(v) = parse_version(first) {
        assert_eq!(v.to_string(), first);
    }
});
