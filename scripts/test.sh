#!/usr/bin/env bash
# The whole test suite, against real parts: the crypto library's tests, the
# extension's unit and in-database tests, the SQL suite on a migrated database, and the API's
# integration tests. Installs what it needs first (idempotent).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
set -e
"$ROOT/scripts/install-deps.sh" --for-tests

# Real n8n (1.x and 2.x) for the end-to-end suite: installed once per machine
# into ~/.cache/otobot by tests/e2e-n8n/install-n8n.sh (cold: about 6-7 minutes
# a version, more under load; nothing when cached). Started now, in the
# background at low priority, so that it overlaps the suites below; the
# end-to-end suite waits for it.
n8n_install_log=$(mktemp "${TMPDIR:-/tmp}/otobot-n8n-install.XXXXXX")
nice -n 10 "$ROOT/tests/e2e-n8n/install-n8n.sh" >"$n8n_install_log" 2>&1 &
n8n_install_pid=$!
n8n_install_started=$SECONDS
# Interrupted: the install stops too (it removes its partial folder).
trap 'kill "$n8n_install_pid" 2>/dev/null; rm -f "$n8n_install_log"' EXIT
load_env
"$ROOT/scripts/ensure-postgres.sh"
bootstrap_database
set +e

export OTOBOT_TEST_ADMIN_URL
OTOBOT_TEST_ADMIN_URL=$(admin_url postgres)
sudo_flag=()
[ "$(id -u)" -eq 0 ] || sudo_flag=(--sudo)

passed=0; failed=0; failures=()
suite() { # name, command...
    local name=$1; shift
    say "suite: $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

crypto_tests() {
    # otobot-crypto: GCM vectors, differential tests against aes-gcm, hkdf and
    # hmac, the stored form's rules, and the legacy-ciphertext fixture.
    cargo test -p otobot-crypto --manifest-path "$ROOT/Cargo.toml"
}
pgrx_test() {
    local pgdata_parent=/var/lib/postgresql/otobot-pgrx-test
    as_root mkdir -p "$pgdata_parent" && as_root chown postgres:postgres "$pgdata_parent"
    (cd "$ROOT/extension" && cargo pgrx test "pg$PG_MAJOR" --runas postgres --pgdata "$pgdata_parent/data")
}
install_extension() {
    # The in-database tests installed a test build; install the real one,
    # and the 0.1.0 install script the upgrade test starts from.
    (cd "$ROOT/extension" && cargo pgrx install --profile ci --pg-config "$PG_CONFIG" "${sudo_flag[@]}" >/dev/null) &&
        as_root install -m 644 "$ROOT/extension/sql/otobot--0.1.0.sql" "$("$PG_CONFIG" --sharedir)/extension/"
}
sql_suite() {
    cargo build --quiet -p otobot-api --manifest-path "$ROOT/Cargo.toml" &&
        OTOBOT_BIN="$ROOT/target/debug/otobot" "$ROOT/tests/sql/run.sh"
}
api_tests() {
    # The OAuth tests run a real OAuth2 server (oidc-provider, Node).
    if [ ! -d "$ROOT/tests/oauth-server/node_modules/oidc-provider" ]; then
        (cd "$ROOT/tests/oauth-server" && npm ci --no-audit --no-fund >/dev/null) || return 1
    fi
    cargo test -p otobot-api --manifest-path "$ROOT/Cargo.toml"
}

n8n_node() {
    (cd "$ROOT/n8n" &&
        { [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null; } &&
        npm run --silent lint && npm run --silent build && npm test)
}

suite "crypto (cargo test -p otobot-crypto)" crypto_tests
suite "extension (cargo pgrx test)" pgrx_test
suite "install extension" install_extension
suite "sql (tests/sql)" sql_suite
suite "api (cargo test)" api_tests
suite "n8n node (lint, build, unit tests)" n8n_node
suite "docker files (compose config)" "$ROOT/docker/check.sh"
suite "portal (real browser)" "$ROOT/tests/portal/run.sh"
# Real n8n end to end (~2-3 min once n8n is there), on every machine.
e2e_n8n() {
    local status waiting=$SECONDS
    wait "$n8n_install_pid"
    status=$?
    cat "$n8n_install_log"
    say "n8n installs: started $((waiting - n8n_install_started)) s before this suite, which waited $((SECONDS - waiting)) s more for them"
    [ "$status" -eq 0 ] || { echo "installing n8n failed"; return 1; }
    "$ROOT/tests/e2e-n8n/run.sh"
}
suite "n8n end-to-end (real n8n ${N8N_E2E_VERSIONS:-1.123.81 2.8.4})" e2e_n8n

echo
[ ${#failures[@]} -gt 0 ] && echo "failed suites: ${failures[*]}"
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
