#!/usr/bin/env bash
# The portal in a real browser: Debian's chromium driven by playwright-core
# (portal.test.mjs, node's test runner) against a real `otobot serve` on a
# scratch database and a real OAuth2 server (tests/oauth-server).
#
#   - migrates a scratch database otobot_portal_<pid>; creates the client
#     account admin@acme.test with `otobot create-client`;
#   - starts oidc-provider and `otobot serve` (PUBLIC_URL http://localhost:<port>,
#     so the provider, on 127.0.0.1, is another site, as in real life);
#   - runs the browser tests; screenshots go to tests/portal/artifacts/;
#   - checks that no password, API key or token reached otobot's log.
# Everything started is stopped and the database dropped.
#
# Environment:
#   OTOBOT_TEST_ADMIN_URL  PostgreSQL superuser URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#   FRONTEND_DB_PASSWORD   password of the otobot_api role, if it has one
#   OTOBOT_BIN             an otobot binary to use instead of building target/debug/otobot
#   CHROMIUM               the browser (default /usr/bin/chromium)
#   PORTAL_E2E_KEEP=1      keep the temporary folder (logs) even on success
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
admin_url=${OTOBOT_TEST_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
# shellcheck source=../e2e-lib.sh
. "$here/../e2e-lib.sh"
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

say() { printf '\033[1m==> [%3ss] %s\033[0m\n' "$SECONDS" "$*"; }
die() { printf 'portal e2e: error: %s\n' "$*" >&2; exit 1; }

for tool in node npm python3 psql openssl setsid; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[ -x "$CHROMIUM" ] || die "no browser at $CHROMIUM (apt-get install chromium; scripts/install-deps.sh does)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/otobot-portal-e2e.XXXXXX")
db="otobot_portal_$$"
db_created=
pids=()

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    set +e
    for pid in "${pids[@]}"; do stop_group "$pid"; done
    if [ -n "$db_created" ]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
            echo "warning: could not drop database $db" >&2
    fi
    if [ "$status" -ne 0 ]; then
        for f in "$tmp"/otobot.log "$tmp"/idp.log; do
            [ -s "$f" ] && { echo "---- tail of $(basename "$f") ----"; tail -n 30 "$f"; }
        done
        echo "logs kept in $tmp"
    elif [ "${PORTAL_E2E_KEEP:-}" = 1 ]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build and install what the test needs (idempotent) ----------------------
if [ -n "${OTOBOT_BIN:-}" ]; then
    otobot=$OTOBOT_BIN
else
    say "building otobot"
    cargo build --quiet -p otobot-api --manifest-path "$root/Cargo.toml"
    otobot=$root/target/debug/otobot
fi
[ -x "$otobot" ] || die "no otobot binary at $otobot"
for dir in "$here" "$root/tests/oauth-server"; do
    if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
        (cd "$dir" && npm ci --no-audit --no-fund >/dev/null) || die "npm ci in $dir failed"
    fi
done

# --- Database, OAuth2 server, otobot serve ----------------------------------
say "database $db"
psql_admin -c "CREATE DATABASE \"$db\""
db_created=1
master_key=$(openssl rand -hex 32)
# migrate registers the key version (the owner's step; otobot serve only loads it).
ENCRYPTION_MASTER_KEY="$master_key" ENCRYPTION_KEY_VERSION=1 ENCRYPTION_OLD_KEYS= \
    "$otobot" migrate --database-url "$(admin_db_url "$db")" >"$tmp/migrate.log" 2>&1 ||
    { tail -n 30 "$tmp/migrate.log"; die "otobot migrate failed"; }

admin_email=admin@acme.test
admin_password="Acme-admin-$(openssl rand -hex 8)"
printf '%s\n' "$admin_password" | "$otobot" create-client --company "Acme Corp" --email "$admin_email" \
    --password-stdin --database-url "$(admin_db_url "$db")" >"$tmp/create-client.log" 2>&1 ||
    { cat "$tmp/create-client.log"; die "otobot create-client failed"; }

api_port=$(free_port)
idp_port=$(free_port)
public_url=http://localhost:$api_port
client_secret=$(openssl rand -hex 24)
(cd "$root/tests/oauth-server" && PORT=$idp_port CLIENT_ID=otobot-portal CLIENT_SECRET=$client_secret \
    REDIRECT_URI="$public_url/api/oauth/callback" ACCESS_TTL=3600 exec setsid node server.mjs) >"$tmp/idp.log" 2>&1 &
