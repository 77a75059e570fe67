#!/usr/bin/env bash
# End-to-end test of the n8n community node (n8n/) in a real n8n, against a
# real `otobot serve` on a scratch database.
#
#   - builds the node (n8n/dist) and the otobot binary;
#   - installs n8n (pinned) once into a cache folder outside the repo
#     (tests/e2e-n8n/install-n8n.sh);
#   - migrates a scratch database otobot_e2e_<pid>: Alice (a Google
#     connection) and Carol (none) sign in; Bob has a Google connection too.
#     Starts `otobot serve` in grant mode (the default) with the user API, its
#     trigger route pointing at n8n. Alice creates standing grants through
#     the API: one for a scheduled workflow, one she revokes, one that expires;
#   - per n8n version: loads the node the way docker/docker-compose.yml does
#     (package.json + dist/ in ~/.n8n/nodes/node_modules/n8n-nodes-otobot),
#     imports an "Otobot API" credential pointing at otobot serve, imports and
#     activates n8n/test/e2e-workflow.json (and a wrong-token copy, and a
#     Schedule Trigger workflow holding Alice's standing grant), imports
#     n8n/workflows/*.json, starts n8n and proves: trigger route → run grant →
#     the signed-in user's credential; no grant → 403 through the workflow's
#     IF branch; Alice's grant for Bob, a revoked and an expired grant → 403,
#     audited; the scheduled workflow reads with its standing grant;
#   - checks that no secret reached the logs.
# The last line is `e2e-n8n: N passed, N failed`; the exit status is non-zero
# on any failure. Everything started is stopped and the database dropped.
#
# Environment:
#   N8N_E2E_VERSIONS       n8n versions to test (default "1.123.81 2.8.4": the newest 1.x and 2.x that run on Node 20)
#   N8N_E2E_CACHE          where n8n installs are kept (default ${XDG_CACHE_HOME:-~/.cache}/otobot)
#   OTOBOT_TEST_ADMIN_URL  PostgreSQL superuser URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#   FRONTEND_DB_PASSWORD   password of the otobot_api role, if it has one
#   OTOBOT_BIN             an otobot binary to use instead of building target/debug/otobot
#   E2E_KEEP=1             keep the temporary folder (logs, n8n user folders) even on success
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
versions=${N8N_E2E_VERSIONS:-1.123.81 2.8.4}
cache=${N8N_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otobot}
admin_url=${OTOBOT_TEST_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
# shellcheck source=../e2e-lib.sh
. "$here/../e2e-lib.sh"

say() { printf '\033[1m==> [%3ss] %s\033[0m\n' "$SECONDS" "$*"; }
die() { printf 'e2e-n8n: error: %s\n' "$*" >&2; exit 1; }

for tool in node npm python3 curl psql openssl setsid flock; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

# --- State, and the cleanup that always runs -------------------------------
# The original output: a trap may fire inside a command's redirection.
exec 7>&1 8>&2
passed=0
failed=0
tmp=$(mktemp -d "${TMPDIR:-/tmp}/otobot-e2e-n8n.XXXXXX")
logs=$tmp/logs
mkdir -p "$logs"
db="otobot_e2e_$$"
db_created=
pids=()  # process group leaders started with setsid

ok() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }

cleanup() {
    local status=$? pid f
    trap - EXIT INT TERM
    set +e
    exec 1>&7 2>&8
    for pid in "${pids[@]}"; do stop_group "$pid"; done
    if [ -n "$db_created" ]; then
        psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 ||
            echo "warning: could not drop database $db" >&2
    fi
    # A setup step that failed (set -e) counts as a failure.
    [ "$status" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1 && echo "FAIL - setup failed or interrupted (exit status $status)"
    if [ "$failed" -gt 0 ]; then
        for f in "$logs"/otobot.log "$logs"/n8n-*.log; do
            [ -s "$f" ] || continue
            case $f in *-install.log) continue ;; esac
            echo "---- tail of $(basename "$f") ----"
            tail -n 25 "$f"
        done
        echo "logs kept in $logs"
    elif [ "${E2E_KEEP:-}" = 1 ]; then
        echo "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    echo "e2e-n8n: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit $?
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Helpers ---------------------------------------------------------------
json_field() { # json, python expression over `j` → its value (JSON for true/false/null/objects)
    python3 -c '
import json, sys
try:
    j = json.loads(sys.argv[1])
    v = eval(sys.argv[2], {"j": j})
except Exception:
    v = "<unreadable>"
print(json.dumps(v) if isinstance(v, (bool, dict, list)) or v is None else v)' "$1" "$2"
}
request() { # method, url, body (or ""), [bearer token] → sets http_code and http_body
    local out args=()
    [ -n "${3:-}" ] && args+=(--data "$3")
    [ -n "${4:-}" ] && args+=(-H "Authorization: Bearer $4")
    rm -f "$tmp/response"
    out=$(curl -sS -m 60 -o "$tmp/response" -w '%{http_code}' -H 'Content-Type: application/json' \
        "${args[@]}" -X "$1" "$2" 2>/dev/null) || out=000
    http_code=$out
    http_body=$(cat "$tmp/response" 2>/dev/null || true)
}
post() { request POST "$@"; } # url, body, [bearer token]

# --- Build -----------------------------------------------------------------
say "building the node (n8n/)"
(
    cd "$root/n8n"
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund
    fi
    # Skip the build when dist/ is newer than every source.
    if [ ! -f dist/tsconfig.tsbuildinfo ] ||
        [ -n "$(find nodes credentials icons package.json package-lock.json tsconfig.json -newer dist/tsconfig.tsbuildinfo -print -quit)" ]; then
        npm run build
    fi
) >"$logs/node-build.log" 2>&1 || { tail -n 30 "$logs/node-build.log"; die "building n8n/ failed"; }
[ -f "$root/n8n/dist/nodes/OtobotCredentialFetcher/OtobotCredentialFetcher.node.js" ] || die "n8n/dist has no node"

if [ -n "${OTOBOT_BIN:-}" ]; then
    otobot=$OTOBOT_BIN
else
    say "building otobot"
    cargo build --quiet -p otobot-api --manifest-path "$root/Cargo.toml"
    otobot=$root/target/debug/otobot
fi
[ -x "$otobot" ] || die "no otobot binary at $otobot"

# --- n8n installs ----------------------------------------------------------
# Once per version into the cache (reused; a concurrent install, e.g. the one
# scripts/test.sh starts early in the background, is waited for).
say "n8n $versions (cache $cache)"
# shellcheck disable=SC2086
N8N_E2E_CACHE=$cache "$here/install-n8n.sh" $versions >"$logs/n8n-install.log" 2>&1 ||
    { tail -n 30 "$logs/n8n-install.log"; die "installing n8n failed (see $logs/n8n-install.log)"; }
grep -h 'installed n8n' "$logs/n8n-install.log" || true

# --- Database and otobot serve ---------------------------------------------
master_key=$(openssl rand -hex 32)
internal_token=$(openssl rand -hex 32)
wrong_token=$(openssl rand -hex 32)
access_token=ya29.e2e-token
other_access_token=ya29.e2e-token-of-bob
refresh_token=1//e2e-refresh
user_password="E2e-$(openssl rand -hex 12)"
jwt_secret=$(openssl rand -hex 32)
client_id=e2e00000-0000-4000-8000-00000000c001
user_other=e2e00000-0000-4000-8000-000000000003 # Bob: a Google connection, never signs in
# Alice (a Google connection) and Carol (none) sign in: created below with a password.
n8n_port=$(free_port) # one n8n at a time, each version on this port: the trigger route calls it

say "database $db"
psql_admin -c "CREATE DATABASE \"$db\""
db_created=1
# migrate registers the key version (the owner's step; otobot serve only loads it).
ENCRYPTION_MASTER_KEY="$master_key" ENCRYPTION_KEY_VERSION=1 ENCRYPTION_OLD_KEYS= "$otobot" migrate --database-url "$(admin_db_url "$db")" >"$logs/migrate.log" 2>&1 ||
    { tail -n 30 "$logs/migrate.log"; die "otobot migrate failed"; }
# One session: the key loaded by otobot_load_key lives in the session.
psql "$(admin_db_url "$db")" -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
INSERT INTO otobot.clients (id, email, company_name) VALUES ('$client_id', 'e2e-client@example.test', 'E2E Client');
INSERT INTO otobot.users (id, client_id, email, role) VALUES
    ('$user_other', '$client_id', 'e2e-bob@example.test', 'user');
SQL
create_user() { # email → its id (the account's password: $user_password)
    printf '%s\n' "$user_password" | "$otobot" create-user --client-id "$client_id" --email "$1" \
        --password-stdin --database-url "$(admin_db_url "$db")" >>"$logs/accounts.log" 2>&1 ||
        { tail -n 5 "$logs/accounts.log" >&2; die "otobot create-user $1 failed"; }
    psql "$(admin_db_url "$db")" -X -At -v ON_ERROR_STOP=1 -c "SELECT id FROM otobot.users WHERE email = '$1'"
}
user_google=$(create_user e2e-alice@example.test) # Alice: has a Google connection
user_none=$(create_user e2e-carol@example.test)   # Carol: has none
psql "$(admin_db_url "$db")" -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
SELECT otobot.otobot_load_key(1, decode('$master_key', 'hex'), true);
SELECT otobot.store_oauth_connection('$user_google', 'google', '$access_token', '$refresh_token',
    now() + interval '1 hour', '{email}', 'e2e@example.test', NULL, 'e2e', NULL);
SELECT otobot.store_oauth_connection('$user_other', 'google', '$other_access_token', '$refresh_token',
    now() + interval '1 hour', '{email}', 'bob@example.test', NULL, 'e2e', NULL);
SQL

api_port=$(free_port)
say "otobot serve on 127.0.0.1:$api_port"
# A clean environment: nothing from the caller's .env reaches the processes.
setsid env -i PATH="$PATH" HOME="$tmp" NO_COLOR=1 RUST_LOG=debug \
    DATABASE_URL="$(db_url otobot_api "${FRONTEND_DB_PASSWORD:-}" "$db")" \
    ENCRYPTION_MASTER_KEY="$master_key" N8N_INTERNAL_TOKEN="$internal_token" \
    API_JWT_SECRET="$jwt_secret" N8N_WEBHOOK_URL="http://127.0.0.1:$n8n_port" \
    INTERNAL_API_HOST=127.0.0.1 INTERNAL_API_PORT="$api_port" \
    "$otobot" serve >"$logs/otobot.log" 2>&1 &
otobot_pid=$!
pids+=("$otobot_pid")
for _ in $(seq 1 300); do
    grep -qs 'otobot serve listening' "$logs/otobot.log" && break
    kill -0 "$otobot_pid" 2>/dev/null || die "otobot serve exited"
    sleep 0.1
done
grep -q 'otobot serve listening' "$logs/otobot.log" || die "otobot serve did not start in 30 s"
api_url=http://127.0.0.1:$api_port

sql() { psql "$(admin_db_url "$db")" -X -At -v ON_ERROR_STOP=1 -c "$1"; }
audit_reads() { # user id, id watermark, grant kind → "count sources kinds workflows" of credential_read rows after it
    sql "SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT source, ','), '-')
                || ' ' || coalesce(string_agg(DISTINCT detail->>'grant_kind', ','), '-')
                || ' ' || coalesce(string_agg(DISTINCT detail->>'workflow', ','), '-')
           FROM otobot.credential_access_logs
          WHERE action = 'credential_read' AND user_id = '$1' AND id > $2 AND detail->>'grant_kind' = '$3'"
}
audit_watermark() { sql "SELECT coalesce(max(id), 0) FROM otobot.credential_access_logs"; }

# --- Users and their grants, through the user API ----------------------------
login() { # email → a bearer token
    post "$api_url/api/tooljet/auth/login" "{\"email\": \"$1\", \"password\": \"$user_password\"}"
    [ "$http_code" = 200 ] || die "login of $1: HTTP $http_code ${http_body:0:200}"
    json_field "$http_body" 'j["authToken"]'
}
alice_jwt=$(login e2e-alice@example.test)
carol_jwt=$(login e2e-carol@example.test)
standing_grant() { # workflow name → the token of Alice's new standing grant for google (30 days)
    local expires
    expires=$(date -u -d '+30 days' +%Y-%m-%dT%H:%M:%SZ)
    post "$api_url/api/tooljet/grants" \
        "{\"workflow\": \"$1\", \"services\": [\"google\"], \"expiresAt\": \"$expires\"}" "$alice_jwt"
    [ "$http_code" = 201 ] || die "creating a standing grant: HTTP $http_code ${http_body:0:200}"
    json_field "$http_body" 'j["grant"]'
}
grant_hash_is() { echo "token_hash = sha256(convert_to('$1', 'UTF8'))"; }
# The scheduled workflow's grant; one that Alice revokes; one whose time runs out.
schedule_grant=$(standing_grant "e2e schedule")
schedule_grant_id=$(sql "SELECT id FROM otobot.grants WHERE $(grant_hash_is "$schedule_grant")")
revoked_grant=$(standing_grant "e2e revoked")
request DELETE "$api_url/api/tooljet/grants/$(sql "SELECT id FROM otobot.grants WHERE $(grant_hash_is "$revoked_grant")")" "" "$alice_jwt"
[ "$http_code" = 200 ] || die "revoking a grant: HTTP $http_code ${http_body:0:200}"
expired_grant=$(standing_grant "e2e expired")
# An administrator may shorten a grant (never extend it): its time is up.
sql "UPDATE otobot.grants SET expires_at = now() - interval '1 second' WHERE $(grant_hash_is "$expired_grant")" >/dev/null

# --- One n8n version --------------------------------------------------------
test_version() { # version
    local v=$1 major=${1%%.*} n8n_dir=$cache/n8n-$1 home=$tmp/n8n-$1 broker_port
    local -a n8n_env
    broker_port=$(free_port)
    say "n8n $v on 127.0.0.1:$n8n_port"

    # The node as docker-compose mounts it: package.json and dist/ only, so that
    # it resolves n8n-workflow from n8n itself.
    local pkg=$home/.n8n/nodes/node_modules/n8n-nodes-otobot
    mkdir -p "$pkg"
    cp "$root/n8n/package.json" "$pkg/"
    cp -R "$root/n8n/dist" "$pkg/dist"

    n8n_env=(PATH="$PATH" HOME="$home" NO_COLOR=1
        N8N_USER_FOLDER="$home" N8N_PORT="$n8n_port" N8N_LISTEN_ADDRESS=127.0.0.1
        N8N_HOST=127.0.0.1 N8N_PROTOCOL=http WEBHOOK_URL="http://127.0.0.1:$n8n_port/"
        N8N_DIAGNOSTICS_ENABLED=false N8N_PERSONALIZATION_ENABLED=false
        N8N_VERSION_NOTIFICATIONS_ENABLED=false N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS=true
        N8N_ENCRYPTION_KEY="e2e-$(openssl rand -hex 16)"
        DB_TYPE=sqlite N8N_RUNNERS_BROKER_PORT="$broker_port")
    n8n_cli() { env -i "${n8n_env[@]}" node "$n8n_dir/node_modules/n8n/bin/n8n" "$@"; }

    say "n8n $v: importing credentials and workflows"
    # Credentials: the right one, and one with a wrong token for the 401 check.
    local creds=$home/credentials.json
    (umask 077 && python3 - "$api_url" "$internal_token" "$wrong_token" >"$creds" <<'EOF'
import json, sys
url, token, wrong = sys.argv[1:4]
def cred(id, name, t):
    return {"id": id, "name": name, "type": "otobotApi", "data": {"apiUrl": url, "internalToken": t}}
print(json.dumps([cred("e2eOtobotApiCred1", "Otobot API", token),
                  cred("e2eOtobotApiCred2", "Otobot API (wrong token)", wrong)]))
EOF
    )
    if n8n_cli import:credentials --input="$creds" >"$logs/n8n-$v-import.log" 2>&1; then
        ok "n8n $v: credentials import"
    else
        fail "n8n $v: credentials import"; return
    fi
    rm -f "$creds"

    # The test workflow, and its copy on the wrong-token credential. Each n8n
    # command boots n8n (5-10 s), so files are imported a folder at a time.
    local e2e_dir=$home/import-e2e examples_dir=$home/import-examples
    mkdir -p "$e2e_dir" "$examples_dir"
    cp "$root"/n8n/workflows/*.json "$examples_dir/"
    python3 - "$root/n8n/test/e2e-workflow.json" "$e2e_dir" "$user_google" "$schedule_grant" <<'EOF'
import json, sys
src, out, alice, grant = sys.argv[1:5]
wf = json.load(open(src))
wf["id"] = "e2eOtobotWorkflow1"
json.dump(wf, open(out + "/1-e2e.json", "w"))
wf["id"] = "e2eOtobotWorkflow2"
wf["name"] += " (wrong token)"
for node in wf["nodes"]:
    if node["type"] == "n8n-nodes-base.webhook":
        node["parameters"]["path"] = "otobot-e2e-bad-token"
        node["webhookId"] = "4d4d286a-0dbd-5ba9-9c6e-bb40eb56f8cb"
    if "credentials" in node:
        node["credentials"] = {"otobotApi": {"id": "e2eOtobotApiCred2", "name": "Otobot API (wrong token)"}}
json.dump(wf, open(out + "/2-e2e-bad-token.json", "w"))
# A scheduled workflow (no trigger brings a grant): Alice's standing grant in its Grant parameter.
json.dump({
    "id": "e2eOtobotWorkflow3",
    "name": "Otobot – end-to-end scheduled read (standing grant)",
    "nodes": [
        {"parameters": {"rule": {"interval": [{"field": "seconds", "secondsInterval": 5}]}},
         "id": "0b7f6c1e-3f0e-5a55-9d3e-6a1f3c2e5d01", "name": "Every 5 Seconds",
         "type": "n8n-nodes-base.scheduleTrigger", "typeVersion": 1.2, "position": [0, 0]},
        {"parameters": {"operation": "getUserCredentials", "userId": alice, "grant": grant,
                        "service": "google", "options": {}},
         "id": "0b7f6c1e-3f0e-5a55-9d3e-6a1f3c2e5d02", "name": "Otobot Credential Fetcher",
         "type": "n8n-nodes-otobot.otobotCredentialFetcher", "typeVersion": 1, "position": [220, 0],
         "credentials": {"otobotApi": {"id": "e2eOtobotApiCred1", "name": "Otobot API"}}},
    ],
    "connections": {"Every 5 Seconds": {"main": [[{"node": "Otobot Credential Fetcher", "type": "main", "index": 0}]]}},
    "active": False,
    "settings": {"executionOrder": "v1"},
}, open(out + "/3-e2e-schedule.json", "w"))
EOF
    if n8n_cli import:workflow --separate --input="$e2e_dir" >>"$logs/n8n-$v-import.log" 2>&1; then
        ok "n8n $v: import n8n/test/e2e-workflow.json (its wrong-token copy, a scheduled workflow)"
    else
        fail "n8n $v: import n8n/test/e2e-workflow.json"; return
    fi
    # Activation takes effect when n8n starts.
    local id
    for id in e2eOtobotWorkflow1 e2eOtobotWorkflow2 e2eOtobotWorkflow3; do
        if [ "$major" -ge 2 ]; then
            n8n_cli publish:workflow --id="$id" >>"$logs/n8n-$v-import.log" 2>&1
        else
            n8n_cli update:workflow --id="$id" --active=true >>"$logs/n8n-$v-import.log" 2>&1
        fi || { fail "n8n $v: activate $id"; return; }
    done

    # The example workflows must import (inactive: they need real services).
    local f count
    count=$(find "$examples_dir" -name '*.json' | wc -l)
    if n8n_cli import:workflow --separate --input="$examples_dir" >"$home/examples.out" 2>&1 &&
        grep -q "Successfully imported $count workflows" "$home/examples.out"; then
        for f in "$root"/n8n/workflows/*.json; do ok "n8n $v: import ${f#"$root/"}"; done
    else
        for f in "$root"/n8n/workflows/*.json; do # which one?
            if n8n_cli import:workflow --input="$f" >>"$home/examples.out" 2>&1; then
                ok "n8n $v: import ${f#"$root/"}"
            else
                fail "n8n $v: import ${f#"$root/"}"
            fi
        done
    fi
    cat "$home/examples.out" >>"$logs/n8n-$v-import.log"

    say "n8n $v: starting"
    setsid env -i "${n8n_env[@]}" node "$n8n_dir/node_modules/n8n/bin/n8n" start >"$logs/n8n-$v.log" 2>&1 &
    local n8n_pid=$!
    pids+=("$n8n_pid")
    local hook=http://127.0.0.1:$n8n_port/webhook/otobot-e2e i
    # /healthz answers before the webhooks are registered: poll the webhook.
    for i in $(seq 1 240); do
        post "$hook" '{}'
        # 404: webhook not registered yet; 503: n8n's database not ready (yet).
        case $http_code in 000 | 404 | 503) ;; *) break ;; esac
        kill -0 "$n8n_pid" 2>/dev/null || break
        sleep 0.5
    done
    if [ "$http_code" = 400 ]; then
        ok "n8n $v: started, webhook registered"
    else
        fail "n8n $v: webhook answers (HTTP $http_code, body ${http_body:0:300}); see $logs/n8n-$v.log"; return
    fi

    local mark counts message trigger=$api_url/api/tooljet/workflows/otobot-e2e/trigger
    # (1) Through Otobot's trigger route (ToolJet's path): a run grant for the
    # signed-in user travels with the run; the node presents it by default.
    # The body's userId is not believed.
    mark=$(audit_watermark)
    post "$trigger" "{\"service\": \"google\", \"userId\": \"$user_other\"}" "$alice_jwt"
    if [ "$http_code" = 200 ] &&
        [ "$(json_field "$http_body" 'j["hasCredentials"]')" = true ] &&
        [ "$(json_field "$http_body" 'j["credentials"]["accessToken"]')" = "$access_token" ]; then
        ok "n8n $v: trigger → run grant → the signed-in user's credential, through the node"
    else
        fail "n8n $v: trigger → run grant → credential (HTTP $http_code, body ${http_body:0:300})"
    fi
    counts=$(audit_reads "$user_google" "$mark" run)
    if [ "$counts" = "1 n8n run otobot-e2e" ]; then
        ok "n8n $v: one credential_read audit row, source n8n, naming the run grant of otobot-e2e"
    else
        fail "n8n $v: credential_read audit rows: expected \"1 n8n run otobot-e2e\", got \"$counts\""
    fi
    [[ $http_body == *"$other_access_token"* ]] && fail "n8n $v: another user's secret in the answer"

    # (2) A user without a Google connection, with her own run grant: data, not an error.
    post "$trigger" '{"service": "google"}' "$carol_jwt"
    if [ "$http_code" = 200 ] &&
        [ "$(json_field "$http_body" 'j["hasCredentials"]')" = false ] &&
        [ "$(json_field "$http_body" 'j["error"]')" = "Connection not found" ]; then
        ok "n8n $v: no connection → hasCredentials false, \"Connection not found\""
    else
        fail "n8n $v: no connection (HTTP $http_code, body ${http_body:0:300})"
    fi

    # (3) No userId: the workflow's 400 branch.
    post "$hook" '{"service": "google"}'
    if [ "$http_code" = 400 ] && [ "$(json_field "$http_body" 'j["error"]')" = "userId required" ]; then
        ok "n8n $v: no userId → 400"
    else
        fail "n8n $v: no userId (HTTP $http_code, body ${http_body:0:300})"
    fi

    # (4) The internal token without a grant (the webhook called directly, as
    # any workflow author could): Otobot answers 403, the workflow's IF branch
    # answers 403 with the node's message.
    post "$hook" "{\"userId\": \"$user_google\", \"service\": \"google\"}"
    message=$(json_field "$http_body" 'j["error"]')
    if [ "$http_code" = 403 ] && [[ $message == *"403 grant_required"* ]] && [[ $message == *"Set Grant to"* ]] &&
        [[ $http_body != *"$access_token"* ]]; then
        ok "n8n $v: no grant → 403 grant_required through the workflow's IF branch"
    else
        fail "n8n $v: no grant (HTTP $http_code, body ${http_body:0:300})"
    fi

    # (5) Alice's grant used for Bob, and dead grants: 403 each, audited.
    local case grant reason target
    for case in "$schedule_grant other_user $user_other" "$revoked_grant revoked $user_google" "$expired_grant expired $user_google"; do
        read -r grant reason target <<<"$case"
        mark=$(audit_watermark)
        post "$hook" "{\"userId\": \"$target\", \"service\": \"google\", \"otobotGrant\": \"$grant\"}"
        message=$(json_field "$http_body" 'j["error"]')
        if [ "$http_code" = 403 ] && [[ $message == *"403 grant_invalid, $reason"* ]] &&
            [[ $http_body != *"ya29."* ]] &&
            [ "$(sql "SELECT count(*) FROM otobot.credential_access_logs WHERE id > $mark AND action = 'credential_refused' AND detail->>'reason' = '$reason'")" = 1 ]; then
            ok "n8n $v: grant_invalid ($reason) → 403, audited as credential_refused"
        else
            fail "n8n $v: grant_invalid $reason (HTTP $http_code, body ${http_body:0:300})"
        fi
    done

    # (6) A wrong internal token: the node names the 401 token problem.
    post "http://127.0.0.1:$n8n_port/webhook/otobot-e2e-bad-token" "{\"userId\": \"$user_google\", \"service\": \"google\"}"
    message=$(json_field "$http_body" 'j["error"]')
    if [ "$http_code" = 200 ] && [[ $message == *401* ]] && [[ $message == *token* ]] &&
        [ "$(json_field "$http_body" '"credentials" in j')" = false ]; then
        ok "n8n $v: wrong token → \"$message\""
    else
        fail "n8n $v: wrong token (HTTP $http_code, body ${http_body:0:300})"
    fi

    # (7) The Schedule Trigger workflow reads Alice's credential with her
    # standing grant: an audited read naming the grant, and a successful execution.
    local i reads=0 runs=0 sqlite=$home/.n8n/database.sqlite
    for i in $(seq 1 60); do
        reads=$(sql "SELECT count(*) FROM otobot.credential_access_logs WHERE action = 'credential_read'
                      AND user_id = '$user_google' AND source = 'n8n' AND detail->>'grant_id' = '$schedule_grant_id'
                      AND detail->>'workflow' = 'e2e schedule' AND detail->>'grant_kind' = 'standing'")
        runs=$(python3 -c 'import sqlite3, sys
try:
    c = sqlite3.connect("file:" + sys.argv[1] + "?mode=ro", uri=True, timeout=5)
    print(c.execute("SELECT count(*) FROM execution_entity WHERE workflowId = ? AND status = ?", ("e2eOtobotWorkflow3", "success")).fetchone()[0])
except Exception:
    print(0)' "$sqlite")
        [ "$reads" -ge 1 ] && [ "$runs" -ge 1 ] && break
        sleep 1
    done
    if [ "$reads" -ge 1 ] && [ "$runs" -ge 1 ]; then
        ok "n8n $v: a Schedule Trigger workflow reads with a standing grant ($reads audited reads, $runs successful runs)"
    else
        fail "n8n $v: scheduled read with a standing grant: $reads audited reads, $runs successful executions in 60 s"
    fi

    stop_group "$n8n_pid"
}

for v in $versions; do test_version "$v"; done

# --- No secret in the logs -------------------------------------------------
stop_group "$otobot_pid"
leaks() { # file... → names of the secrets found
    local found=() name value
    for name in master_key internal_token wrong_token access_token other_access_token refresh_token \
        user_password jwt_secret alice_jwt carol_jwt schedule_grant revoked_grant expired_grant; do
        value=${!name}
        if grep -qF -- "$value" "$@" 2>/dev/null; then found+=("$name"); fi
    done
    echo "${found[*]:-}"
}
found=$(leaks "$logs/otobot.log")
if [ -s "$logs/otobot.log" ] && [ -z "$found" ]; then
    ok "otobot's log ($(wc -l <"$logs/otobot.log") lines, RUST_LOG=debug) holds no secret"
else
    fail "otobot's log holds: ${found:-<empty log>}"
fi
n8n_logs=("$logs"/n8n-*.log)
found=$(leaks "${n8n_logs[@]}")
if [ -z "$found" ]; then
    ok "n8n's logs ($(cat "${n8n_logs[@]}" | wc -l) lines) hold no secret"
else
    fail "n8n's logs hold: $found"
fi
