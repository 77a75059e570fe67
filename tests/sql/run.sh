#!/usr/bin/env bash
# SQL test suite: each tests/sql/*.sql runs in its own database, cloned from
# a template that `otobot migrate` brought up to date, after _setup.sql.
# A test passes when psql runs it to the end (assertions RAISE on failure).
# psql variable :repo_root is the repository's root (for fixtures).
#   OTOBOT_TEST_ADMIN_URL  superuser URL (default postgresql://postgres@127.0.0.1:5432/postgres)
#   OTOBOT_BIN             the otobot binary (default target/debug/otobot)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
admin_url=${OTOBOT_TEST_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
bin=${OTOBOT_BIN:-$root/target/debug/otobot}
only=${1:-}

db_url() { # URL of database $1 on the admin URL's server
    python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$admin_url" "$1"
}
psql_admin() { psql "$admin_url" -X -q -v ON_ERROR_STOP=1 "$@"; }

template="otobot_sqltest_tpl_$$"
cleanup() {
    for db in $(psql_admin -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'otobot_sqltest_%_$$'"); do
        psql_admin -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1
    done
}
trap cleanup EXIT

psql_admin -c "CREATE DATABASE \"$template\"" || exit 1
# No key from the environment (.env): _setup.sql registers the fixed test key.
if ! ENCRYPTION_MASTER_KEY= ENCRYPTION_OLD_KEYS= "$bin" migrate --database-url "$(db_url "$template")" >/tmp/otobot-sqltest-migrate.$$ 2>&1; then
    cat /tmp/otobot-sqltest-migrate.$$; echo "migrate failed"; exit 1
fi

passed=0; failed=0; n=0
for f in "$here"/[0-9a-z]*.sql; do
    name=$(basename "$f" .sql)
    [ -n "$only" ] && [ "$name" != "$only" ] && continue
    n=$((n + 1))
    db="otobot_sqltest_${n}_$$"
    psql_admin -c "CREATE DATABASE \"$db\" TEMPLATE \"$template\"" || { failed=$((failed + 1)); continue; }
    out=$(psql "$(db_url "$db")" -X -q -v ON_ERROR_STOP=1 -v repo_root="$root" -f "$here/_setup.sql" -f "$f" 2>&1)
    if [ $? -eq 0 ]; then
        passed=$((passed + 1)); echo "ok   - sql/$name"
    else
        failed=$((failed + 1)); echo "FAIL - sql/$name"; echo "$out" | sed 's/^/      /' | tail -15
    fi
    psql_admin -c "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1
done
echo "sql: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
