# Helpers shared by the end-to-end scripts (tests/e2e-n8n/run.sh,
# tests/portal/run.sh). Source it; do not run it. The caller sets admin_url,
# the PostgreSQL superuser URL.
# shellcheck shell=bash

stop_group() { # pid: TERM its process group, KILL it after 10 s
    local pid=$1 i
    kill -TERM -- "-$pid" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 -- "-$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
}

psql_admin() { psql "$admin_url" -X -q -v ON_ERROR_STOP=1 "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
db_url() { # user, password, database → URL on the admin URL's server
    python3 - "$admin_url" "$@" <<'PY'
import sys, urllib.parse as u
p = u.urlsplit(sys.argv[1]); user, password, db = sys.argv[2:5]
host = p.hostname or "127.0.0.1"
if ":" in host: host = f"[{host}]"
auth = u.quote(user, safe="") + (":" + u.quote(password, safe="") if password else "")
netloc = f"{auth}@{host}" + (f":{p.port}" if p.port else "")
print(u.urlunsplit((p.scheme, netloc, "/" + db, p.query, "")))
PY
}
admin_db_url() { # the admin URL, on database $1
    python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/"+sys.argv[2])))' "$admin_url" "$1"
}
