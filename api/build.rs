//! Embeds `../migrations/*.sql` in the binary as `$OUT_DIR/migrations.rs`:
//! a `(version, file name, contents)` table in version order.

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
