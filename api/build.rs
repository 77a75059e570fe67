//! Embeds `../migrations/*.sql` in the binary as `$OUT_DIR/migrations.rs`:
//! a `(version, file name, contents)` table in version order; and the
//! portal's files (`../portal/`) as `$OUT_DIR/portal_assets.rs`.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let dir = manifest.join("../migrations");
    // A directory makes cargo rerun when any file in it is added, removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());

    let mut files = Vec::new();
    if dir.is_dir() {
        let dir = dir
            .canonicalize()
            .expect("canonicalize migrations directory");
        for entry in fs::read_dir(&dir).expect("read migrations directory") {
            let path = entry.expect("read migrations directory").path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if !name.ends_with(".sql") {
                continue;
            }
            let version = parse_version(&name).unwrap_or_else(|| {
                panic!("migrations/{name}: a migration is named NNNN_description.sql (lowercase letters, digits, underscores)")
            });
            println!("cargo:rerun-if-changed={}", path.display());
            files.push((version, name, path));
        }
    }
    files.sort();
    for pair in files.windows(2) {
        if pair[0].0 == pair[1].0 {
            panic!(
                "migrations/{} and migrations/{} share version {}",
                pair[0].1, pair[1].1, pair[0].0
            );
        }
    }

    let mut table = String::from(
        "/// `(version, file name, contents)` of every embedded migration, in version order.\n",
    );
    table.push_str("static EMBEDDED: &[(i32, &str, &str)] = &[\n");
    for (version, name, path) in &files {
        let path = path.to_str().expect("migration path is UTF-8");
        table.push_str(&format!(
            "    ({version}, {name:?}, include_str!({path:?})),\n"
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("migrations.rs");
    fs::write(out, table).expect("write migrations.rs");

    portal_assets(&manifest.join("../portal"));
}

/// `(path, content type, bytes, etag)` of every file under `dir`, sorted.
fn portal_assets(dir: &std::path::Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = Vec::new();
    if dir.is_dir() {
        collect(
            &dir.canonicalize().expect("portal directory"),
            "",
            &mut files,
        );
    }
    files.sort();
    let mut table = String::from(
        "/// `(path under /portal/, content type, bytes, ETag)` of every embedded portal file.\n",
    );
    table.push_str("static PORTAL_ASSETS: &[(&str, &str, &[u8], &str)] = &[\n");
    for (name, path) in &files {
        let bytes = fs::read(path).expect("read portal file");
        let ext = name.rsplit('.').next().unwrap_or_default();
        let content_type = match ext {
            "html" => "text/html; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "js" | "mjs" => "text/javascript; charset=utf-8",
            "json" => "application/json",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "ico" => "image/x-icon",
            "txt" => "text/plain; charset=utf-8",
            _ => {
                panic!("portal/{name}: no content type for .{ext} files (add one in api/build.rs)")
            }
        };
        // FNV-1a: a cache validator, not a security measure.
        let etag = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = path.to_str().expect("portal path is UTF-8");
        table.push_str(&format!(
            "    ({name:?}, {content_type:?}, include_bytes!({path:?}), \"\\\"{etag:016x}\\\"\"),\n"
        ));
    }
    table.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("portal_assets.rs");
    fs::write(out, table).expect("write portal_assets.rs");
}

fn collect(dir: &std::path::Path, prefix: &str, files: &mut Vec<(String, PathBuf)>) {
    for entry in fs::read_dir(dir).expect("read portal directory") {
        let path = entry.expect("read portal directory").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        println!("cargo:rerun-if-changed={}", path.display());
        let relative = format!("{prefix}{name}");
        if path.is_dir() {
            collect(&path, &format!("{relative}/"), files);
        } else {
            files.push((relative, path));
        }
    }
}

/// The version of `^\d{4}_[a-z0-9_]+\.sql$`, or `None` when the name does not match.
fn parse_version(name: &str) -> Option<i32> {
    let stem = name.strip_suffix(".sql")?;
    let (digits, description) = (stem.get(..4)?, stem.get(4..)?.strip_prefix('_')?);
    let valid_description = !description.is_empty()
        && description
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (digits.bytes().all(|b| b.is_ascii_digit()) && valid_description)
        .then(|| digits.parse().ok())?
}
