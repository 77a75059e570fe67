#!/usr/bin/env bash
# Builds another commit's otobot extension library (release profile, as
# `cargo pgrx install --release` does) for `bench/sql_crypto --baseline`:
#   bench/sql_crypto.d/build-baseline.sh COMMIT OUT.so
# A detached git worktree of COMMIT in a temporary directory, built with
# CARGO_TARGET_DIR (default: a temporary one; set it to reuse a build) and
# the caller's pgrx configuration (PGRX_HOME, as for `cargo pgrx install`).
# OUT.so must end up readable by the database server.
set -euo pipefail
commit=${1:?usage: build-baseline.sh COMMIT OUT.so}
out=${2:?usage: build-baseline.sh COMMIT OUT.so}
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
cleanup() {
    git -C "$root" worktree remove --force "$tmp/src" >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT
git -C "$root" worktree add --quiet --detach "$tmp/src" "$commit"
target=${CARGO_TARGET_DIR:-$tmp/target}
(cd "$tmp/src" && CARGO_TARGET_DIR="$target" cargo build --quiet --release -p otobot --lib)
install -m 644 "$target/release/libotobot.so" "$out"
echo "baseline: $(git -C "$root" rev-parse --short "$commit") -> $out"
