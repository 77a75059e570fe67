//! The provider catalogue: `api/providers.toml`, embedded in the binary, merged with the
//! operator's `OAUTH_PROVIDERS_FILE` and validated at start.
//!
//! One entry per service code: its OAuth2 endpoints and behaviour (or that it is an API-key
//! service). The catalogue is the single source of truth for `otobot.services`: start-up syncs
//! [`Catalogue::services_json`] into the table. The file's header documents every field.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The catalogue shipped with the binary.
pub const BUILTIN_TOML: &str = include_str!("../../providers.toml");

/// Longest account identifier kept (`client_connections.account_identifier` is 1 to 320 chars).
pub const MAX_ACCOUNT_IDENTIFIER_CHARS: usize = 320;

/// Longest `id_token` decoded.
const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;

/// Authorization request parameters the OAuth flow sets itself; an entry may not override them.
const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "client_secret",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// The primary way a service is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    Oauth2,
    ApiKey,
}

impl AuthType {
    /// The value of `services.auth_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthType::Oauth2 => "oauth2",
            AuthType::ApiKey => "api_key",
        }
    }
}

/// How the client authenticates at the token endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// HTTP Basic with the client id and secret (the RFC's default).
    #[default]
    ClientSecretBasic,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
        }
    }
}

/// How the revocation endpoint is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeAuth {
    /// POST form `token=…`, no client authentication (Google, Salesforce).
    TokenParam,
    /// POST form `token=…`, client authenticated with HTTP Basic (RFC 7009).
    ClientBasic,
    /// POST form `token=…&client_id=…&client_secret=…`.
    ClientPost,
    /// POST with `Authorization: Bearer <access token>` and no body (Dropbox, Slack).
    Bearer,
}

impl RevokeAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeAuth::TokenParam => "token_param",
            RevokeAuth::ClientBasic => "client_basic",
            RevokeAuth::ClientPost => "client_post",
            RevokeAuth::Bearer => "bearer",
        }
    }
}

/// Which JSON document the account identifier is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentifierSource {
    /// The response of `userinfo_url`.
    Userinfo,
    /// The token endpoint's response.
    TokenResponse,
    /// The claims of the `id_token` in the token endpoint's response.
    IdToken,
}

impl IdentifierSource {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentifierSource::Userinfo => "userinfo",
            IdentifierSource::TokenResponse => "token_response",
            IdentifierSource::IdToken => "id_token",
        }
    }
}

/// Where the connected account's identifier (an email, a login, a user id) is found.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountIdentifier {
    pub source: IdentifierSource,
    /// Dotted path in that document, e.g. `authed_user.id`; a numeric segment indexes an array.
    pub field: String,
}

fn default_scope_separator() -> String {
    " ".to_owned()
}

fn default_true() -> bool {
    true
}

/// One catalogue entry (its code is the key in [`Catalogue`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub display_name: String,
    pub auth_type: AuthType,
    /// Also accepts an API key / personal token.
    #[serde(default)]
    pub accepts_api_key: bool,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    /// Refresh endpoint when it is not `token_url` (see [`Provider::refresh_endpoint`]).
    pub refresh_url: Option<String>,
    pub revoke_url: Option<String>,
    pub revoke_auth: Option<RevokeAuth>,
    /// GET with the access token as a Bearer token.
    pub userinfo_url: Option<String>,
    #[serde(default)]
    pub default_scopes: Vec<String>,
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    #[serde(default)]
    pub extra_authorize_params: BTreeMap<String, String>,
    /// Send an S256 PKCE challenge.
    #[serde(default)]
    pub pkce: bool,
    #[serde(default)]
    pub token_auth_method: TokenAuthMethod,
    pub account_identifier: Option<AccountIdentifier>,
    /// A refresh invalidates the refresh token it used: store the new one at once and never
    /// refresh one connection concurrently. (A refresh_token in any refresh response replaces
    /// the stored one, whatever this says.)
    #[serde(default)]
    pub refresh_token_rotates: bool,
    /// Access tokens are expected to expire; an `expires_in` in a response always wins.
    #[serde(default = "default_true")]
    pub token_expires: bool,
    /// Where the entry was checked.
    pub docs: Option<String>,
}