pids+=("$!")
idp_url=http://127.0.0.1:$idp_port
cat >"$tmp/providers.toml" <<EOF
[testidp]
display_name = "Test IdP"
auth_type = "oauth2"
accepts_api_key = false
authorization_url = "$idp_url/auth"
token_url = "$idp_url/token"
revoke_url = "$idp_url/token/revocation"
revoke_auth = "client_basic"
userinfo_url = "$idp_url/me"
default_scopes = ["openid", "email", "offline_access"]
extra_authorize_params = { prompt = "consent" }
pkce = true
token_auth_method = "client_secret_basic"
account_identifier = { source = "userinfo", field = "email" }
refresh_token_rotates = true
token_expires = true
docs = "https://github.com/panva/node-oidc-provider"
EOF
for _ in $(seq 1 100); do grep -qs '^ready' "$tmp/idp.log" && break; sleep 0.1; done
grep -qs '^ready' "$tmp/idp.log" || die "the OAuth2 server did not start"

internal_token=$(openssl rand -hex 32)
reports_token=$(openssl rand -hex 32)
say "otobot serve on $public_url"
# A clean environment: nothing from the caller's .env reaches the server.
setsid env -i PATH="$PATH" HOME="$tmp" NO_COLOR=1 RUST_LOG=info,otobot_api=debug \
    DATABASE_URL="$(db_url otobot_api "${FRONTEND_DB_PASSWORD:-}" "$db")" \
    ENCRYPTION_MASTER_KEY="$master_key" N8N_INTERNAL_TOKEN="$internal_token" \
    INTERNAL_TOKENS="reports:$reports_token:trusted" API_JWT_SECRET="$(openssl rand -hex 32)" \
    INTERNAL_API_HOST=127.0.0.1 INTERNAL_API_PORT="$api_port" \
    PUBLIC_URL="$public_url" FRONTEND_URL="$public_url/portal/" \
    OAUTH_PROVIDERS_FILE="$tmp/providers.toml" TESTIDP_CLIENT_ID=otobot-portal TESTIDP_CLIENT_SECRET="$client_secret" \
    "$otobot" serve >"$tmp/otobot.log" 2>&1 &
otobot_pid=$!
pids+=("$otobot_pid")
for _ in $(seq 1 300); do
    grep -qs 'otobot serve listening' "$tmp/otobot.log" && break
    kill -0 "$otobot_pid" 2>/dev/null || die "otobot serve exited"
    sleep 0.1
done
grep -q 'otobot serve listening' "$tmp/otobot.log" || die "otobot serve did not start in 30 s"

# --- The browser tests -------------------------------------------------------
mkdir -p "$here/artifacts"
api_key="sk-portal-e2e-$(openssl rand -hex 12)"
user_password="Alice-portal-$(openssl rand -hex 8)"
say "browser tests (chromium $("$CHROMIUM" --version 2>/dev/null | awk '{print $2}'))"
set +e
(cd "$here" && env PORTAL_URL="$public_url" API_URL="http://127.0.0.1:$api_port" IDP_URL="$idp_url" \
    INTERNAL_TOKEN="$internal_token" REPORTS_TOKEN="$reports_token" \
    ADMIN_EMAIL="$admin_email" ADMIN_PASSWORD="$admin_password" USER_PASSWORD="$user_password" \
    API_KEY="$api_key" DB_URL="$(admin_db_url "$db")" ARTIFACTS="$here/artifacts" \
    node --test --test-concurrency=1 --test-reporter=spec portal.test.mjs)
status=$?
set -e

# SECURITY: nothing secret in the server's log.
leaks=0
for secret in "$admin_password" "$user_password" "$api_key" "$internal_token" "$reports_token" "$client_secret"; do
    if grep -qF -- "$secret" "$tmp/otobot.log"; then leaks=$((leaks + 1)); fi
done
if grep -qE 'otobot_session=|x-csrf-token: ' "$tmp/otobot.log"; then leaks=$((leaks + 1)); fi
if [ "$leaks" -eq 0 ]; then
    echo "ok - no password, API key, token or session cookie in otobot's log"
else
    echo "FAIL - $leaks secret(s) found in otobot's log ($tmp/otobot.log)"
    status=1
fi
echo "screenshots: $here/artifacts"
exit "$status"
