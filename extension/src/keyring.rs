//! The per-backend keyring: key versions loaded by the API into its pooled
//! sessions. Keys live only in this backend's memory.
//!
//! SECURITY: keys never touch a GUC, a table, a log line or an error. Entries
//! are zeroized when replaced, when unloaded, and at backend exit; they are
//! boxed, so the keyring growing never leaves a copy behind; a backend that
//! has handled a key cannot be dumped. A key version must be registered
//! (its check value recorded) by a superuser or `otobot_owner` before any
//! session can load it: loading never registers.

use std::cell::RefCell;

use pgrx::prelude::*;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{self, KEY_LEN};
use crate::error::OtobotError;

/// One key version: its AES-256-GCM key (an AWS-LC `EVP_AEAD_CTX` on
/// AWS-LC's heap, cleansed by AWS-LC when freed) and its audit-chain HMAC
/// key (an AWS-LC `HMAC_CTX` held inline, cleansed on drop).
pub struct KeyEntry {
    pub cipher: crypto::Cipher,
    /// HMAC key of the audit chain, derived from this version's master key.
    pub mac: crypto::MacKey,
}

#[derive(Default)]
pub struct Keyring {
    /// Few entries (one per key version): a vector beats a map here.
    /// SECURITY: boxed, so a reallocation of the vector moves pointers, never
    /// key material (the HMAC contexts are inline in the entries); each entry
    /// stays where it was built until it is dropped (and zeroized).
    entries: Vec<(u32, Box<KeyEntry>)>,
    current: Option<u32>,
}

impl Keyring {
    pub fn get(&self, version: u32) -> Result<&KeyEntry, OtobotError> {
        if self.entries.is_empty() {
            return Err(OtobotError::NoKeyLoaded);
        }
        self.entries
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, e)| &**e)
            .ok_or(OtobotError::UnknownKeyVersion(version))
    }

    pub fn current(&self) -> Result<(u32, &KeyEntry), OtobotError> {
        if self.entries.is_empty() {
            return Err(OtobotError::NoKeyLoaded);
        }
        let v = self.current.ok_or(OtobotError::NoCurrentKey)?;
        Ok((v, self.get(v)?))
    }

    fn insert(&mut self, version: u32, entry: Box<KeyEntry>, is_current: bool) {
        // Dropping the replaced entry cleanses its HMAC context
        // (HMAC_CTX_cleanup) and frees its AEAD context through
        // OPENSSL_free, which cleanses every allocation it frees.
        self.entries.retain(|(v, _)| *v != version);
        self.entries.push((version, entry));
        self.entries.sort_by_key(|(v, _)| *v);
        if is_current {
            self.current = Some(version);
        } else if self.current == Some(version) {
            self.current = None;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.current = None;
    }

    pub fn versions(&self) -> Vec<(u32, bool)> {
        self.entries.iter().map(|(v, _)| (*v, Some(*v) == self.current)).collect()
    }
}

thread_local! {
    // `const`: no lazy-initialisation check on each access (every encrypt and decrypt).
    static KEYRING: RefCell<Keyring> = const { RefCell::new(Keyring { entries: Vec::new(), current: None }) };
    static EXIT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub fn with<R>(f: impl FnOnce(&Keyring) -> R) -> R {
    KEYRING.with(|k| f(&k.borrow()))
}

#[pg_guard]
unsafe extern "C-unwind" fn wipe_at_exit(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    let _ = KEYRING.try_with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            k.clear()
        }
    });
}

fn ensure_exit_hook() {
    EXIT_HOOK.with(|done| {
        if !done.get() {
            // SAFETY: registers a plain callback for this backend's exit.
            unsafe { pg_sys::on_proc_exit(Some(wipe_at_exit), pg_sys::Datum::from(0)) };
            done.set(true);
        }
    });
}

/// The check value recorded for `version`, if any.
fn recorded_check(version: u32) -> Result<Option<Vec<u8>>, OtobotError> {
    Spi::get_one_with_args::<Vec<u8>>(
        "SELECT (SELECT check_value FROM otobot.key_versions WHERE version = $1)",
        &[(version as i32).into()],
    )
    .map_err(|_| OtobotError::KeyCheckStore(version))
}

