#!/usr/bin/env bash
# Deterministic reproduction of the refresh-lease deadlock that bench/refresh
# hit between two refresher processes (see lock-order-fix.sql), and a check
# of the fix. One connection, two superuser sessions:
#   A  does what claim_expiring does to a candidate it picked with a stale
#      snapshot (leased by B after A's snapshot): row-lock the connection
#      FOR UPDATE, then INSERT its lease ... ON CONFLICT DO UPDATE WHERE
#      expired. The 1 s pause between the two stands for the race window.
#   B  holds the lease and stores its refreshed tokens: complete_refresh.
# Run twice: with migration 0007's functions (expect 40P01 "deadlock
# detected"), then with lock-order-fix.sql (expect no error, B stores).
# Usage: bench/refresh.d/deadlock-repro.sh   (env as bench/refresh; needs
# target/release/otobot or $OTOBOT_BIN)
set -euo pipefail
HERE="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${OTOBOT_BIN:-$HERE/target/release/otobot}"
PG="${BENCH_PG_SUPERUSER:-postgres}@${BENCH_PG_HOST:-127.0.0.1}:${BENCH_PG_PORT:-5432}"
DB="otobot_bench_refresh_dl_$$"
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -At)
KEY="$(openssl rand -hex 32)"
OUT="$(mktemp -d)"
cleanup() {
    "${PSQL[@]}" -d "postgresql://$PG/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT
"${PSQL[@]}" -d "postgresql://$PG/postgres" -c "CREATE DATABASE $DB" >/dev/null
URL="postgresql://$PG/$DB"
ENCRYPTION_MASTER_KEY="$KEY" ENCRYPTION_KEY_VERSION=1 ENCRYPTION_OLD_KEYS= "$BIN" migrate --database-url "$URL" >/dev/null
X=0b0b0b0b-0000-4000-8000-00000000dead
# The key is a literal (psql < 16 has no bind parameters): keep it out of the log.
LOAD="SET log_statement = 'none'; SET log_min_error_statement = panic; SET log_min_duration_statement = -1;
SELECT otobot.otobot_load_key(1, decode('$KEY', 'hex'), true);"
"${PSQL[@]}" -d "$URL" >/dev/null <<SQL
$LOAD
INSERT INTO otobot.services (service_code, display_name, auth_type, accepts_api_key, config, is_active)
VALUES ('testidp', 'Test IdP', 'oauth2', false, '{}', true);
INSERT INTO otobot.clients (id, email, company_name) VALUES ('0b0b0b0b-0000-4000-8000-00000000c11e', 'dl@example.test', 'DL');
INSERT INTO otobot.users (id, client_id, email) VALUES ('0b0b0b0b-0000-4000-8000-0000000005e4', '0b0b0b0b-0000-4000-8000-00000000c11e', 'dl-user@example.test');
INSERT INTO otobot.client_connections (id, client_id, user_id, service_id, credential_type, encrypted_access_token, encrypted_refresh_token, token_expires_at)
SELECT '$X', '0b0b0b0b-0000-4000-8000-00000000c11e', '0b0b0b0b-0000-4000-8000-0000000005e4', id, 'oauth2',
       otobot.otobot_encrypt('a1', '$X:encrypted_access_token'), otobot.otobot_encrypt('r1', '$X:encrypted_refresh_token'),
       now() - interval '1 minute'
FROM otobot.services WHERE service_code = 'testidp';
SQL

attempt() {
    local name="$1"
    # B leases the connection (a committed claim).
    "${PSQL[@]}" -d "$URL" >/dev/null <<SQL
$LOAD
DELETE FROM otobot.refresh_leases;
UPDATE otobot.client_connections SET token_expires_at = now() - interval '1 minute' WHERE id = '$X';
SELECT otobot.claim_expiring(600, 1, 'B', 60);
SQL
    # A: the stale claim's two steps.
    "${PSQL[@]}" -d "$URL" >"$OUT/a" 2>&1 <<SQL &
BEGIN;
SELECT 1 FROM otobot.client_connections c WHERE c.id = '$X' FOR UPDATE OF c SKIP LOCKED;
SELECT pg_sleep(1);
INSERT INTO otobot.refresh_leases AS l (connection_id, owner, lease_until)
VALUES ('$X', 'A', now() + interval '60 seconds')
ON CONFLICT (connection_id) DO UPDATE
SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
WHERE l.lease_until < now();
COMMIT;
SQL
    local a=$!
    sleep 0.3
    # B: the provider answered; store.
    local b_status=0
    "${PSQL[@]}" -d "$URL" >"$OUT/b" 2>&1 <<SQL || b_status=$?
$LOAD
SELECT 'complete_refresh=' || otobot.complete_refresh('$X', 'B', 'a2', 'r2', now() + interval '1 hour', NULL, NULL);
SQL
    local a_status=0
    wait "$a" || a_status=$?
    echo "== $name"
    echo "   A (stale claim):       exit $a_status  $(grep -ho 'ERROR:.*' "$OUT/a" | head -1)"
    echo "   B (complete_refresh):  exit $b_status  $(grep -ho 'ERROR:.*\|complete_refresh=.*' "$OUT/b" | head -1)"
    echo "   lease rows: $("${PSQL[@]}" -d "$URL" -c "SELECT coalesce(string_agg(owner, ','), 'none') FROM otobot.refresh_leases")," \
         "refreshed: $("${PSQL[@]}" -d "$URL" -c "SELECT last_refreshed_at IS NOT NULL FROM otobot.client_connections WHERE id = '$X'")"
}
attempt "migration 0007 (as is)"
"${PSQL[@]}" -d "$URL" -f "$HERE/bench/refresh.d/lock-order-fix.sql" >/dev/null
"${PSQL[@]}" -d "$URL" -c "UPDATE otobot.client_connections SET last_refreshed_at = NULL WHERE id = '$X'" >/dev/null
attempt "with bench/refresh.d/lock-order-fix.sql"
