//! User tokens: HS256 JWTs signed with `API_JWT_SECRET`, short-lived.
//!
//! SECURITY: only HS256 is accepted (so `alg: none` and algorithm
//! confusion fail), with no clock leeway; `exp`, `iat`, `sub`, `iss` (this
//! API's `PUBLIC_URL`) and `aud` ([`AUDIENCE`]) are required, so a token
//! another service signed with a shared secret, or one of this API's other
//! tokens (portal sessions), is not a user token here.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `aud` of user tokens.
pub const AUDIENCE: &str = "otobot-user-api";

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// `PUBLIC_URL` of the API that issued it.
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    pub client_id: Uuid,
    /// admin or user
    pub role: String,
    pub iat: i64,
    pub exp: i64,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    pub ttl_seconds: i64,
}

impl JwtKeys {
    /// Keys for tokens issued (and accepted) by the API at `issuer` (`PUBLIC_URL`).
    pub fn new(secret: &[u8], ttl_seconds: i64, issuer: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            ttl_seconds,
        }
    }

    /// A token for this user, and its expiry (Unix seconds).
    pub fn issue(&self, user: Uuid, client: Uuid, role: &str) -> (String, i64) {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            sub: user,
            client_id: client,
            role: role.to_owned(),
            iat: now,
            exp: now + self.ttl_seconds,
        };
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, claims.exp)
    }

    pub fn verify(&self, token: &str) -> Option<Claims> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISS: &str = "https://vault.example.test";

    fn b64(s: &str) -> String {
        use std::fmt::Write;
        // URL-safe base64 without padding, enough for a test token.
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let b = s.as_bytes();
        let mut out = String::new();
        for chunk in b.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &c)| n | (c as u32) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                let _ = out.write_char(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn a_token_round_trips_and_forgeries_fail() {
        let keys = JwtKeys::new(&[7u8; 32], 60, ISS);
        let (user, client) = (Uuid::new_v4(), Uuid::new_v4());
        let (token, exp) = keys.issue(user, client, "admin");
        let claims = keys.verify(&token).unwrap();
        assert_eq!(
            (
                claims.sub,
                claims.client_id,
                claims.role.as_str(),
                claims.exp
            ),
            (user, client, "admin", exp)
        );

        assert!(
            JwtKeys::new(&[8u8; 32], 60, ISS).verify(&token).is_none(),
            "another secret"
        );
        let expired = JwtKeys::new(&[7u8; 32], -1, ISS)
            .issue(user, client, "user")
            .0;
        assert!(keys.verify(&expired).is_none(), "expired");
        let payload = format!(
            r#"{{"iss":"{ISS}","aud":"otobot-user-api","sub":"{user}","client_id":"{client}","role":"admin","iat":0,"exp":99999999999}}"#
        );
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&payload)
        );
        assert!(keys.verify(&none).is_none(), "alg none");
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 5, 'A');
        assert!(keys.verify(&tampered).is_none(), "tampered payload");
    }

    #[test]
    fn a_token_for_another_issuer_or_audience_or_without_them_is_refused() {
        let keys = JwtKeys::new(&[7u8; 32], 60, ISS);
        let now = chrono::Utc::now().timestamp();
        let (user, client) = (Uuid::new_v4(), Uuid::new_v4());
        let sign = |claims: serde_json::Value| {
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(&[7u8; 32]),
            )
            .unwrap()
        };
        let base = serde_json::json!({"iss": ISS, "aud": AUDIENCE, "sub": user,
            "client_id": client, "role": "user", "iat": now, "exp": now + 60});
        assert!(
            keys.verify(&sign(base.clone())).is_some(),
            "the control token"
        );
        for (field, value) in [
            ("iss", Some("https://other.example.test")),
            ("aud", Some("otobot-portal-session")),
            ("iss", None),
            ("aud", None),
        ] {
            let mut claims = base.clone();
            match value {
                Some(v) => claims[field] = v.into(),
                None => {
                    claims.as_object_mut().unwrap().remove(field);
                }
            }
            assert!(keys.verify(&sign(claims)).is_none(), "{field}={value:?}");
        }
        // The same secret on another deployment (another PUBLIC_URL).
        let other = JwtKeys::new(&[7u8; 32], 60, "https://other.example.test");
        assert!(keys.verify(&other.issue(user, client, "user").0).is_none());
    }
}