/// A catalogue that cannot be used; the message names the provider code and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogueError {
    #[error("the {origin} provider catalogue is not valid TOML: {message}")]
    Syntax {
        origin: &'static str,
        message: String,
    },
    /// The entry does not have the catalogue's shape (unknown field, wrong type, missing field).
    #[error("provider {code}: {message}")]
    Malformed { code: String, message: String },
    /// A field breaks a rule of the catalogue.
    #[error("provider {code}: {field} {problem}")]
    Invalid {
        code: String,
        field: String,
        problem: String,
    },
}

/// The services, ordered by code.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Catalogue {
    providers: BTreeMap<String, Provider>,
}

impl Catalogue {
    /// The embedded catalogue (`api/providers.toml`).
    pub fn builtin() -> Result<Catalogue, CatalogueError> {
        Ok(Catalogue {
            providers: parse_entries("builtin", BUILTIN_TOML)?,
        })
    }

    /// The embedded catalogue with `extra_toml` (the content of `OAUTH_PROVIDERS_FILE`, which the
    /// caller reads) merged over it: an entry with an existing code replaces it wholly, a new code
    /// is added.
    pub fn load(extra_toml: Option<&str>) -> Result<Catalogue, CatalogueError> {
        let mut catalogue = Catalogue::builtin()?;
        if let Some(extra) = extra_toml {
            catalogue
                .providers
                .extend(parse_entries("OAUTH_PROVIDERS_FILE", extra)?);
        }
        Ok(catalogue)
    }

    /// A catalogue of exactly the entries of `toml` (no builtin ones).
    pub fn from_toml(toml: &str) -> Result<Catalogue, CatalogueError> {
        Ok(Catalogue {
            providers: parse_entries("given", toml)?,
        })
    }

    pub fn get(&self, code: &str) -> Option<&Provider> {
        self.providers.get(code)
    }

    /// `(code, provider)` ordered by code.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Provider)> {
        self.providers.iter().map(|(c, p)| (c.as_str(), p))
    }

    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Codes of the OAuth2 providers whose client id and secret are set (see
    /// [`Provider::client_credentials`]), ordered.
    pub fn oauth_enabled(&self, var: impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.iter()
            .filter(|(code, p)| p.client_credentials(code, &var).is_some())
            .map(|(code, _)| code.to_owned())
            .collect()
    }

    /// The rows to sync into `otobot.services`, ordered by code:
    /// `{"code", "displayName", "authType", "acceptsApiKey", "config": {…}}`, where `config`
    /// holds the non-secret OAuth details (camelCase keys, absent ones left out).
    pub fn services_json(&self) -> Value {
        Value::Array(
            self.iter()
                .map(|(code, p)| {
                    json!({
                        "code": code,
                        "displayName": p.display_name,
                        "authType": p.auth_type.as_str(),
                        "acceptsApiKey": p.accepts_api_key,
                        "config": p.config_json(),
                    })
                })
                .collect(),
        )
    }
}

impl Provider {
    /// Prefix of the provider's environment variables: the code upper-cased, `-` becoming `_`.
    pub fn env_prefix(code: &str) -> String {
        code.to_ascii_uppercase().replace('-', "_")
    }