/// SECURITY: constant-time comparison of two check values.
fn same_check(stored: &[u8], check: &[u8; 32]) -> bool {
    stored.len() == check.len() && bool::from(stored.ct_eq(check.as_slice()))
}

fn master_key(version: i32, key: &[u8]) -> Result<(u32, Zeroizing<[u8; KEY_LEN]>), OtobotError> {
    if version < 1 {
        return Err(OtobotError::BadKeyVersion(version));
    }
    if key.len() != KEY_LEN {
        return Err(OtobotError::BadKeyLength(version));
    }
    keep_out_of_core_dumps();
    let mut master = Zeroizing::new([0u8; KEY_LEN]);
    master.copy_from_slice(key);
    Ok((version as u32, master))
}

/// Records the check value of a new key version (trust on first use, by an
/// owner only: EXECUTE on `otobot_register_key` is granted to `otobot_owner`
/// and superusers alone). Returns `true` when this call recorded it, `false`
/// when the same key was already registered; a different key for a
/// registered version is refused. The insert never overwrites.
pub fn register(version: i32, key: &[u8]) -> Result<bool, OtobotError> {
    let result = register_inner(version, key);
    scrub_stack::<2048>();
    result
}

#[inline(never)]
fn register_inner(version: i32, key: &[u8]) -> Result<bool, OtobotError> {
    let (version, master) = master_key(version, key)?;
    let check = crypto::key_check(&master);
    drop(master);
    let inserted = match recorded_check(version)? {
        Some(_) => false,
        None => {
            Spi::run_with_args(
                "INSERT INTO otobot.key_versions (version, check_value) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                &[(version as i32).into(), check.to_vec().into()],
            )
            .map_err(|_| OtobotError::KeyCheckStore(version))?;
            true
        }
    };
    let stored = recorded_check(version)?.ok_or(OtobotError::KeyCheckStore(version))?;
    if same_check(&stored, &check) {
        Ok(inserted)
    } else {
        Err(OtobotError::KeyCheckMismatch(version))
    }
}

/// Verify `key` against the check value registered for its version, then
/// hold it. An unregistered version is refused (loading never registers).
pub fn load(version: i32, key: &[u8], is_current: bool) -> Result<(), OtobotError> {
    let result = load_inner(version, key, is_current);
    scrub_stack::<2048>();
    result
}

/// Not inlined: the master key's copies, its key schedule and the HKDF and
/// HMAC states of the derivations all live in frames below [`load`]'s, which
/// [`scrub_stack`] then overwrites. The entry itself is built on the heap.
#[inline(never)]
fn load_inner(version: i32, key: &[u8], is_current: bool) -> Result<(), OtobotError> {
    let (version, master) = master_key(version, key)?;
    let stored = recorded_check(version)?.ok_or(OtobotError::KeyNotRegistered(version))?;
    if !same_check(&stored, &crypto::key_check(&master)) {
        return Err(OtobotError::KeyCheckMismatch(version));
    }
    let entry = Box::new(KeyEntry { cipher: crypto::Cipher::new(&master), mac: crypto::MacKey::new(&master) });
    drop(master);
    ensure_exit_hook();
    KEYRING.with(|k| k.borrow_mut().insert(version, entry, is_current));
    Ok(())
}

/// SECURITY: overwrites `8 × WORDS` bytes of stack below the caller's frame, where the
/// functions it called left key schedules, HKDF and HMAC states and moved-from
/// copies (not every type involved zeroizes itself on drop). Volatile
/// writes: not optimised away.
#[inline(never)]
pub fn scrub_stack<const WORDS: usize>() {
    let mut area = [0u64; WORDS];
    area.zeroize();
    std::hint::black_box(&area);
}

pub fn unload() {
    KEYRING.with(|k| k.borrow_mut().clear());
}

#[cfg(target_os = "linux")]
mod dumpable {
    use std::ffi::{c_int, c_ulong};

    #[cfg(any(test, feature = "pg_test"))]
    pub const PR_GET_DUMPABLE: c_int = 3;
    pub const PR_SET_DUMPABLE: c_int = 4;

