//! Portal sessions: a browser holds an HttpOnly, SameSite=Strict cookie with
//! a signed session id; the database holds the id's SHA-256 and decides
//! whether the session is still live (logout, expiry, idle time, active user).
//!
//! SECURITY:
//! - The cookie is signed with a key derived from `API_JWT_SECRET` for this
//!   purpose only, so a ToolJet bearer token is not a session cookie and a
//!   session cookie is not a bearer token.
//! - A cookie alone authenticates nothing: every API request made with it
//!   must carry `x-csrf-token`, an HMAC of the session id that only the
//!   portal's own pages can read (`GET /api/portal/session`; the API sends no
//!   `Access-Control-Allow-Credentials`). A custom header also forces a CORS
//!   preflight on any cross-origin request, which the API never grants.
//! - The id never reaches the database or a log in clear: only its SHA-256.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hmac::{Hmac, Mac};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{
    auth::AuthUser,
    db,
    error::{ApiError, Result},
    settings::PortalSettings,
    state::SharedState,
};

/// The header that carries the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The cookie's name over https: `__Host-` pins it to this host, path `/`,
/// `Secure`, so a sibling subdomain cannot plant or overwrite it.
const COOKIE_SECURE: &str = "__Host-otobot_session";
/// Over plain http (development, tests) the prefix is not allowed.
const COOKIE_PLAIN: &str = "otobot_session";
/// Marks a portal session token, so no other HS256 token can pass for one.
const TYP: &str = "otobot-portal-session";

/// The `aud` of portal session tokens.
const AUDIENCE: &str = "otobot-portal-session";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// `PUBLIC_URL` of the API that issued it.
    iss: String,
    aud: String,
    /// 256 random bits, base64url.
    sid: String,
    sub: Uuid,
    typ: String,
    iat: i64,
    exp: i64,
}

/// A verified cookie: who it names, and its session's id hash and CSRF token.
pub struct Cookie {
    pub user: Uuid,
    pub id_hash: [u8; 32],
    pub csrf: String,
}

/// A new session, before the database has recorded it.
pub struct NewSession {
    pub cookie_value: String,
    pub id_hash: [u8; 32],
    pub csrf: String,
}

pub struct SessionKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    csrf_key: Zeroizing<[u8; 32]>,
    pub ttl_seconds: i32,
    pub idle_seconds: i32,
    secure: bool,
    issuer: String,
}

fn derive(secret: &[u8], label: &str) -> Zeroizing<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    Zeroizing::new(mac.finalize().into_bytes().into())
}

impl SessionKeys {
    pub fn new(jwt_secret: &[u8], settings: &PortalSettings) -> Self {
        let signing = derive(jwt_secret, "otobot/portal-session/v1");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[AUDIENCE]);
        Self {
            issuer: settings.issuer.clone(),
            encoding: EncodingKey::from_secret(signing.as_slice()),
            decoding: DecodingKey::from_secret(signing.as_slice()),
            validation,
            csrf_key: derive(jwt_secret, "otobot/portal-csrf/v1"),
            ttl_seconds: settings.session_ttl_seconds,
            idle_seconds: settings.idle_seconds,
            secure: settings.secure_cookies,
        }
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure {
            COOKIE_SECURE
        } else {
            COOKIE_PLAIN
        }
    }

    fn csrf_for(&self, sid: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.csrf_key.as_slice()).expect("any key length");
        mac.update(sid.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A fresh session for `user`: the cookie value, the hash the database
    /// keeps, and the CSRF token the page sends back.
    pub fn issue(&self, user: Uuid) -> NewSession {
        let sid = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: AUDIENCE.into(),
            sid,
            sub: user,
            typ: TYP.into(),
            iat: now,
            exp: now + i64::from(self.ttl_seconds),
        };
        let cookie_value = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        NewSession {
            cookie_value,
            id_hash: Sha256::digest(claims.sid.as_bytes()).into(),
            csrf: self.csrf_for(&claims.sid),
        }
    }

    /// The session cookie of a request, verified (signature, expiry, kind).
    pub fn cookie(&self, headers: &HeaderMap) -> Option<Cookie> {
        let name = self.cookie_name();
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())?;
        let claims = decode::<Claims>(value, &self.decoding, &self.validation)
            .ok()?
            .claims;
        (claims.typ == TYP && claims.sid.len() == 43).then(|| Cookie {
            user: claims.sub,
            id_hash: Sha256::digest(claims.sid.as_bytes()).into(),
            csrf: self.csrf_for(&claims.sid),
        })
    }

    /// The user a request's session cookie names, signature checked only
    /// (for rate limiting; the database decides whether it is live).
    pub fn subject(&self, headers: &HeaderMap) -> Option<Uuid> {
        self.cookie(headers).map(|c| c.user)
    }

    /// `Set-Cookie` for a new session.
    pub fn set_cookie(&self, value: &str) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name(),
            self.ttl_seconds
        ))
        .expect("a JWT is a valid header value")
    }

    /// `Set-Cookie` that removes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
            self.cookie_name()
        ))
        .expect("valid header value")
    }
}

/// Whether the request's `x-csrf-token` is this session's (constant time).
pub fn csrf_matches(headers: &HeaderMap, cookie: &Cookie) -> bool {
    headers
        .get(CSRF_HEADER)
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(cookie.csrf.as_bytes())))
}

