//! `otobot gen-secrets` through the real binary.

mod cli_support;

use std::{collections::HashMap, os::unix::fs::PermissionsExt};

use cli_support::*;

fn read_env(path: &std::path::Path) -> HashMap<String, String> {
    dotenvy::from_path_iter(path)
        .unwrap()
        .map(|item| item.unwrap())
        .collect()
}

#[test]
fn gen_secrets_writes_a_private_env_that_serve_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["gen-secrets"], &[], None);
    assert_ok(&out);
    let path = dir.path().join(".env");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let vars = read_env(&path);
    let key = &vars["ENCRYPTION_MASTER_KEY"];
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    for name in ["POSTGRES_PASSWORD", "FRONTEND_DB_PASSWORD"] {
        let password = &vars[name];
        assert!(password.len() >= 32, "{name}");
        assert!(
            password.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{name}"
        );
    }
    assert!(vars["N8N_INTERNAL_TOKEN"].len() >= 32);
    assert!(vars["API_JWT_SECRET"].len() >= 32);
    // OAuth apps are the operator's to configure.
    assert_eq!(
        vars.get("GOOGLE_CLIENT_SECRET").map(String::as_str),
        Some("")
    );

    // The file is a configuration `otobot serve` starts with.
    otobot_api::settings::Settings::from_vars(|name| vars.get(name).cloned())
        .unwrap_or_else(|e| panic!("generated .env rejected: {e}"));

    // The warning is loud, and no secret is printed.
    let (stdout, stderr) = (stdout(&out), stderr(&out));
    assert!(stderr.contains("LOSES EVERY CREDENTIAL"), "{stderr}");
    for secret in [key, &vars["POSTGRES_PASSWORD"], &vars["N8N_INTERNAL_TOKEN"]] {
        assert!(!stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()));
    }
}

#[test]
fn gen_secrets_never_overwrites_an_existing_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prod.env");
    std::fs::write(&path, "ENCRYPTION_MASTER_KEY=keep-me\n").unwrap();

    let out = run(
        dir.path(),
        &["gen-secrets", "--output", "prod.env"],
        &[],
        None,
    );
    assert_error(&out, "already exists");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "ENCRYPTION_MASTER_KEY=keep-me\n"
    );

    let out = run(
        dir.path(),
        &["gen-secrets", "--output", "prod.env", "--force"],
        &[],
        None,
    );
    assert_ok(&out);
    assert_ne!(read_env(&path)["ENCRYPTION_MASTER_KEY"], "keep-me");
}

#[test]
fn two_generated_files_share_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&run(dir.path(), &["gen-secrets", "-o", "a.env"], &[], None));
    assert_ok(&run(dir.path(), &["gen-secrets", "-o", "b.env"], &[], None));
    let (a, b) = (
        read_env(&dir.path().join("a.env")),
        read_env(&dir.path().join("b.env")),
    );
    for name in [
        "ENCRYPTION_MASTER_KEY",
        "N8N_INTERNAL_TOKEN",
        "API_JWT_SECRET",
        "POSTGRES_PASSWORD",
    ] {
        assert_ne!(a[name], b[name], "{name}");
    }
}
