#!/usr/bin/env bash
# Install pinned n8n versions into a cache folder outside the repository,
# once: a version already installed (same package.json) is reused, and a
# concurrent run waits on the version's lock instead of installing it twice.
# An install goes to a partial folder first and is moved into place only when
# npm succeeded, so an interrupted install never looks finished.
#
#   tests/e2e-n8n/install-n8n.sh [version...]   (default: $N8N_E2E_VERSIONS)
#
# scripts/test.sh starts it in the background at its beginning (low priority),
# so the download overlaps the other suites; tests/e2e-n8n/run.sh runs it
# again, which returns at once when the versions are there, or waits for the
# lock of the install under way.
#
# Environment:
#   N8N_E2E_VERSIONS   default versions (default "1.123.81 2.8.4")
#   N8N_E2E_CACHE      the cache folder (default ${XDG_CACHE_HOME:-~/.cache}/otobot)
set -euo pipefail

cache=${N8N_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/otobot}
if [ $# -eq 0 ]; then
    # shellcheck disable=SC2086
    set -- ${N8N_E2E_VERSIONS:-1.123.81 2.8.4}
fi

for tool in npm flock setsid; do
    command -v "$tool" >/dev/null || { echo "install-n8n: $tool is required" >&2; exit 1; }
done

n8n_package_json() { # version
    local overrides='"xlsx": "0.18.5"'
    # 1.x: isolated-vm 6 needs Node 22. Every version: xlsx from the registry, not a CDN.
    case $1 in 1.*) overrides="$overrides, \"isolated-vm\": \"5.0.4\"" ;; esac
    printf '{\n  "name": "otobot-e2e-n8n",\n  "private": true,\n  "dependencies": { "n8n": "%s" },\n  "overrides": { %s }\n}\n' \
        "$1" "$overrides"
}
n8n_installed() { # dir, package.json text
    [ -f "$1/node_modules/n8n/bin/n8n" ] && [ "$(cat "$1/package.json" 2>/dev/null)" = "$2" ]
}

partial=
npm_pid=
on_exit() {
    [ -n "$npm_pid" ] && kill -TERM -- "-$npm_pid" 2>/dev/null
    [ -n "$partial" ] && rm -rf "$partial"
    return 0
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

install_one() { # version
    local v=$1 dir=$cache/n8n-$1 want start log
    want=$(n8n_package_json "$v")
    if n8n_installed "$dir" "$want"; then
        echo "install-n8n: n8n $v already in $dir"
        return 0
    fi
    mkdir -p "$cache"
    exec 9>"$cache/.n8n-$v.lock"
    start=$SECONDS
    flock 9 # another run may be installing it
    if n8n_installed "$dir" "$want"; then
        echo "install-n8n: n8n $v installed by another run (waited $((SECONDS - start)) s)"
        exec 9>&-
        return 0
    fi
    echo "install-n8n: installing n8n $v into $dir (once; several minutes)"
    start=$SECONDS
    partial=$cache/.n8n-$v.partial.$$
    log=$cache/n8n-$v-install.log
    rm -rf "$partial" && mkdir -p "$partial"
    printf '%s\n' "$want" >"$partial/package.json"
    # In its own process group, so that an interruption stops npm and its compilers too.
    (cd "$partial" && exec setsid npm install --no-audit --no-fund) >"$log" 2>&1 &
    npm_pid=$!
    if ! wait "$npm_pid"; then
        npm_pid=
        tail -n 30 "$log" >&2
        echo "install-n8n: installing n8n $v failed (log: $log)" >&2
        return 1
    fi
    npm_pid=
    rm -rf "$dir" && mv "$partial" "$dir"
    partial=
    echo "install-n8n: installed n8n $v in $((SECONDS - start)) s"
    exec 9>&-
}

for v in "$@"; do install_one "$v"; done
