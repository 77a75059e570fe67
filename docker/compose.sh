#!/usr/bin/env bash
# docker compose for Otobot's stack, from anywhere: the compose file is
# docker/docker-compose.yml and ${…} values come from the repository's .env.
#   ./docker/compose.sh up -d
#   ./docker/compose.sh --profile frontend up -d
#   ./docker/compose.sh logs -f api-internal
# Uses `docker compose` (v2), else the older `docker-compose` (v1.28+).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")

if [ ! -f "$root/.env" ]; then
    printf 'error: %s is missing: cp .env.example .env, fill it in, and append docker/env.docker.example (see docker/README.md)\n' "$root/.env" >&2
    exit 1
fi

if [ ! -f "$root/tooljet.env" ]; then
    printf 'note: %s is missing; ToolJet needs it, and so does Compose < 2.34 even without ToolJet: cp docker/tooljet.env.example tooljet.env\n' "$root/tooljet.env" >&2
fi

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
    # docker-compose v1 builds with BuildKit only when asked.
    export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-1}" COMPOSE_DOCKER_CLI_BUILD="${COMPOSE_DOCKER_CLI_BUILD:-1}"
else
    printf 'error: neither `docker compose` nor `docker-compose` is installed\n' >&2
    exit 1
fi

exec "${compose[@]}" \
    --project-name "${COMPOSE_PROJECT_NAME:-otobot}" \
    --project-directory "$here" \
    --env-file "$root/.env" \
    -f "$here/docker-compose.yml" \
    "$@"
