#!/usr/bin/env bash
# End-to-end test of the n8n community node (n8n/) in a real n8n, against a
# real `otobot serve` on a scratch database.
#
#   - builds the node (n8n/dist) and the otobot binary;
#   - installs n8n (pinned) once into a cache folder outside the repo
#     (tests/e2e-n8n/install-n8n.sh);
#   - migrates a scratch database otobot_e2e_<pid> and seeds two users, one
#     of them with a Google connection; starts `otobot serve` on it;
#   - per n8n version: loads the node the way docker/docker-compose.yml does
#     (package.json + dist/ in ~/.n8n/nodes/node_modules/n8n-nodes-otobot),
#     imports an "Otobot API" credential pointing at otobot serve, imports and
#     activates n8n/test/e2e-workflow.json, imports n8n/workflows/*.json,
#     starts n8n and calls the workflow through its webhook;
#   - checks that no secret reached the logs.
# The last line is `e2e-n8n: N passed, N failed`; the exit status is non-zero
# on any failure. Everything started is stopped and the database dropped.
#
# Environment:
#   N8N_E2E_VERSIONS       n8n versions to test (default "1.123.81"; e.g. "1.123.81 2.8.4")
#   N8N_E2E_CACHE          where n8n installs are kept (default ${XDG_CACHE_HOME:-~/.cache}/otobot)
#   OTOBOT_TEST_ADMIN_URL  PostgreSQL superuser URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#   FRONTEND_DB_PASSWORD   password of the otobot_api role, if it has one
#   OTOBOT_BIN             an otobot binary to use instead of building target/debug/otobot
#   E2E_KEEP=1             keep the temporary folder (logs, n8n user folders) even on success
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
versions=${N8N_E2E_VERSIONS:-1.123.81}
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
post() { # url, body → sets http_code and http_body
    local out
    rm -f "$tmp/response"
    out=$(curl -sS -m 60 -o "$tmp/response" -w '%{http_code}' -H 'Content-Type: application/json' \
        -X POST --data "$2" "$1" 2>/dev/null) || out=000
    http_code=$out
    http_body=$(cat "$tmp/response" 2>/dev/null || true)
}

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
refresh_token=1//e2e-refresh
client_id=e2e00000-0000-4000-8000-00000000c001
user_google=e2e00000-0000-4000-8000-000000000001 # has a Google connection
user_none=e2e00000-0000-4000-8000-000000000002   # has none

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
    ('$user_google', '$client_id', 'e2e-google@example.test', 'user'),
    ('$user_none', '$client_id', 'e2e-none@example.test', 'user');
SELECT otobot.otobot_load_key(1, decode('$master_key', 'hex'), true);
SELECT otobot.store_oauth_connection('$user_google', 'google', '$access_token', '$refresh_token',
    now() + interval '1 hour', '{email}', 'e2e@example.test', NULL, 'e2e', NULL);
SQL

api_port=$(free_port)
say "otobot serve on 127.0.0.1:$api_port"
# A clean environment: nothing from the caller's .env reaches the processes.
setsid env -i PATH="$PATH" HOME="$tmp" NO_COLOR=1 RUST_LOG=debug \
    DATABASE_URL="$(db_url otobot_api "${FRONTEND_DB_PASSWORD:-}" "$db")" \
    ENCRYPTION_MASTER_KEY="$master_key" N8N_INTERNAL_TOKEN="$internal_token" \
    N8N_INTERNAL_TOKEN_MODE=trusted \
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

audit_reads() { # user id, id watermark → "count sources" of credential_read rows after it
    psql "$(admin_db_url "$db")" -X -At -v ON_ERROR_STOP=1 -c \
        "SELECT count(*) || ' ' || coalesce(string_agg(DISTINCT source, ','), '-')
           FROM otobot.credential_access_logs
          WHERE action = 'credential_read' AND user_id = '$1' AND id > $2"
}
audit_watermark() {
    psql "$(admin_db_url "$db")" -X -At -v ON_ERROR_STOP=1 -c \
        "SELECT coalesce(max(id), 0) FROM otobot.credential_access_logs"
}

# --- One n8n version --------------------------------------------------------
test_version() { # version
    local v=$1 major=${1%%.*} n8n_dir=$cache/n8n-$1 home=$tmp/n8n-$1 n8n_port broker_port
    local -a n8n_env
    n8n_port=$(free_port)
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
    python3 - "$root/n8n/test/e2e-workflow.json" "$e2e_dir" <<'EOF'
import json, sys
src, out = sys.argv[1:3]
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
EOF
    if n8n_cli import:workflow --separate --input="$e2e_dir" >>"$logs/n8n-$v-import.log" 2>&1; then
        ok "n8n $v: import n8n/test/e2e-workflow.json (and its wrong-token copy)"
    else
        fail "n8n $v: import n8n/test/e2e-workflow.json"; return
    fi
    # Activation takes effect when n8n starts.
    local id
    for id in e2eOtobotWorkflow1 e2eOtobotWorkflow2; do
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

    # (1) A user with a Google connection: the credential comes from Otobot.
    local mark counts
    mark=$(audit_watermark)
    post "$hook" "{\"userId\": \"$user_google\", \"service\": \"google\"}"
    if [ "$http_code" = 200 ] &&
        [ "$(json_field "$http_body" 'j["hasCredentials"]')" = true ] &&
        [ "$(json_field "$http_body" 'j["credentials"]["accessToken"]')" = "$access_token" ]; then
        ok "n8n $v: credentials fetched from Otobot through the node"
    else
        fail "n8n $v: credentials fetched (HTTP $http_code, body ${http_body:0:300})"
    fi
    # (4) ... and audited once, as n8n.
    counts=$(audit_reads "$user_google" "$mark")
    if [ "$counts" = "1 n8n" ]; then
        ok "n8n $v: one credential_read audit row, source n8n"
    else
        fail "n8n $v: credential_read audit rows: expected \"1 n8n\", got \"$counts\""
    fi

    # (2) A user without a Google connection: data, not an error.
    post "$hook" "{\"userId\": \"$user_none\", \"service\": \"google\"}"
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

    # (5) A wrong internal token: the node names the 401 token problem.
    post "http://127.0.0.1:$n8n_port/webhook/otobot-e2e-bad-token" "{\"userId\": \"$user_google\", \"service\": \"google\"}"
    local message
    message=$(json_field "$http_body" 'j["error"]')
    if [ "$http_code" = 200 ] && [[ $message == *401* ]] && [[ $message == *token* ]] &&
        [ "$(json_field "$http_body" '"credentials" in j')" = false ]; then
        ok "n8n $v: wrong token → \"$message\""
    else
        fail "n8n $v: wrong token (HTTP $http_code, body ${http_body:0:300})"
    fi

    stop_group "$n8n_pid"
}

for v in $versions; do test_version "$v"; done

# --- No secret in the logs -------------------------------------------------
stop_group "$otobot_pid"
leaks() { # file... → names of the secrets found
    local found=() name value
    for name in master_key internal_token wrong_token access_token refresh_token; do
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
