#!/usr/bin/env bash
# Checks the Docker files without building anything:
#   1. shell syntax of docker/*.sh and the init script;
#   2. consistency with the code: COPY sources exist, crate and binary names,
#      pgrx and Rust versions match the Cargo manifests;
#   3. `docker compose config -q` (or docker-compose v1) on a scratch copy with
#      every variable of .env.example and docker/env.docker.example set, with
#      and without the "frontend" profile;
#   4. with --env: the same against the repository's real .env (and
#      tooljet.env), in place;
#   5. `docker build --check` of both Dockerfiles when a Docker engine with
#      BuildKit (buildx) answers; skipped otherwise.
# Exits non-zero on the first failure.
#   ./docker/check.sh [--env]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
check_real_env=0
case "${1:-}" in
    "") ;;
    --env) check_real_env=1 ;;
    *) printf 'usage: %s [--env]\n' "$0" >&2; exit 2 ;;
esac

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'check: FAILED: %s\n' "$*" >&2; exit 1; }

# --- 1. shell syntax ----------------------------------------------------------
say "shell syntax"
for f in "$here"/*.sh "$here"/postgres/initdb/*.sh; do
    bash -n "$f" || fail "syntax error in ${f#"$root"/}"
done
[ -x "$here/postgres/initdb/10-otobot.sh" ] || fail "docker/postgres/initdb/10-otobot.sh must be executable"

# --- 2. consistency with the code ---------------------------------------------
say "Dockerfiles against the repository"
for dockerfile in "$here"/postgres/Dockerfile "$here"/api/Dockerfile; do
    # COPY sources from the build context (not --from=…), relative to the root.
    while read -r src; do
        [ -e "$root/$src" ] || fail "${dockerfile#"$root"/}: COPY source '$src' does not exist"
    done < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$dockerfile" | grep -vx '\.' || true)
done
grep -q '^name = "otobot-api"' "$root/api/Cargo.toml" || fail "api/Cargo.toml: the package is no longer otobot-api (docker/api/Dockerfile builds -p otobot-api)"
grep -q '^name = "otobot"' "$root/extension/Cargo.toml" || fail "extension/Cargo.toml: the package is no longer otobot (docker/postgres/Dockerfile packages -p otobot)"
awk '/^\[\[bin\]\]/ { b = 1 } b && /^name = "otobot"/ { found = 1 } END { exit !found }' "$root/api/Cargo.toml" \
    || fail "api/Cargo.toml: no [[bin]] named otobot (the api image's ENTRYPOINT)"
pgrx_dep=$(sed -n 's/^pgrx = "=\{0,1\}\([0-9.]*\)".*/\1/p' "$root/extension/Cargo.toml")
pgrx_docker=$(sed -n 's/^ARG PGRX_VERSION=//p' "$here/postgres/Dockerfile")
[ -n "$pgrx_dep" ] && [ "$pgrx_dep" = "$pgrx_docker" ] \
    || fail "pgrx is '$pgrx_dep' in extension/Cargo.toml but PGRX_VERSION is '$pgrx_docker' in docker/postgres/Dockerfile"
rust_version=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' "$root/Cargo.toml")
for dockerfile in "$here"/postgres/Dockerfile "$here"/api/Dockerfile; do
    grep -q "^ARG RUST_IMAGE=rust:${rust_version}-bookworm$" "$dockerfile" \
        || fail "${dockerfile#"$root"/}: RUST_IMAGE is not rust:${rust_version}-bookworm (rust-version in Cargo.toml)"
done
grep -q '^default = \["pg15"\]' "$root/extension/Cargo.toml" \
    || fail "extension/Cargo.toml: the default feature is no longer pg15 (docker/postgres/Dockerfile builds for PostgreSQL 15)"

# --- 3. compose files on a scratch copy ---------------------------------------
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
else
    fail "neither \`docker compose\` nor \`docker-compose\` is installed (Debian: apt-get install docker-compose)"
fi
say "compose file ($("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n1))"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -R "$here" "$scratch/docker"
mkdir -p "$scratch/n8n/dist"
printf '{}\n' > "$scratch/n8n/package.json"
cp "$here/tooljet.env.example" "$scratch/tooljet.env"
# Every variable the stack knows of, the empty ones filled with a placeholder,
# so that required variables (${VAR:?…}) are set.
cat "$root/.env.example" "$here/env.docker.example" \
    | sed -E 's/^([A-Za-z_][A-Za-z0-9_]*)=$/\1=placeholder-for-check/' > "$scratch/.env"

compose_config() { # ENV_FILE PROJECT_DIR [compose options…]
    local env_file=$1 project_dir=$2
    shift 2
    "${compose[@]}" --project-name otobot-check --project-directory "$project_dir" \
        --env-file "$env_file" -f "$project_dir/docker-compose.yml" "$@" config -q
}
compose_config "$scratch/.env" "$scratch/docker" || fail "docker-compose.yml does not validate"
compose_config "$scratch/.env" "$scratch/docker" --profile frontend || fail "docker-compose.yml does not validate with --profile frontend"

# Services, dependencies and ports the documentation promises.
services=$("${compose[@]}" --project-name otobot-check --project-directory "$scratch/docker" --env-file "$scratch/.env" \
    -f "$scratch/docker/docker-compose.yml" --profile frontend config --services | sort | tr '\n' ' ')
[ "$services" = "api-internal migrate n8n postgres tooljet tooljet-db " ] \
    || fail "unexpected services: $services"

# --- 4. the real .env ----------------------------------------------------------
if [ "$check_real_env" -eq 1 ]; then
    say "the repository's .env"
    [ -f "$root/.env" ] || fail ".env is missing at the repository root"
    compose_config "$root/.env" "$here" || fail "docker-compose.yml does not validate with the repository's .env"
fi

# --- 5. Dockerfiles, when an engine with BuildKit answers ----------------------
if docker info >/dev/null 2>&1 && docker buildx version >/dev/null 2>&1; then
    say "docker build --check"
    for dockerfile in postgres/Dockerfile api/Dockerfile; do
        docker build --check -f "$here/$dockerfile" "$root" || fail "docker build --check: docker/$dockerfile"
    done
else
    say "no Docker engine with BuildKit: docker build --check skipped"
fi

say "docker files OK"
