//! SECURITY: after a `Cipher` and a `MacKey` are dropped, their key material
//! is nowhere in the process's memory: not in AWS-LC's heap (the AEAD
//! context, freed through `OPENSSL_free`, which cleanses), not in Rust's
//! (the boxed HMAC context, cleansed by `HMAC_CTX_cleanup`). The test reads
//! every private writable mapping through `/proc/self/mem` (no aliasing of
//! live Rust memory) and first proves that it does find the material while
//! the keys are alive. Key bytes are held only masked, so the test itself
//! leaves no copy to find.
#![cfg(target_os = "linux")]

use std::fs::File;
use std::os::unix::fs::FileExt;

use otobot_crypto::{derive, parse, Cipher, MacKey, KEY_LEN, LABEL_AUDIT_CHAIN};
use zeroize::Zeroize;

const MASK: u8 = 0x5a;

/// The writable private mappings of this process, except the one holding
/// this thread's stack (a key passed by reference may linger there).
fn mappings() -> Vec<(u64, u64)> {
    let here = &MASK as *const u8 as u64;
    let marker = 0u8;
    let stack = std::hint::black_box(&marker) as *const u8 as u64;
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms) = (f.next()?, f.next()?);
            let (a, b) = range.split_once('-')?;
            let (a, b) = (u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?);
            let path = l.split_whitespace().nth(5).unwrap_or("");
            let wanted =
                perms.starts_with("rw") && perms.ends_with('p') && !path.starts_with("[v") && path != "[stack]";
            (wanted && !(a..b).contains(&stack) && !(a..b).contains(&here)).then_some((a, b))
        })
        .collect()
}

/// How many times any of the masked 32-byte `patterns` occurs in memory.
fn occurrences(patterns: &[[u8; 32]]) -> usize {
    let mem = File::open("/proc/self/mem").unwrap();
    let mut hits = 0;
    let mut buf = vec![0u8; 1 << 20];
    for (start, end) in mappings() {
        let mut at = start;
        while at < end {
            let len = ((end - at) as usize).min(buf.len());
            // Overlap chunks by 31 bytes so no occurrence is split.
            let Ok(n) = mem.read_at(&mut buf[..len], at) else { break };
            for window in buf[..n].windows(32) {
                if patterns.iter().any(|p| window.iter().zip(p).all(|(w, p)| w ^ MASK == *p)) {
                    hits += 1;
                }
            }
            if n < 32 || at + n as u64 >= end {
                break;
            }
            at += n as u64 - 31;
        }
        buf[..32].zeroize();
    }
    hits
}

/// The SHA-256 state after HMAC's first block (`key XOR pad`), as AWS-LC's
/// `HMAC_CTX` holds it (`uint32_t h[8]`, native-endian).
fn hmac_state(key: &[u8; 32], pad: u8) -> [u8; 32] {
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut block = [pad; 64];
    for (b, k) in block.iter_mut().zip(key) {
        *b ^= k;
    }
    sha2::compress256(&mut h, &[block.into()]);
    block.zeroize();
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(h) {
        o.copy_from_slice(&w.to_ne_bytes());
    }
    out
}

fn masked(mut bytes: [u8; 32]) -> [u8; 32] {
    let out = bytes.map(|b| b ^ MASK);
    bytes.zeroize();
    out
}

#[test]
fn dropped_keys_leave_no_key_material_in_memory() {
    let mut master = [0u8; KEY_LEN];
    aws_lc_rs::rand::fill(&mut master).unwrap();
    let mut mac_key = derive(&master, LABEL_AUDIT_CHAIN);
    // The master key (an AES-256 key schedule starts with it) and the two
    // HMAC states of the audit key; never the key itself in the clear.
    let patterns = [masked(master), masked(hmac_state(&mac_key, 0x36)), masked(hmac_state(&mac_key, 0x5c))];
    mac_key.zeroize();
    drop(mac_key);

    let cipher = Box::new(Cipher::new(&master));
    let mac = Box::new(MacKey::new(&master));
    master.zeroize();
    let stored = cipher.seal(1, b"token", b"aad").unwrap();
    assert_eq!(cipher.open(&parse(&stored).unwrap(), b"aad").unwrap().as_slice(), b"token");
    let _ = mac.mac(b"row");

    let alive = occurrences(&patterns);
    assert!(alive >= 3, "the scan must see the live AES key schedule and HMAC states ({alive} hits)");

    drop(cipher);
    drop(mac);
    assert_eq!(occurrences(&patterns), 0, "key material left in memory after the keys were dropped");
}

#[test]
fn the_scan_finds_key_bytes_in_memory_freed_without_wiping() {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).unwrap();
    let pattern = masked(key);
    let mut heap = vec![0u8; 256];
    heap[100..132].copy_from_slice(&key);
    key.zeroize();
    drop(heap);
    assert!(occurrences(&[pattern]) >= 1, "a freed, unwiped block must be seen");
}
