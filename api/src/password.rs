//! Password hashing: argon2id for every new hash; bcrypt (`$2a$`/`$2b$`/`$2y$`)
//! still verifies, so accounts provisioned the seed's way keep working, and
//! is upgraded to argon2id at the next successful login.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString},
    Argon2,
};

/// An argon2id PHC string with a fresh random salt.
pub fn hash(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

/// Whether `password` matches `stored` (argon2 or bcrypt). Any malformed
/// hash is a mismatch, never an error that could tell accounts apart.
pub fn verify(password: &str, stored: &str) -> bool {
    if is_bcrypt(stored) {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A stored hash that should be replaced by a fresh argon2id one.
pub fn needs_upgrade(stored: &str) -> bool {
    !stored.starts_with("$argon2id$")
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|p| stored.starts_with(p))
}

/// A hash to verify against when the account does not exist, so that an
/// unknown email costs the same time as a wrong password.
pub fn decoy() -> String {
    hash("otobot decoy password").expect("hashing a constant works")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argon2id_hash_verifies_its_password_only() {
        let h = hash("Test123!").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("Test123!", &h));
        assert!(!verify("test123!", &h));
        assert!(!needs_upgrade(&h));
    }

    #[test]
    fn a_seed_bcrypt_hash_verifies_and_asks_for_an_upgrade() {
        let h = bcrypt::hash("Test123!", 10).unwrap();
        assert!(h.starts_with("$2b$10$"));
        assert!(verify("Test123!", &h));
        assert!(!verify("wrong", &h));
        assert!(needs_upgrade(&h));
    }

    #[test]
    fn a_malformed_hash_is_a_mismatch() {
        for stored in ["", "x", "$2b$10$short", "$argon2id$v=19$garbage"] {
            assert!(!verify("anything", stored));
        }
    }
}
