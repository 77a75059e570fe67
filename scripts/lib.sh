# Shared helpers for the project's scripts. Source it; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGRX_VERSION=0.18.1
PG_MAJOR=15
# OTOBOT_PG_BIN points the scripts at another PostgreSQL 15 installation
# (a developer's private copy); the default is Debian's.
PG_BIN=${OTOBOT_PG_BIN:-/usr/lib/postgresql/$PG_MAJOR/bin}
PG_CONFIG=$PG_BIN/pg_config

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a command as root (we may already be root).
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
# Run psql as the postgres OS user over the local socket (peer auth).
psql_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "${FRONTEND_DB_PORT:-5432}" "$@"
    else
        sudo -u postgres psql -X -q -v ON_ERROR_STOP=1 -p "${FRONTEND_DB_PORT:-5432}" "$@"
    fi
}

# Load .env (creating it with fresh secrets if missing) into the environment.
load_env() {
    if [ ! -f "$ROOT/.env" ]; then
        say "writing $ROOT/.env with fresh secrets (keep ENCRYPTION_MASTER_KEY safe: losing it loses every credential)"
        local hex32 pw1 pw2
        hex32() { openssl rand -hex 32; }
        alnum() { openssl rand -base64 48 | tr -dc 'A-Za-z0-9' | head -c 32; }
        pw1=$(alnum); pw2=$(alnum)
        sed -e "s|^POSTGRES_PASSWORD=.*|POSTGRES_PASSWORD=$pw1|" \
            -e "s|^FRONTEND_DB_PASSWORD=.*|FRONTEND_DB_PASSWORD=$pw2|" \
            -e "s|^ENCRYPTION_MASTER_KEY=.*|ENCRYPTION_MASTER_KEY=$(hex32)|" \
            -e "s|^N8N_INTERNAL_TOKEN=.*|N8N_INTERNAL_TOKEN=$(hex32)|" \
            -e "s|^API_JWT_SECRET=.*|API_JWT_SECRET=$(hex32)|" \
            -e "s|^N8N_WEBHOOK_SECRET=.*|N8N_WEBHOOK_SECRET=$(hex32)|" \
            -e "s|^N8N_ENCRYPTION_KEY=.*|N8N_ENCRYPTION_KEY=$(hex32)|" \
            -e "s|^N8N_DB_PASSWORD=.*|N8N_DB_PASSWORD=$(alnum)|" \
            -e "s|^TOOLJET_DB_PASS=.*|TOOLJET_DB_PASS=$(alnum)|" \
            -e "s|^LOCKBOX_MASTER_KEY=.*|LOCKBOX_MASTER_KEY=$(hex32)|" \
            -e "s|^TOOLJET_SECRET_KEY_BASE=.*|TOOLJET_SECRET_KEY_BASE=$(openssl rand -hex 64)|" \
            -e "s|^TOOLJET_JWT_SECRET=.*|TOOLJET_JWT_SECRET=$(hex32)|" \
            "$ROOT/.env.example" > "$ROOT/.env.tmp"
        chmod 600 "$ROOT/.env.tmp"
        mv "$ROOT/.env.tmp" "$ROOT/.env"
    fi
    # Variables already exported win over .env, as with `otobot` itself
    # (e.g. FRONTEND_DB_PORT of a private cluster must not fall back to 5432).
    local name kv saved=()
    while IFS= read -r name; do
        if declare -p "$name" 2>/dev/null | grep -q '^declare -[a-zA-Z]*x'; then
            saved+=("$name=${!name}")
        fi
    done < <(sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' "$ROOT/.env")
    set -a
    # shellcheck disable=SC1091
    . "$ROOT/.env"
    set +a
    for kv in "${saved[@]}"; do
        export "${kv%%=*}=${kv#*=}"
    done
}

# postgresql://user:password@host:port/db for the admin role.
admin_url() {
    printf 'postgresql://%s:%s@%s:%s/%s' "${POSTGRES_USER:-otobot_admin}" "${POSTGRES_PASSWORD:-}" \
        "${FRONTEND_DB_HOST:-127.0.0.1}" "${FRONTEND_DB_PORT:-5432}" "${1:-postgres}"
}

# Create (or update) the admin and API roles with the passwords of .env, and
# the vault database. Idempotent: .env is the source of truth.
bootstrap_database() {
    say "bootstrapping roles and database ${FRONTEND_DB_NAME:-otobot_frontend}"
    psql_postgres -d postgres -f "$ROOT/sql/bootstrap.sql"
}
