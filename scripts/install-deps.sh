#!/usr/bin/env bash
# Install everything Otobot needs on Debian 12, idempotently: PostgreSQL 15
# and its server headers, the C toolchain pgrx needs, and cargo-pgrx.
#   --for-tests  also the browser the portal's tests drive (Debian's chromium)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

command -v cargo >/dev/null || die "cargo not found: install the Rust toolchain (rustup) first"

pkgs=(postgresql-$PG_MAJOR postgresql-contrib postgresql-server-dev-$PG_MAJOR libclang-dev clang bison flex
      build-essential libreadline-dev zlib1g-dev pkg-config sudo openssl python3 ca-certificates docker-compose)
[ "${1:-}" = "--for-tests" ] && pkgs+=(chromium)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    # Keep the server headers at the running server's exact version, so
    # installing them does not upgrade (and restart) the server.
    if server=$(dpkg-query -W -f='${Version}' postgresql-$PG_MAJOR 2>/dev/null) && [ -n "$server" ] &&
        apt-cache madison postgresql-server-dev-$PG_MAJOR | grep -qF " $server "; then
        missing=("${missing[@]/#postgresql-server-dev-$PG_MAJOR/postgresql-server-dev-$PG_MAJOR=$server}")
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Node.js runs the n8n node's build and tests, and the test OAuth server.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing Node.js and npm (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -qF " $PGRX_VERSION"; then
    say "installing cargo-pgrx $PGRX_VERSION (about 3 minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi
if ! grep -qs "^pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi
