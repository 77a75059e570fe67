//! The provider catalogue (`api/providers.toml`) through the public API.

use std::collections::HashMap;

use otobot_api::oauth::catalogue::{
    AuthType, Catalogue, CatalogueError, IdentifierSource, Provider, RevokeAuth, TokenAuthMethod,
};
use serde_json::{json, Value};

/// An OAuth provider on the loopback interface, as the end-to-end tests use, plus an override of
/// google pointing at it.
const EXTRA: &str = r#"
[testidp]
display_name = "Test IdP"
auth_type = "oauth2"
authorization_url = "http://127.0.0.1:18080/authorize"
token_url = "http://127.0.0.1:18080/token"
revoke_url = "http://127.0.0.1:18080/revoke"
revoke_auth = "client_basic"
userinfo_url = "http://localhost:18080/userinfo"
default_scopes = ["openid", "email", "files:read"]
extra_authorize_params = { prompt = "consent" }
pkce = true
token_auth_method = "client_secret_post"
account_identifier = { source = "id_token", field = "email" }
refresh_token_rotates = true

[google]
display_name = "Google (test)"
auth_type = "oauth2"
authorization_url = "http://127.0.0.1:18081/auth"
token_url = "http://127.0.0.1:18081/token"
default_scopes = ["openid"]
"#;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// A JWT with the given claims and a dummy signature.
fn jwt(claims: &Value) -> String {
    fn b64url(bytes: &[u8]) -> String {
        const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
    format!(
        "{}.{}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes()),
        b64url(b"not-a-signature")
    )
}

#[test]
fn the_builtin_catalogue_loads_and_is_broad_enough() {
    let catalogue = Catalogue::builtin().expect("api/providers.toml is valid");
    let oauth: Vec<&str> = catalogue
        .iter()
        .filter(|(_, p)| p.auth_type == AuthType::Oauth2)
        .map(|(code, _)| code)
        .collect();
    let api_key: Vec<&str> = catalogue
        .iter()
        .filter(|(_, p)| p.auth_type == AuthType::ApiKey)
        .map(|(code, _)| code)
        .collect();
    assert!(oauth.len() >= 20, "{oauth:?}");
    assert!(api_key.len() >= 3, "{api_key:?}");
    for code in [
        "google",
        "microsoft",
        "notion",
        "slack",
        "github",
        "gitlab",
        "hubspot",
        "salesforce",
        "dropbox",
        "box",
        "zoom",
        "linear",
        "atlassian",
        "asana",
        "airtable",
        "discord",
        "figma",
        "calendly",
        "pipedrive",
        "linkedin",
    ] {
        assert!(oauth.contains(&code), "{code} missing");
    }
    assert!(api_key.contains(&"openai"));
    assert_eq!(Catalogue::load(None).unwrap(), catalogue);
}

#[test]
fn the_builtin_entries_match_the_seeded_services_and_are_complete() {
    let catalogue = Catalogue::builtin().unwrap();
    // Migration 0002 seeds these rows; the catalogue must keep their codes and kinds.
    for (code, auth_type, accepts_api_key) in [
        ("google", AuthType::Oauth2, false),
        ("microsoft", AuthType::Oauth2, false),
        ("notion", AuthType::Oauth2, true),
        ("slack", AuthType::Oauth2, false),
        ("github", AuthType::Oauth2, true),
        ("airtable", AuthType::Oauth2, true),
        ("openai", AuthType::ApiKey, true),
    ] {
        let p = catalogue.get(code).unwrap_or_else(|| panic!("{code}"));
        assert_eq!(p.auth_type, auth_type, "{code}");
        assert_eq!(p.accepts_api_key, accepts_api_key, "{code}");
    }
    for (code, p) in catalogue.iter() {
        // Every shipped entry says where it was checked, and the real providers use https only.
        let docs = p.docs.as_deref().unwrap_or_else(|| panic!("{code}: docs"));
        assert!(docs.starts_with("https://"), "{code}");
        for url in [
            &p.authorization_url,
            &p.token_url,
            &p.refresh_url,
            &p.revoke_url,
            &p.userinfo_url,
        ]
        .into_iter()
        .flatten()
        {
            assert!(url.starts_with("https://"), "{code}: {url}");
        }
        if p.auth_type == AuthType::Oauth2 {
            assert!(
                p.token_url.is_some() && p.authorization_url.is_some(),
                "{code}"
            );
        }
    }
    let google = catalogue.get("google").unwrap();
    assert_eq!(
        google
            .extra_authorize_params
            .get("access_type")
            .map(String::as_str),
        Some("offline")
    );
    assert_eq!(google.extra_authorize_params["prompt"], "consent");
    assert!(google.pkce);
    assert_eq!(catalogue.get("slack").unwrap().scope_separator, ",");
    assert_eq!(
        catalogue.get("notion").unwrap().token_auth_method,
        TokenAuthMethod::ClientSecretBasic
    );
    assert_eq!(
        catalogue.get("dropbox").unwrap().revoke_auth,
        Some(RevokeAuth::Bearer)
    );
    assert_eq!(
        catalogue.get("figma").unwrap().refresh_endpoint(),
        Some("https://api.figma.com/v1/oauth/refresh")
    );
    assert!(catalogue.get("atlassian").unwrap().refresh_token_rotates);
    assert!(!catalogue.get("github").unwrap().token_expires);
}

#[test]
fn extra_entries_are_added_and_replace_builtin_ones_wholly() {
    let builtin = Catalogue::builtin().unwrap();
    let catalogue = Catalogue::load(Some(EXTRA)).unwrap();
    assert_eq!(catalogue.len(), builtin.len() + 1);

    let testidp = catalogue.get("testidp").unwrap();
    assert_eq!(
        testidp.token_url.as_deref(),
        Some("http://127.0.0.1:18080/token")
    );
    assert_eq!(
        testidp.userinfo_url.as_deref(),
        Some("http://localhost:18080/userinfo")
    );
    assert_eq!(testidp.token_auth_method, TokenAuthMethod::ClientSecretPost);
    assert_eq!(testidp.scope_param(), "openid email files:read");
    assert!(testidp.token_expires, "default");

    // Replaced wholly: nothing of the builtin google survives.
    let google = catalogue.get("google").unwrap();
    assert_eq!(google.display_name, "Google (test)");
    assert_eq!(
        google.token_url.as_deref(),
        Some("http://127.0.0.1:18081/token")
    );
    assert!(google.extra_authorize_params.is_empty());
    assert!(google.revoke_url.is_none() && google.userinfo_url.is_none());
    assert!(!google.pkce);
    assert_eq!(google.account_identifier, None);

    // Others untouched.
    assert_eq!(catalogue.get("slack"), builtin.get("slack"));
}

#[test]
fn invalid_entries_are_refused_with_the_code_and_the_field() {
    fn refused(extra: &str) -> String {
        Catalogue::load(Some(extra)).unwrap_err().to_string()
    }

    // A real provider on plain http.
    let message = refused(
        r#"
[google]
display_name = "Google"
auth_type = "oauth2"
authorization_url = "https://accounts.google.com/o/oauth2/v2/auth"
token_url = "http://oauth2.googleapis.com/token"
"#,
    );
    assert!(
        message.starts_with("provider google: token_url must be an https URL"),
        "{message}"
    );

    // Missing token_url.
    assert_eq!(
        refused(
            r#"
[acme]
display_name = "Acme"
auth_type = "oauth2"
authorization_url = "https://acme.example/authorize"
"#
        ),
        "provider acme: token_url is required for oauth2"
    );

    // A code the services table would refuse.
    let message = refused(
        r#"
["Acme Corp"]
display_name = "Acme"
auth_type = "api_key"
accepts_api_key = true
"#,
    );
    assert!(
        message.contains("Acme Corp") && message.contains("code must match"),
        "{message}"
    );

    // An unknown field (a typo must not be silently ignored).
    let message = refused(
        r#"
[acme]
display_name = "Acme"
auth_type = "api_key"
accepts_api_key = true
tokne_url = "https://acme.example/token"
"#,
    );
    assert!(
        message.starts_with("provider acme: unknown field `tokne_url`"),
        "{message}"
    );

    // Missing required field, wrong type, loopback lookalike, api_key without accepts_api_key.
    let message = refused("[acme]\nauth_type = \"api_key\"\naccepts_api_key = true\n");
    assert!(
        message.starts_with("provider acme: missing field `display_name`"),
        "{message}"
    );
    let message = refused(
        "[acme]\ndisplay_name = \"Acme\"\nauth_type = \"api_key\"\naccepts_api_key = \"yes\"\n",
    );
    assert!(
        message.starts_with("provider acme: invalid type"),
        "{message}"
    );
    let message = refused(
        r#"
[acme]
display_name = "Acme"
auth_type = "oauth2"
authorization_url = "http://localhost.acme.example/authorize"
token_url = "https://acme.example/token"
"#,
    );
    assert!(
        message.starts_with("provider acme: authorization_url must be an https URL"),
        "{message}"
    );
    assert_eq!(
        refused("[acme]\ndisplay_name = \"Acme\"\nauth_type = \"api_key\"\n"),
        "provider acme: accepts_api_key must be true for an api_key service"
    );

    let err = Catalogue::load(Some(
        "[acme]\ndisplay_name = \"Acme\"\nauth_type = \"api_key\"\n",
    ))
    .unwrap_err();
    assert!(
        matches!(err, CatalogueError::Invalid { ref code, ref field, .. } if code == "acme" && field == "accepts_api_key")
    );
}

#[test]
fn client_credentials_come_from_the_environment() {
    let catalogue = Catalogue::load(Some(
        r#"
[my-idp]
display_name = "My IdP"
auth_type = "oauth2"
authorization_url = "http://127.0.0.1:1/authorize"
token_url = "http://127.0.0.1:1/token"
"#,
    ))
    .unwrap();
    let google = catalogue.get("google").unwrap();
    let mine = catalogue.get("my-idp").unwrap();

    assert_eq!(Provider::env_prefix("my-idp"), "MY_IDP");
    let vars = env(&[
        ("GOOGLE_CLIENT_ID", " id.apps.googleusercontent.com "),
        ("GOOGLE_CLIENT_SECRET", "s3cret"),
        ("MY_IDP_CLIENT_ID", "abc"),
        ("MY_IDP_CLIENT_SECRET", "  "),
        ("OPENAI_CLIENT_ID", "x"),
        ("OPENAI_CLIENT_SECRET", "y"),
    ]);
    assert_eq!(
        google.client_credentials("google", &vars),
        Some(("id.apps.googleusercontent.com".into(), "s3cret".into()))
    );
    assert_eq!(
        mine.client_credentials("my-idp", &vars),
        None,
        "blank secret"
    );
    assert_eq!(
        google.client_credentials("google", env(&[("GOOGLE_CLIENT_ID", "x")])),
        None
    );
    // Only OAuth providers are "enabled"; an API-key service has no client.
    assert_eq!(catalogue.oauth_enabled(&vars), vec!["google".to_owned()]);
}

#[test]
fn account_identifiers_are_read_from_sample_responses() {
    let catalogue = Catalogue::load(Some(EXTRA)).unwrap();
    let builtin = Catalogue::builtin().unwrap();

    // Slack oauth.v2.access.
    let slack_token = json!({
        "ok": true,
        "access_token": "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy",
        "token_type": "bot",
        "scope": "commands,incoming-webhook",
        "bot_user_id": "U0KRQLJ9H",
        "app_id": "A0KRD7HC3",
        "team": {"name": "Slack Softball Team", "id": "T9TK3CUKW"},
        "enterprise": null,
        "authed_user": {"id": "U1234", "scope": "chat:write", "access_token": "xoxp-1234", "token_type": "user"}
    });
    let slack = builtin.get("slack").unwrap();
    assert_eq!(
        slack.read_account_identifier(&slack_token, None),
        Some("U1234".into())
    );
    // The team, for an entry configured that way.
    let mut by_team = slack.clone();
    by_team.account_identifier = Some(otobot_api::oauth::catalogue::AccountIdentifier {
        source: IdentifierSource::TokenResponse,
        field: "team.id".into(),
    });
    assert_eq!(
        by_team.read_account_identifier(&slack_token, None),
        Some("T9TK3CUKW".into())
    );

    // Notion: the owner is in the token response.
    let notion_token = json!({
        "access_token": "secret_x",
        "token_type": "bearer",
        "bot_id": "b3414d65-9224-5ty7-6ffr-cc9d8773d601",
        "workspace_name": "Ada's workspace",
        "workspace_id": "j565j4d7-2882-61bs-564a-jj9d9uic36hx",
        "owner": {"type": "user", "user": {"object": "user", "id": "6794760a-1f15-45cd-9c65-0dfe42f5135a",
                  "name": "Ada", "type": "person", "person": {"email": "ada@example.com"}}}
    });
    assert_eq!(
        builtin
            .get("notion")
            .unwrap()
            .read_account_identifier(&notion_token, None),
        Some("ada@example.com".into())
    );
    // A workspace-level token has no user: no identifier.
    assert_eq!(
        builtin
            .get("notion")
            .unwrap()
            .read_account_identifier(&json!({"owner": {"workspace": true}}), None),
        None
    );

    // Google: the userinfo response.
    let google = builtin.get("google").unwrap();
    let userinfo =
        json!({"sub": "110169484474386276334", "email": "ada@example.com", "email_verified": true});
    assert_eq!(
        google.read_account_identifier(&json!({"access_token": "ya29"}), Some(&userinfo)),
        Some("ada@example.com".into())
    );
    assert_eq!(
        google.read_account_identifier(&json!({}), None),
        None,
        "no userinfo fetched"
    );

    // GitHub: login; Discord: a numeric id would be stringified.
    let github = builtin.get("github").unwrap();
    assert_eq!(
        github.read_account_identifier(&json!({}), Some(&json!({"login": "octocat", "id": 1}))),
        Some("octocat".into())
    );
    let mut numeric = github.clone();
    numeric.account_identifier.as_mut().unwrap().field = "id".into();
    assert_eq!(
        numeric.read_account_identifier(&json!({}), Some(&json!({"id": 583231}))),
        Some("583231".into())
    );

    // id_token source: testidp and the builtin microsoft entry.
    let claims = json!({"iss": "http://127.0.0.1:18080", "sub": "42", "email": "bob@example.com",
                        "preferred_username": "bob@contoso.example"});
    let token_response = json!({"access_token": "at", "id_token": jwt(&claims)});
    assert_eq!(
        catalogue
            .get("testidp")
            .unwrap()
            .read_account_identifier(&token_response, None),
        Some("bob@example.com".into())
    );
    assert_eq!(
        builtin
            .get("microsoft")
            .unwrap()
            .read_account_identifier(&token_response, None),
        Some("bob@contoso.example".into())
    );
    let testidp = catalogue.get("testidp").unwrap();
    for broken in [
        json!({"access_token": "at"}),
        json!({"id_token": "not-a-jwt"}),
        json!({"id_token": "a.!!!.c"}),
        json!({"id_token": 5}),
        json!({"id_token": jwt(&json!({"sub": "42"}))}),
    ] {
        assert_eq!(
            testidp.read_account_identifier(&broken, None),
            None,
            "{broken}"
        );
    }

    // No account_identifier configured (HubSpot, Linear): nothing to read.
    assert_eq!(
        builtin
            .get("linear")
            .unwrap()
            .read_account_identifier(&json!({"id": "x"}), Some(&json!({"id": "x"}))),
        None
    );
}

#[test]
fn services_json_is_what_start_up_syncs() {
    let catalogue = Catalogue::load(Some(EXTRA)).unwrap();
    let rows = catalogue.services_json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), catalogue.len());
    let codes: Vec<&str> = rows.iter().map(|r| r["code"].as_str().unwrap()).collect();
    let mut sorted = codes.clone();
    sorted.sort();
    assert_eq!(codes, sorted, "ordered by code");

    let row = |code: &str| rows.iter().find(|r| r["code"] == code).unwrap().clone();
    assert_eq!(
        row("testidp"),
        json!({
            "code": "testidp",
            "displayName": "Test IdP",
            "authType": "oauth2",
            "acceptsApiKey": false,
            "config": {
                "authorizationUrl": "http://127.0.0.1:18080/authorize",
                "tokenUrl": "http://127.0.0.1:18080/token",
                "revokeUrl": "http://127.0.0.1:18080/revoke",
                "revokeAuth": "client_basic",
                "userinfoUrl": "http://localhost:18080/userinfo",
                "defaultScopes": ["openid", "email", "files:read"],
                "scopeSeparator": " ",
                "extraAuthorizeParams": {"prompt": "consent"},
                "pkce": true,
                "tokenAuthMethod": "client_secret_post",
                "accountIdentifier": {"source": "id_token", "field": "email"},
                "refreshTokenRotates": true,
                "tokenExpires": true
            }
        })
    );
    assert_eq!(
        row("openai"),
        json!({
            "code": "openai",
            "displayName": "OpenAI",
            "authType": "api_key",
            "acceptsApiKey": true,
            "config": {"docs": "https://platform.openai.com/docs/api-reference/authentication"}
        })
    );
    // Nothing secret ever goes there: the catalogue holds no secrets, and credentials come from
    // the environment only.
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.to_ascii_lowercase().contains("secret\":"), "{text}");
}
