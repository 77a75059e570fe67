//! Keyed MACs for the audit chain.
//!
//! The chain itself (which rows, in which order) is SQL in the migrations;
//! this module only supplies HMAC-SHA256 under a key derived from a master
//! key version (HKDF label `otobot/audit-chain/v1`, `otobot_crypto::MacKey`),
//! so someone who can write the database but lacks the master key cannot
//! recompute a rewritten chain.

use crate::error::OtobotError;
use crate::keyring;

pub fn mac(key_version: u32, message: &[u8]) -> Result<Vec<u8>, OtobotError> {
    keyring::with(|k| Ok(k.get(key_version)?.mac.mac(message).to_vec()))
}
