#!/usr/bin/env bash
# One command from a fresh Debian 12 machine to a running vault:
# dependencies, PostgreSQL, the extension, the database, migrations, then
# `otobot serve` in the foreground. Idempotent: run it again at will.
#   --no-run   stop after migrating (used by the test suite)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

run=1
[ "${1:-}" = "--no-run" ] && run=0

"$ROOT/scripts/install-deps.sh"
load_env
"$ROOT/scripts/ensure-postgres.sh"

say "building and installing the otobot extension (release)"
sudo_flag=()
[ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)
(cd "$ROOT/extension" && cargo pgrx install --release --pg-config "$PG_CONFIG" "${sudo_flag[@]}" >/dev/null)

bootstrap_database

say "building the otobot binary (release)"
cargo build --release --quiet -p otobot-api --manifest-path "$ROOT/Cargo.toml"
otobot="$ROOT/target/release/otobot"

say "migrating ${FRONTEND_DB_NAME:-otobot_frontend}"
(cd "$ROOT" && "$otobot" migrate)

if [ "$run" -eq 0 ]; then
    say "vault ready: ${FRONTEND_DB_NAME:-otobot_frontend} on port ${FRONTEND_DB_PORT:-5432}"
    exit 0
fi
if "$otobot" help serve >/dev/null 2>&1; then
    say "starting otobot serve on port ${INTERNAL_API_PORT:-3001} (Ctrl-C to stop)"
    cd "$ROOT" && exec "$otobot" serve
fi
say "vault ready: ${FRONTEND_DB_NAME:-otobot_frontend} on port ${FRONTEND_DB_PORT:-5432}"
