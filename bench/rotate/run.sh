#!/usr/bin/env bash
# bench/rotate: online master-key rotation of N secrets (default 1,000,000
# connections, access + refresh token each) while a reader fetches
# credentials as otobot_api in a loop. Prints rows per second of the
# rotation and the worst credential-read latency during it.
#
#   bench/rotate/run.sh [N] [extra rotate-key flags, e.g. --jobs 2 --batch 5000]
#
#   OTOBOT_TEST_ADMIN_URL  superuser URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#   OTOBOT_BIN             the otobot binary (default: builds target/release/otobot)
#   KEEP_DB=1              keep the database afterwards
# Targets: >= 50,000 connections/s on 2 cores; worst read < 50 ms.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${1:-1000000}; shift || true
admin_url=${OTOBOT_TEST_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
pgbin=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
if [ -z "${OTOBOT_BIN:-}" ]; then
    (cd "$root" && cargo build --quiet --release -p otobot-api)
    OTOBOT_BIN=$root/target/release/otobot
fi
db=otobot_bench_rotate_$$
url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$admin_url" "$db")
api_url=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(netloc="otobot_api@"+p.hostname+":"+str(p.port or 5432))))' "$url")
work=$(mktemp -d)
cleanup() {
    [ -n "${reader:-}" ] && kill "$reader" 2>/dev/null || true
    [ "${KEEP_DB:-}" = 1 ] || psql "$admin_url" -qX -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1
    [ "${KEEP_DB:-}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
k1=$(openssl rand -hex 32); k2=$(openssl rand -hex 32)
users=$(( (n + 4) / 5 ))

psql "$admin_url" -qX -c "CREATE DATABASE $db"
ENCRYPTION_MASTER_KEY="$k1" ENCRYPTION_KEY_VERSION=1 ENCRYPTION_OLD_KEYS= "$OTOBOT_BIN" migrate --database-url "$url" >/dev/null
echo "generating $n connections (5 per user, $users users) under key version 1..."
t0=$(date +%s.%N)
psql "$url" -qX -v ON_ERROR_STOP=1 <<SQL
-- The reader loads version 2 before rotate-key would register it.
SELECT otobot.otobot_register_key(2, decode('$k2', 'hex'));
SELECT otobot.otobot_load_key(1, decode('$k1', 'hex'), true);
-- Bench data only: skip the per-row audit triggers while loading.
SET session_replication_role = replica;
INSERT INTO otobot.clients (id, email, company_name) VALUES ('c1000000-0000-0000-0000-000000000001', 'bench@example.test', 'Bench');
INSERT INTO otobot.users (id, client_id, email)
SELECT md5('user' || u)::uuid, 'c1000000-0000-0000-0000-000000000001', 'u' || u || '@example.test'
FROM generate_series(1, $users) u;
WITH ids AS (
    SELECT gen_random_uuid() AS id, g, (g - 1) / 5 + 1 AS u, (g - 1) % 5 + 1 AS service_id
    FROM generate_series(1, $n) g)
INSERT INTO otobot.client_connections
    (id, client_id, user_id, service_id, credential_type, encrypted_access_token, encrypted_refresh_token, token_expires_at)
SELECT id, 'c1000000-0000-0000-0000-000000000001', md5('user' || u)::uuid, service_id, 'oauth2',
       otobot.otobot_encrypt('access-token-' || g, id::text || ':encrypted_access_token'),
       otobot.otobot_encrypt('refresh-token-' || g, id::text || ':encrypted_refresh_token'),
       now() + interval '1 day'
FROM ids;
SQL
psql "$url" -qX -c "VACUUM ANALYZE otobot.client_connections" -c "CHECKPOINT"
echo "generated in $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)") s"

# The reader: one session as otobot_api with both keys (as serve has them
# during a rotation), fetching a random user's Google token back to back.
# A read that does not return the credential aborts pgbench.
psql "$url" -qX -c "CREATE TABLE public.bench_stop (stop integer NOT NULL); INSERT INTO public.bench_stop VALUES (0); GRANT SELECT ON public.bench_stop TO otobot_api"
cat > "$work/read.sql" <<SQL
SELECT stop FROM public.bench_stop \\gset
\if :stop
SELECT 'bench finished'::integer;
\endif
\if :loaded = 0
SELECT otobot.otobot_load_key(1, '\\x$k1'::bytea, false), otobot.otobot_load_key(2, '\\x$k2'::bytea, true);
\set loaded 1
\endif
\set u random(1, $users)
SELECT 1 / ((r ->> 'hasCredentials')::boolean AND r -> 'credentials' ->> 'accessToken' LIKE 'access-token-%')::integer
FROM otobot.get_user_credentials(md5('user' || :u)::uuid, 'google', NULL, true, NULL, NULL, 'bench', NULL) AS r;
SQL
(cd "$work" && "$pgbin/pgbench" -n -c 1 -j 1 -T 3600 -D loaded=0 -f read.sql -l --log-prefix=reads "$api_url" >"$work/pgbench.out" 2>&1) &
reader=$!
sleep 2

echo "rotating to key version 2 with the reader running..."
env -i PATH="$PATH" ENCRYPTION_MASTER_KEY="$k2" ENCRYPTION_KEY_VERSION=2 ENCRYPTION_OLD_KEYS="1:$k1" \
    "$OTOBOT_BIN" rotate-key --database-url "$url" "$@" | tee "$work/rotate.out"
sleep 1
psql "$url" -qX -c "UPDATE public.bench_stop SET stop = 1"
wait "$reader" 2>/dev/null || true
reader=

left=$(psql "$url" -AtX -c "SELECT coalesce(sum(connections), 0) FROM otobot.key_version_counts() WHERE key_version <> 2")
rate=$(sed -n 's/.*(\([0-9]*\) connections\/s).*/\1/p' "$work/rotate.out")
reads=$(cat "$work"/reads* | wc -l)
worst_ms=$(cat "$work"/reads* | awk 'BEGIN{m=0} {if ($3 > m) m = $3} END{printf "%.1f", m / 1000}')
p99_ms=$(cat "$work"/reads* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END{printf "%.2f", a[int(NR*0.99)] / 1000}')
aborted=$(grep -i "abort\|error" "$work/pgbench.out" | grep -v -c 'bench finished\|Run was aborted' || true)
echo
echo "connections rotated:      $n  (left on key version 1: $left)"
echo "rotation rate:            ${rate} connections/s  (target >= 50000)"
echo "credential reads:         $reads during the run, failed: $aborted"
echo "read latency worst / p99: ${worst_ms} ms / ${p99_ms} ms  (target worst < 50 ms)"
[ "$left" = 0 ] && [ "$aborted" = 0 ]