    /// `(client_id, client_secret)` from `<PREFIX>_CLIENT_ID` / `<PREFIX>_CLIENT_SECRET`, both
    /// non-empty once trimmed; `Some` means the provider is enabled for OAuth. Always `None` for
    /// API-key services.
    pub fn client_credentials(
        &self,
        code: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Option<(String, String)> {
        if self.auth_type != AuthType::Oauth2 {
            return None;
        }
        let prefix = Self::env_prefix(code);
        let read = |name: &str| {
            var(&format!("{prefix}_{name}"))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        Some((read("CLIENT_ID")?, read("CLIENT_SECRET")?))
    }

    /// The endpoint of the refresh grant: `refresh_url`, else `token_url`.
    pub fn refresh_endpoint(&self) -> Option<&str> {
        self.refresh_url.as_deref().or(self.token_url.as_deref())
    }

    /// `default_scopes` joined with `scope_separator`, for the `scope` parameter.
    pub fn scope_param(&self) -> String {
        self.default_scopes.join(&self.scope_separator)
    }

    /// The connected account's identifier, read as `account_identifier` says from the token
    /// response, the userinfo response or the `id_token`'s claims. Numbers are stringified; a
    /// missing, empty, non-scalar or over-long (> 320 chars) value gives `None`, as does an entry
    /// without `account_identifier`.
    pub fn read_account_identifier(
        &self,
        token_response: &Value,
        userinfo: Option<&Value>,
    ) -> Option<String> {
        let rule = self.account_identifier.as_ref()?;
        let claims;
        let document = match rule.source {
            IdentifierSource::TokenResponse => token_response,
            IdentifierSource::Userinfo => userinfo?,
            IdentifierSource::IdToken => {
                // SECURITY: the id_token's signature is not checked. This is only called on the
                // response of our own, client-authenticated request to token_url, received
                // directly over TLS (https is enforced for every catalogue URL), which OpenID
                // Connect Core §3.1.3.7 accepts in place of signature validation. The claim only
                // labels the connection; it never authenticates anyone. Do not pass an id_token
                // that arrived any other way (front channel, user input).
                claims = jwt_claims(token_response.get("id_token")?.as_str()?)?;
                &claims
            }
        };
        scalar_text(lookup(document, &rule.field)?)
    }

    fn config_json(&self) -> Value {
        let mut config = Map::new();
        let mut put = |key: &str, value: Value| {
            config.insert(key.to_owned(), value);
        };
        let urls = [
            ("authorizationUrl", &self.authorization_url),
            ("tokenUrl", &self.token_url),
            ("refreshUrl", &self.refresh_url),
            ("revokeUrl", &self.revoke_url),
            ("userinfoUrl", &self.userinfo_url),
        ];
        for (key, url) in urls {
            if let Some(url) = url {
                put(key, json!(url));
            }
        }
        if let Some(revoke_auth) = self.revoke_auth {
            put("revokeAuth", json!(revoke_auth.as_str()));
        }
        if self.auth_type == AuthType::Oauth2 {
            put("defaultScopes", json!(self.default_scopes));
            put("scopeSeparator", json!(self.scope_separator));
            put("extraAuthorizeParams", json!(self.extra_authorize_params));
            put("pkce", json!(self.pkce));
            put("tokenAuthMethod", json!(self.token_auth_method.as_str()));
            put("refreshTokenRotates", json!(self.refresh_token_rotates));
            put("tokenExpires", json!(self.token_expires));
        }
        if let Some(rule) = &self.account_identifier {
            put(
                "accountIdentifier",
                json!({"source": rule.source.as_str(), "field": rule.field}),
            );
        }
        if let Some(docs) = &self.docs {
            put("docs", json!(docs));
        }
        Value::Object(config)
    }

    fn validate(&self, code: &str) -> Result<(), CatalogueError> {
        let invalid = |field: &str, problem: &str| CatalogueError::Invalid {
            code: code.to_owned(),
            field: field.to_owned(),
            problem: problem.to_owned(),
        };

        let name_chars = self.display_name.chars().count();
        if self.display_name.trim().is_empty() || name_chars > 100 {
            return Err(invalid("display_name", "must be 1 to 100 characters"));
        }
        if self.display_name.chars().any(char::is_control) {
            return Err(invalid(
                "display_name",
                "must not contain control characters",
            ));
        }

        let urls = [
            ("authorization_url", &self.authorization_url),
            ("token_url", &self.token_url),
            ("refresh_url", &self.refresh_url),
            ("revoke_url", &self.revoke_url),
            ("userinfo_url", &self.userinfo_url),
            ("docs", &self.docs),
        ];
        for (field, url) in urls {
            if let Some(url) = url {
                check_url(url).map_err(|problem| invalid(field, problem))?;
            }
        }

        match self.auth_type {
            AuthType::Oauth2 => {
                if self.authorization_url.is_none() {
                    return Err(invalid("authorization_url", "is required for oauth2"));
                }
                if self.token_url.is_none() {
                    return Err(invalid("token_url", "is required for oauth2"));
                }
            }
            AuthType::ApiKey => {
                if !self.accepts_api_key {
                    return Err(invalid(
                        "accepts_api_key",
                        "must be true for an api_key service",
                    ));
                }
                let oauth_only = [
                    ("authorization_url", self.authorization_url.is_some()),
                    ("token_url", self.token_url.is_some()),
                    ("refresh_url", self.refresh_url.is_some()),
                    ("revoke_url", self.revoke_url.is_some()),
                    ("revoke_auth", self.revoke_auth.is_some()),
                    ("userinfo_url", self.userinfo_url.is_some()),
                    ("default_scopes", !self.default_scopes.is_empty()),
                    (
                        "extra_authorize_params",
                        !self.extra_authorize_params.is_empty(),
                    ),
                    ("account_identifier", self.account_identifier.is_some()),
                ];
                if let Some((field, _)) = oauth_only.iter().find(|(_, set)| *set) {
                    return Err(invalid(field, "is only for oauth2 entries"));
                }
            }
        }

        match (&self.revoke_url, &self.revoke_auth) {
            (Some(_), None) => return Err(invalid("revoke_auth", "is required with revoke_url")),
            (None, Some(_)) => return Err(invalid("revoke_auth", "needs a revoke_url")),
            _ => {}
        }

        if self.scope_separator != " " && self.scope_separator != "," {
            return Err(invalid("scope_separator", "must be \" \" or \",\""));
        }
        for (i, scope) in self.default_scopes.iter().enumerate() {
            if scope.is_empty() {
                return Err(invalid("default_scopes", "must not contain an empty scope"));
            }
            if scope
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                return Err(invalid(
                    "default_scopes",
                    "must not contain whitespace, commas or control characters inside a scope",
                ));
            }
            if self.default_scopes[..i].contains(scope) {
                return Err(invalid("default_scopes", "must not repeat a scope"));
            }
        }

        for (key, value) in &self.extra_authorize_params {
            let key_ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
            if !key_ok {
                return Err(invalid(
                    "extra_authorize_params",
                    "keys must be non-empty and made of letters, digits, '_', '-' or '.'",
                ));
            }
            if RESERVED_AUTHORIZE_PARAMS.contains(&key.as_str()) {
                return Err(invalid(
                    "extra_authorize_params",
                    "must not set a parameter of the OAuth flow itself (client_id, redirect_uri, response_type, scope, state, code_challenge…)",
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(invalid(
                    "extra_authorize_params",
                    "values must not contain control characters",
                ));
            }
        }

        if let Some(rule) = &self.account_identifier {
            if rule.field.is_empty() || rule.field.split('.').any(str::is_empty) {
                return Err(invalid(
                    "account_identifier.field",
                    "must be a non-empty dotted path without empty segments",
                ));
            }
            if rule
                .field
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    "account_identifier.field",
                    "must not contain whitespace",
                ));
            }
            match rule.source {
                IdentifierSource::Userinfo if self.userinfo_url.is_none() => {
                    return Err(invalid(
                        "account_identifier.source",
                        "is userinfo but userinfo_url is not set",
                    ));
                }
                IdentifierSource::IdToken if !self.default_scopes.iter().any(|s| s == "openid") => {
                    return Err(invalid(
                        "account_identifier.source",
                        "is id_token but default_scopes lacks openid",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Parses and validates the entries of one catalogue file.
fn parse_entries(
    origin: &'static str,
    text: &str,
) -> Result<BTreeMap<String, Provider>, CatalogueError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| CatalogueError::Syntax {
            origin,
            message: e.to_string().trim_end().to_owned(),
        })?;
    let mut providers = BTreeMap::new();
    for (code, value) in table {
        if !valid_code(&code) {
            return Err(CatalogueError::Invalid {
                code: format!("{code:?}"),
                field: "code".to_owned(),
                problem: "must match ^[a-z0-9][a-z0-9_-]{0,62}$".to_owned(),
            });
        }
        let provider: Provider =
            value
                .try_into()
                .map_err(|e: toml::de::Error| CatalogueError::Malformed {
                    code: code.clone(),
                    message: e.message().trim_end().to_owned(),
                })?;
        provider.validate(&code)?;
        providers.insert(code, provider);
    }
    Ok(providers)
}

/// `^[a-z0-9][a-z0-9_-]{0,62}$`, as `services.service_code`'s CHECK.
fn valid_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// An absolute https URL with a host; plain http only for 127.0.0.1 and localhost (tests).
fn check_url(url: &str) -> Result<(), &'static str> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    let (rest, https) = if let Some(rest) = url.strip_prefix("https://") {
        (rest, true)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (rest, false)
    } else {
        return Err("must be an https URL");
    };
    if url.contains('#') {
        return Err("must not contain a fragment");
    }
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err("must not contain credentials");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or("must have a valid host")?;
        let port = v6[end + 1..].strip_prefix(':');
        if port.is_none() && end + 1 != v6.len() {
            return Err("must have a valid host");
        }
        (&authority[..end + 2], port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = if host.starts_with('[') {
        host.len() > 2
            && host[1..host.len() - 1]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    } else {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.starts_with(['.', '-'])
            && !host.ends_with('-')
    };
    if !host_ok {
        return Err("must have a valid host");
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err("must have a valid port");
        }
    }
    let loopback = host == "127.0.0.1" || host.eq_ignore_ascii_case("localhost") || host == "[::1]";
    if !https && !loopback {
        return Err("must be an https URL (plain http only for 127.0.0.1 and localhost)");
    }
    Ok(())
}

/// The value at a dotted path; numeric segments index arrays.
fn lookup<'a>(mut value: &'a Value, path: &str) -> Option<&'a Value> {
    for segment in path.split('.') {
        value = match value {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A string (trimmed) or a number, as text of 1 to 320 characters.
fn scalar_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let chars = text.chars().count();
    (1..=MAX_ACCOUNT_IDENTIFIER_CHARS)
        .contains(&chars)
        .then_some(text)
}

/// The claims (payload) of a compact JWS, without checking its signature.
fn jwt_claims(token: &str) -> Option<Value> {
    if token.len() > MAX_ID_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None; // five parts: an encrypted JWT, not supported
    }
    let claims: Value = serde_json::from_slice(&base64url_decode(payload)?).ok()?;
    claims.is_object().then_some(claims)
}

/// Base64url (RFC 4648 §5), padding optional.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        format!(
            "[testidp]\ndisplay_name = \"Test IdP\"\nauth_type = \"oauth2\"\n\
             authorization_url = \"http://127.0.0.1:9/authorize\"\n\
             token_url = \"http://127.0.0.1:9/token\"\n{extra}"
        )
    }

    fn err(toml: &str) -> String {
        Catalogue::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn codes_follow_the_database_check() {
        for good in ["google", "a", "0x", "my-idp_2", &"a".repeat(63)] {
            assert!(valid_code(good), "{good}");
        }
        for bad in ["", "Google", "-a", "_a", "a b", "a.b", "é", &"a".repeat(64)] {
            assert!(!valid_code(bad), "{bad}");
        }
    }

    #[test]
    fn urls_must_be_https_except_loopback() {
        for good in [
            "https://accounts.google.com/o/oauth2/v2/auth",
            "https://example.com",
            "https://example.com:8443/x?y=z",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
            "http://LOCALHOST:1/x",
            "http://[::1]:9/x",
        ] {
            assert_eq!(check_url(good), Ok(()), "{good}");
        }
        for bad in [
            "http://example.com/token",
            "http://localhost.evil.com/token",
            "http://127.0.0.1.evil.com/",
            "http://evil.com@127.0.0.1/",
            "https://user:pw@example.com/",
            "ftp://example.com/",
            "https://",
            "https:///path",
            "https://exa mple.com/",
            "https://example.com/#frag",
            "https://example.com:0/",
            "https://example.com:99999/",
            "https://example.com:/",
            "//example.com/",
            "HTTPS://example.com/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64url_decodes_with_and_without_padding() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64url_decode("Z").is_none());
        assert!(base64url_decode("Zm9v+").is_none());
        assert!(base64url_decode("Zm/v").is_none());
    }

    #[test]
    fn lookup_follows_objects_and_array_indexes() {
        let doc = json!({"a": {"b": [{"c": 7}, {"c": "x"}]}, "n": null, "t": true});
        assert_eq!(lookup(&doc, "a.b.1.c"), Some(&json!("x")));
        assert_eq!(
            scalar_text(lookup(&doc, "a.b.0.c").unwrap()),
            Some("7".into())
        );
        assert_eq!(lookup(&doc, "a.b.x"), None);
        assert_eq!(lookup(&doc, "a.z"), None);
        assert_eq!(scalar_text(&doc["n"]), None);
        assert_eq!(scalar_text(&doc["t"]), None);
        assert_eq!(scalar_text(&json!("  ")), None);
        assert_eq!(scalar_text(&json!("x".repeat(321))), None);
        assert_eq!(scalar_text(&json!("x".repeat(320))), Some("x".repeat(320)));
    }

    #[test]
    fn id_tokens_with_other_shapes_are_ignored() {
        assert!(jwt_claims("a.b").is_none());
        assert!(jwt_claims("a.e30.c.d.e").is_none());
        assert!(jwt_claims("a.WzFd.c").is_none()); // payload [1]: not an object
        assert_eq!(jwt_claims("x.e30.").unwrap(), json!({}));
    }

    #[test]
    fn a_minimal_oauth_entry_takes_the_defaults() {
        let catalogue = Catalogue::from_toml(&minimal("")).unwrap();
        let p = catalogue.get("testidp").unwrap();
        assert_eq!(p.scope_separator, " ");
        assert_eq!(p.token_auth_method, TokenAuthMethod::ClientSecretBasic);
        assert!(p.token_expires);
        assert!(!p.pkce && !p.refresh_token_rotates && !p.accepts_api_key);
        assert_eq!(p.refresh_endpoint(), Some("http://127.0.0.1:9/token"));
        assert_eq!(p.read_account_identifier(&json!({"id": 1}), None), None);
    }

    #[test]
    fn field_rules_name_the_code_and_the_field() {
        let cases = [
            ("revoke_url = \"https://x.example/revoke\"", "provider testidp: revoke_auth is required with revoke_url"),
            ("revoke_auth = \"bearer\"", "provider testidp: revoke_auth needs a revoke_url"),
            ("scope_separator = \";\"", "provider testidp: scope_separator must be"),
            ("default_scopes = [\"a b\"]", "provider testidp: default_scopes must not contain whitespace"),
            ("default_scopes = [\"\"]", "provider testidp: default_scopes must not contain an empty scope"),
            ("default_scopes = [\"a\", \"a\"]", "provider testidp: default_scopes must not repeat"),
            ("extra_authorize_params = { redirect_uri = \"https://evil.example\" }", "provider testidp: extra_authorize_params must not set a parameter"),
            ("extra_authorize_params = { \"a b\" = \"1\" }", "provider testidp: extra_authorize_params keys"),
            ("account_identifier = { source = \"userinfo\", field = \"email\" }", "provider testidp: account_identifier.source is userinfo but userinfo_url is not set"),
            ("account_identifier = { source = \"id_token\", field = \"email\" }", "provider testidp: account_identifier.source is id_token but default_scopes lacks openid"),
            ("account_identifier = { source = \"token_response\", field = \"\" }", "provider testidp: account_identifier.field must be"),
            ("account_identifier = { source = \"token_response\", field = \"a..b\" }", "provider testidp: account_identifier.field must be"),
            ("account_identifier = { source = \"somewhere\", field = \"a\" }", "provider testidp: unknown variant `somewhere`"),
            ("account_identifier = { source = \"token_response\", field = \"a\", extra = 1 }", "provider testidp: unknown field `extra`"),
            ("userinfo_url = \"ftp://x.example/\"", "provider testidp: userinfo_url must be an https URL"),
            ("docs = \"http://docs.example/\"", "provider testidp: docs must be an https URL"),
            ("token_auth_method = \"private_key_jwt\"", "provider testidp: unknown variant `private_key_jwt`"),
        ];
        for (line, expected) in cases {
            let message = err(&minimal(line));
            assert!(message.starts_with(expected), "{line}: {message}");
        }
        for name in ["", "  ", &"n".repeat(101), "a\nb"] {
            let toml = minimal("").replace("\"Test IdP\"", &format!("{name:?}"));
            let message = err(&toml);
            assert!(
                message.starts_with("provider testidp: display_name must"),
                "{message}"
            );
        }
        let toml = minimal("").replace("Test IdP", &"é".repeat(100));
        assert!(
            Catalogue::from_toml(&toml).is_ok(),
            "100 characters, 200 bytes"
        );
    }

    #[test]
    fn api_key_entries_carry_no_oauth_details() {
        let base = "[k]\ndisplay_name = \"K\"\nauth_type = \"api_key\"\n";
        assert!(Catalogue::from_toml(&format!("{base}accepts_api_key = true")).is_ok());
        assert_eq!(
            err(base),
            "provider k: accepts_api_key must be true for an api_key service"
        );
        assert_eq!(
            err(&format!(
                "{base}accepts_api_key = true\ntoken_url = \"https://k.example/token\""
            )),
            "provider k: token_url is only for oauth2 entries"
        );
        let k = Catalogue::from_toml(&format!("{base}accepts_api_key = true")).unwrap();
        let p = k.get("k").unwrap();
        let var = |_: &str| Some("set".to_owned());
        assert_eq!(p.client_credentials("k", var), None);
    }

    #[test]
    fn syntax_errors_name_the_origin() {
        let message = Catalogue::load(Some("[broken")).unwrap_err().to_string();
        assert!(
            message.starts_with("the OAUTH_PROVIDERS_FILE provider catalogue is not valid TOML"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_code_is_quoted() {
        assert_eq!(
            err("[\"Bad Code\"]\ndisplay_name = \"x\"\nauth_type = \"api_key\"\naccepts_api_key = true\n"),
            "provider \"Bad Code\": code must match ^[a-z0-9][a-z0-9_-]{0,62}$"
        );
    }
}