/// The live session's user, from the database, or `None`.
pub async fn actor(state: &SharedState, id_hash: &[u8; 32], idle: i32) -> Result<Option<AuthUser>> {
    let value = db::within(state.db_timeout, async {
        let client = db::client(&state.pool).await?;
        let statement = client
            .prepare_cached("SELECT otobot.portal_session_actor($1, $2)")
            .await
            .map_err(db::map_error)?;
        let row = client
            .query_one(&statement, &[&id_hash.as_slice(), &idle])
            .await
            .map_err(db::map_error)?;
        Ok(row.get::<_, Option<serde_json::Value>>(0))
    })
    .await?;
    Ok(value.and_then(|v| {
        Some(AuthUser {
            id: v["userId"].as_str()?.parse().ok()?,
            client_id: v["clientId"].as_str()?.parse().ok()?,
            role: v["role"].as_str()?.to_owned(),
            source: "portal",
        })
    }))
}

/// The user-route authentication of a request without `Authorization`: a
/// verified session cookie, the matching CSRF header, a live session.
pub async fn authenticate(headers: &HeaderMap, state: &SharedState) -> Result<AuthUser> {
    let api = state.user_api.as_ref().ok_or(ApiError::InvalidToken)?;
    let cookie = api.portal.cookie(headers).ok_or(ApiError::InvalidToken)?;
    if !csrf_matches(headers, &cookie) {
        return Err(ApiError::Forbidden(
            "A portal session needs its CSRF token in the x-csrf-token header".into(),
        ));
    }
    let user = actor(state, &cookie.id_hash, api.portal.idle_seconds)
        .await?
        .ok_or(ApiError::InvalidToken)?;
    if user.id != cookie.user {
        return Err(ApiError::InvalidToken);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secure: bool) -> SessionKeys {
        SessionKeys::new(
            &[7u8; 32],
            &PortalSettings {
                session_ttl_seconds: 600,
                idle_seconds: 60,
                secure_cookies: secure,
                issuer: "http://localhost:3001".into(),
            },
        )
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_session_cookie_round_trips_and_its_csrf_token_is_bound_to_it() {
        let k = keys(false);
        let user = Uuid::new_v4();
        let s = k.issue(user);
        let h = with_cookie(&format!("other=1; otobot_session={}; x=y", s.cookie_value));
        let c = k.cookie(&h).expect("verified");
        assert_eq!(
            (c.user, c.id_hash, c.csrf.as_str()),
            (user, s.id_hash, s.csrf.as_str())
        );
        let other = k.issue(user);
        assert_ne!(other.csrf, s.csrf, "each session has its own CSRF token");
        assert_ne!(other.id_hash, s.id_hash);

        let mut h2 = h.clone();
        assert!(!csrf_matches(&h2, &c), "missing header");
        h2.insert(CSRF_HEADER, HeaderValue::from_str(&other.csrf).unwrap());
        assert!(!csrf_matches(&h2, &c), "another session's token");
        h2.insert(CSRF_HEADER, HeaderValue::from_str(&s.csrf).unwrap());
        assert!(csrf_matches(&h2, &c));
    }

    #[test]
    fn forged_foreign_and_expired_cookies_are_refused() {
        let k = keys(false);
        let user = Uuid::new_v4();
        let s = k.issue(user);
        // Another secret.
        let foreign = SessionKeys::new(
            &[8u8; 32],
            &PortalSettings {
                session_ttl_seconds: 600,
                idle_seconds: 60,
                secure_cookies: false,
                issuer: "http://localhost:3001".into(),
            },
        )
        .issue(user);
        assert!(k
            .cookie(&with_cookie(&format!(
                "otobot_session={}",
                foreign.cookie_value
            )))
            .is_none());
        // A ToolJet bearer token signed with the same API_JWT_SECRET.
        let bearer = crate::jwt::JwtKeys::new(&[7u8; 32], 600, "http://localhost:3001")
            .issue(user, Uuid::new_v4(), "admin")
            .0;
        assert!(k
            .cookie(&with_cookie(&format!("otobot_session={bearer}")))
            .is_none());
        // Tampered.
        let mut t = s.cookie_value.clone();
        t.insert(t.find('.').unwrap() + 3, 'A');
        assert!(k
            .cookie(&with_cookie(&format!("otobot_session={t}")))
            .is_none());
        // Under the https name when cookies are plain, and vice versa.
        assert!(k
            .cookie(&with_cookie(&format!(
                "__Host-otobot_session={}",
                s.cookie_value
            )))
            .is_none());
        // Expired.
        let mut short = keys(false);
        short.ttl_seconds = -1;
        let old = short.issue(user);
        assert!(k
            .cookie(&with_cookie(&format!(
                "otobot_session={}",
                old.cookie_value
            )))
            .is_none());
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let plain = keys(false).set_cookie("v").to_str().unwrap().to_owned();
        assert_eq!(
            plain,
            "otobot_session=v; Path=/; Max-Age=600; HttpOnly; SameSite=Strict"
        );
        let secure = keys(true).set_cookie("v").to_str().unwrap().to_owned();
        assert_eq!(
            secure,
            "__Host-otobot_session=v; Path=/; Max-Age=600; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(keys(true)
            .clear_cookie()
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
    }
}
