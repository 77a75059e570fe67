#!/usr/bin/env bash
# =============================================================================
# Otobot's database bootstrap inside the postgres container.
#
# The official image's entrypoint runs this once, as the postgres OS user,
# when the data directory is first initialised (the server then listens on its
# Unix socket only). Run it again at will — it is idempotent and re-applies the
# passwords of the environment (from the repository's .env):
#   docker compose exec -u postgres postgres /docker-entrypoint-initdb.d/10-otobot.sh
#
# 1. sql/bootstrap.sql: the administrator POSTGRES_USER (the image's superuser,
#    used by `otobot migrate`), the API's login role otobot_api with
#    FRONTEND_DB_PASSWORD, and the vault database FRONTEND_DB_NAME, which only
#    the vault's roles may connect to. Migrations (the `migrate` service) then
#    create the extension, the schema and the other roles.
# 2. n8n's own login role N8N_DB_USER (not a superuser, no access to the
#    vault database) owning its database N8N_DB_NAME (compose sets it from the seed's POSTGRES_DB, otobot_n8n),
#    when N8N_DB_PASSWORD is set.
#
# ToolJet does not live here: its database user needs CREATEROLE, which on
# PostgreSQL 15 can take over any non-superuser role — the vault's included —
# so ToolJet gets its own PostgreSQL (service tooljet-db).
#
# Passwords travel through the environment and psql's \getenv, never on a
# command line, and are kept out of the server log.
# =============================================================================
set -Eeuo pipefail

die() { printf 'otobot-init: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'otobot-init: %s\n' "$*"; }

export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export FRONTEND_DB_NAME="${FRONTEND_DB_NAME:-otobot_frontend}"
bootstrap_sql=${OTOBOT_BOOTSTRAP_SQL:-/usr/local/share/otobot/bootstrap.sql}

[ -n "${POSTGRES_PASSWORD:-}" ] || die "POSTGRES_PASSWORD is not set (the administrator's password, from .env)"
[ -n "${FRONTEND_DB_PASSWORD:-}" ] || die "FRONTEND_DB_PASSWORD is not set (the password of the API's role otobot_api, from .env)"
[ -r "$bootstrap_sql" ] || die "$bootstrap_sql is missing from the image"

# Local socket, as the administrator (the image trusts local connections).
psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 --no-password --username "$POSTGRES_USER" --dbname postgres "$@"
}

say "bootstrapping the vault: roles $POSTGRES_USER and otobot_api, database $FRONTEND_DB_NAME"
psql_admin -f "$bootstrap_sql"

# ensure_app_database ROLE DATABASE PASSWORD_VARIABLE
# A login role (no superuser, no CREATEROLE, no CREATEDB) owning one database
# that no other role may connect to. Skipped when PASSWORD_VARIABLE is empty.
ensure_app_database() {
    local role=$1 db=$2 password_var=$3
    if [ -z "${!password_var:-}" ]; then
        say "$password_var is not set: skipping role $role and database $db"
        return 0
    fi
    case "$role" in
        "$POSTGRES_USER" | postgres | otobot_* | pg_* | "")
            die "role name '$role' is reserved (administrator, postgres, otobot_*, pg_*): choose another" ;;
    esac
    case "$db" in
        "$FRONTEND_DB_NAME" | postgres | template0 | template1 | "")
            die "database name '$db' is reserved (the vault database, postgres, templates): choose another" ;;
    esac
    say "ensuring role $role and its database $db"
    OTOBOT_INIT_PASSWORD="${!password_var}" psql_admin -v role="$role" -v db="$db" <<'SQL'
\getenv password OTOBOT_INIT_PASSWORD
-- SECURITY: these statements carry a password: keep them out of the server log.
SET log_statement = 'none';
SET log_min_duration_statement = -1;
SET log_min_error_statement = 'panic';

SELECT pg_catalog.format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
    PASSWORD :'password';

SELECT pg_catalog.format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = :'db') \gexec
SELECT pg_catalog.format('ALTER DATABASE %I OWNER TO %I', :'db', :'role') \gexec
SELECT pg_catalog.format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
}

ensure_app_database "${N8N_DB_USER:-n8n_user}" "${N8N_DB_NAME:-otobot_n8n}" N8N_DB_PASSWORD

say "done"