    extern "C" {
        pub fn prctl(option: c_int, arg2: c_ulong, arg3: c_ulong, arg4: c_ulong, arg5: c_ulong) -> c_int;
    }
}

/// Makes this backend non-dumpable, once, before it first holds a key.
///
/// SECURITY: `prctl(PR_SET_DUMPABLE, 0)` rather than `madvise(MADV_DONTDUMP)`
/// on the key pages. A key does not stay in our boxed entries alone: it
/// arrives in PostgreSQL's protocol buffer, as a bytea parameter in a memory
/// context, as SPI arguments, and in copies the compiler leaves on the stack;
/// `MADV_DONTDUMP` would cover only pages we allocate ourselves (the malloc
/// heap shares its pages with everything else), so a core dump would still
/// carry most copies. A non-dumpable process writes no core file at all, and
/// other processes of the same user can no longer ptrace it or read its
/// `/proc/<pid>/mem`. The cost: a backend that crashed after loading a key
/// leaves no core file to debug (the API's sessions, the CLI's and the
/// sealer's; other sessions are unaffected). The flag is per process and
/// survives until the backend exits (backends never exec).
pub fn keep_out_of_core_dumps() {
    thread_local! {
        static DONE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    #[cfg(target_os = "linux")]
    DONE.with(|done| {
        if !done.get() {
            // SAFETY: prctl with integer arguments only; failure leaves the process as it was.
            let rc = unsafe { dumpable::prctl(dumpable::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            if rc == 0 {
                done.set(true);
            } else {
                pgrx::warning!("otobot: could not mark this backend non-dumpable; keys may reach a core dump");
            }
        }
    });
}

/// Whether this process may be dumped (`prctl(PR_GET_DUMPABLE)`), for tests.
#[cfg(all(target_os = "linux", any(test, feature = "pg_test")))]
pub fn is_dumpable() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { dumpable::prctl(dumpable::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

#[cfg(test)]
mod tests {
    //! SECURITY: proves that no key bytes are left in memory the keyring
    //! frees. A scanning allocator (this test binary only) looks for watched
    //! 32-byte patterns in every block freed while armed.
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

    use super::*;

    const WATCHED: usize = 256;
    static ARMED: AtomicBool = AtomicBool::new(false);
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    static PATTERNS: [[AtomicU64; 4]; WATCHED] = [const { [const { AtomicU64::new(0) }; 4] }; WATCHED];
    static HITS: AtomicUsize = AtomicUsize::new(0);
    /// One armed test at a time (tests run on several threads).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    struct Scanning;

    fn word(bytes: &[u8]) -> u64 {
        u64::from_ne_bytes(bytes[..8].try_into().expect("8 bytes"))
    }

    unsafe fn scan(ptr: *const u8, size: usize) {
        if !ARMED.load(Ordering::Acquire) || size < 32 {
            return;
        }
        // SAFETY: the block is still allocated and `size` bytes long.
        let block = unsafe { std::slice::from_raw_parts(ptr, size) };
        let n = COUNT.load(Ordering::Acquire);
        for at in 0..=size - 32 {
            let first = word(&block[at..]);
            for p in &PATTERNS[..n] {
                if first == p[0].load(Ordering::Relaxed)
                    && (1..4).all(|i| word(&block[at + 8 * i..]) == p[i].load(Ordering::Relaxed))
                {
                    HITS.fetch_add(1, Ordering::AcqRel);
                }
            }
        }
    }

    unsafe impl GlobalAlloc for Scanning {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            unsafe {
                scan(ptr, layout.size());
                System.dealloc(ptr, layout)
            }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // Not System.realloc: the old block must pass through the scan.
            unsafe {
                let new = System.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                if !new.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new
            }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Scanning = Scanning;

    fn master(i: u8) -> [u8; KEY_LEN] {
        std::array::from_fn(|j| i.wrapping_mul(31).wrapping_add(j as u8) ^ 0xa5)
    }

    /// The SHA-256 state after HMAC's first block, `key XOR pad` (0x36 the
    /// inner, 0x5c the outer): what an HMAC context holds instead of the key
    /// (AWS-LC's `HMAC_CTX` keeps both, as `uint32_t h[8]`, native-endian).
    fn hmac_state(key: &[u8; 32], pad: u8) -> [u8; 32] {
        let mut state: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
        ];
        let mut block = [pad; 64];
        for (b, k) in block.iter_mut().zip(key) {
            *b ^= k;
        }
        sha2::compress256(&mut state, &[block.into()]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }

    /// Watches, for each of `n` versions, the master key (an AES key
    /// schedule starts with it), the audit-chain key and the two HMAC states
    /// derived from it; runs `f`; returns the hits.
    fn hits_while(n: u8, f: impl FnOnce()) -> usize {
        let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut count = 0;
        for i in 1..=n {
            let mac_key = otobot_crypto::derive(&master(i), otobot_crypto::LABEL_AUDIT_CHAIN);
            for pattern in [master(i), *mac_key, hmac_state(&mac_key, 0x36), hmac_state(&mac_key, 0x5c)] {
                for (w, slot) in PATTERNS[count].iter().enumerate() {
                    slot.store(word(&pattern[8 * w..]), Ordering::Relaxed);
                }
                count += 1;
            }
        }
        COUNT.store(count, Ordering::Release);
        HITS.store(0, Ordering::Release);
        ARMED.store(true, Ordering::Release);
        f();
        ARMED.store(false, Ordering::Release);
        HITS.load(Ordering::Acquire)
    }

    fn entry(i: u8) -> KeyEntry {
        KeyEntry { cipher: crypto::Cipher::new(&master(i)), mac: crypto::MacKey::new(&master(i)) }
    }

    #[test]
    fn a_growing_replaced_and_cleared_keyring_frees_no_key_bytes() {
        let hits = hits_while(40, || {
            let mut ring = Keyring::default();
            for i in 1..=40u8 {
                ring.insert(u32::from(i), Box::new(entry(i)), i % 7 == 0);
            }
            // Replacing a version drops (and wipes) the old entry.
            for i in (1..=40u8).step_by(3) {
                ring.insert(u32::from(i), Box::new(entry(i)), false);
            }
            assert_eq!(ring.versions().len(), 40);
            ring.clear();
        });
        assert_eq!(hits, 0, "key bytes found in freed memory");
    }

    #[test]
    fn the_hmac_state_the_scan_watches_is_the_one_the_library_computes() {
        // HMAC(k, m) = H(outer || H(inner || m)), so finishing the watched
        // states by hand must give the library's MAC.
        let k = otobot_crypto::derive(&master(3), otobot_crypto::LABEL_AUDIT_CHAIN);
        let mac = crypto::MacKey::new(&master(3)).mac(b"row");
        let finish = |state: [u8; 32], data: &[u8]| {
            let mut h: [u32; 8] = std::array::from_fn(|i| u32::from_ne_bytes(state[4 * i..4 * i + 4].try_into().unwrap()));
            let mut block = [0u8; 64];
            block[..data.len()].copy_from_slice(data);
            block[data.len()] = 0x80;
            block[56..].copy_from_slice(&((64 + data.len() as u64) * 8).to_be_bytes());
            sha2::compress256(&mut h, &[block.into()]);
            let mut out = [0u8; 32];
            for (o, w) in out.chunks_exact_mut(4).zip(h) {
                o.copy_from_slice(&w.to_be_bytes());
            }
            out
        };
        let inner = finish(hmac_state(&k, 0x36), b"row");
        assert_eq!(finish(hmac_state(&k, 0x5c), &inner), mac);
    }

    #[test]
    fn the_scan_finds_the_copies_an_unboxed_keyring_leaves_when_it_grows() {
        // The layout before boxing: Vec<(u32, KeyEntry)>. Growth reallocates
        // and frees the old buffer with its keys in it.
        let hits = hits_while(40, || {
            let mut entries: Vec<(u32, KeyEntry)> = Vec::new();
            for i in 1..=40u8 {
                entries.push((u32::from(i), entry(i)));
            }
            entries.clear();
        });
        assert!(hits > 0, "the scanner must see what an unboxed keyring leaves behind");
    }
}
