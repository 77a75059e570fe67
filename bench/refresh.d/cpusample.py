#!/usr/bin/env python3
"""CPU time of bench/refresh's processes while the refreshers run.

Samples /proc every --interval seconds until SIGTERM/SIGINT, then writes a
JSON summary to --out: CPU seconds by group over the sampled span, the
machine's busy CPU seconds (all cores, from /proc/stat) and a per-interval
timeline. Groups:
  idp        --idp-pid (the bench's oidc-provider)
  refresher  processes whose environment holds OTOBOT_BENCH_TAG=<--tag>
  postgres   backends of database --db ("postgres: <user> <db> ...")
A process that exits between two samples loses its last partial interval
(at most --interval of CPU).
"""
import argparse, json, os, signal, time

p = argparse.ArgumentParser()
p.add_argument('--db', required=True)
p.add_argument('--idp-pid', type=int, required=True)
p.add_argument('--tag', required=True)
p.add_argument('--out', required=True)
p.add_argument('--interval', type=float, default=0.25)
a = p.parse_args()

HZ = os.sysconf('SC_CLK_TCK')
tag = f'OTOBOT_BENCH_TAG={a.tag}'.encode()
stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

known = {}  # pid -> group (None: not ours)


def group_of(pid):
    if pid == a.idp_pid:
        return 'idp'
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            cmd = f.read().replace(b'\0', b' ')
    except OSError:
        return None
    if cmd.startswith(b'postgres: ') and f' {a.db} '.encode() in cmd:
        return 'postgres'
    if b'otobot' in cmd:
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                if tag in f.read().split(b'\0'):
                    return 'refresher'
        except OSError:
            pass
    return None


def cpu_ticks(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rindex(')') + 2:].split()
    # utime, stime are fields 14, 15 (1-based) of stat; starttime is 22
    return int(fields[11]) + int(fields[12]), fields[19]


def machine_busy():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle


first = {}   # (pid, start) -> ticks at first sight (0 if born after the start)
last = {}    # (pid, start) -> (group, ticks)
timeline = []
started = False
t0 = time.time()
m0 = machine_busy()
prev_groups = {'idp': 0, 'refresher': 0, 'postgres': 0}
prev_m, prev_t = m0, t0

while True:
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        pid = int(name)
        r = cpu_ticks(pid)
        if r is None:
            continue
        ticks, start = r
        key = (pid, start)
        if key not in known:
            known[key] = group_of(pid)
        g = known[key]
        if g is None:
            continue
        if key not in first:
            first[key] = ticks if not started else 0
        last[key] = (g, ticks)
    started = True
    now = time.time()
    groups = {'idp': 0, 'refresher': 0, 'postgres': 0}
    for key, (g, ticks) in last.items():
        groups[g] += ticks - first[key]
    m = machine_busy()
    dt = max(now - prev_t, 1e-6)
    timeline.append({'t': round(now - t0, 2),
                     **{f'{g}_pct': round(100 * (groups[g] - prev_groups[g]) / HZ / dt) for g in groups},
                     'machine_pct': round(100 * (m - prev_m) / HZ / dt)})
    prev_groups, prev_m, prev_t = groups, m, now
    if stop:
        break
    time.sleep(a.interval)

span = time.time() - t0
out = {'span_s': round(span, 2), 'cores': os.cpu_count(),
       'cpu_s': {g: round(v / HZ, 2) for g, v in groups.items()},
       'machine_busy_s': round((machine_busy() - m0) / HZ, 2),
       'timeline': timeline}
with open(a.out, 'w') as f:
    json.dump(out, f)
