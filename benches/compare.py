#!/usr/bin/env python3
"""Side-by-side: the edge against nginx and a bare monoio server, on the same core.

Each server is pinned to one core (SERVER_CPU) and driven by wrk pinned to another
(LOAD_CPU); the runs are interleaved (ROUNDS rounds), so a noisy neighbour hurts every
server alike. The steady figure is the server core's CPU time per request, read from
/proc/stat for that core (user + nice + system + irq + softirq) and divided by the
requests wrk counted. Run through benches/compare.sh, which builds and installs what
this needs.
"""

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EDGE = os.path.join(TARGET, "release", "edge")
BARE = os.path.join(TARGET, "release", "bare")
# Optional: another edge binary to run beside this one (e.g. a build without the sink).
EDGE_BASELINE = os.environ.get("EDGE_BASELINE", "")
EDGE_BASELINE_ARGS = os.environ.get("EDGE_BASELINE_ARGS", "").split()
DURATION = int(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNS", "64"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SERVER_CPU = int(os.environ.get("SERVER_CPU", "0"))
LOAD_CPU = int(os.environ.get("LOAD_CPU", "1"))
HZ = os.sysconf("SC_CLK_TCK")

CAMPAIGN = "/c/5aaea5a02d38914cfd2ad8c1?utm_source=blog&utm_medium=review&utm_content=hero"
PIXEL = "/p.gif?cid=0167a15c98772c0004000001&payout=1.5&type=lead"
LOCATION = "https://offers.example.com/drip?aff_sub=0167a15c98772c0004000001&src=blog&medium=review"

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log {work}/access.log;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location = /p.gif {{ empty_gif; add_header Cache-Control no-store; }}
    location / {{ return 302 "{location}"; }}
  }}
}}
"""


def cpu_jiffies(cpu):
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == f"cpu{cpu}":
                user, nice, system, _idle, _iowait, irq, softirq = map(int, parts[1:8])
                return user + nice + system + irq + softirq
    raise RuntimeError(f"no cpu{cpu} in /proc/stat")


def wait_port(port, proc, limit=15.0):
    t = time.time()
    while time.time() - t < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def parse_latency(text):
    """wrk prints e.g. '99%    1.23ms'; returns microseconds."""
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def run_wrk(url, duration):
    out = subprocess.run(
        ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{CONNS}", f"-d{duration}s", "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return reqs, rps, parse_latency(out), (int(bad.group(1)) if bad else 0), (errors.group(1) if errors else "")


def start(kind, work):
    pin = ["taskset", "-c", str(SERVER_CPU)]
    if kind in ("edge", "edge-base"):
        port = 18092
        env = dict(os.environ, RUST_LOG="warn")
        data = f"{work}/edge-data"
        shutil.rmtree(data, ignore_errors=True)
        cmd = [EDGE, "--listen", f"127.0.0.1:{port}", "--workers", "1", "--data-dir", data]
        if kind == "edge-base":
            cmd = [EDGE_BASELINE] + cmd[1:5] + EDGE_BASELINE_ARGS
        p = subprocess.Popen(pin + cmd,
                             env=env, stdout=subprocess.DEVNULL, stderr=open(f"{work}/edge.log", "a"))
    elif kind == "nginx":
        port = 18091
        conf = f"{work}/nginx.conf"
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(work=work, port=port, location=LOCATION))
        p = subprocess.Popen(pin + ["nginx", "-p", work, "-c", conf],
                             stdout=subprocess.DEVNULL, stderr=open(f"{work}/nginx.log", "a"))
    else:
        port = 18090
        nap = ["250"] if kind == "bare+nap" else []
        p = subprocess.Popen(pin + [BARE, f"127.0.0.1:{port}"] + nap,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p)
    return p, port


def main():
    work = tempfile.mkdtemp(prefix="compare-")
    plan = [("edge", "redirect", CAMPAIGN), ("nginx", "redirect", CAMPAIGN), ("bare", "redirect", CAMPAIGN),
            ("bare+nap", "redirect", CAMPAIGN), ("edge", "pixel", PIXEL), ("nginx", "pixel", PIXEL)]
    if EDGE_BASELINE:
        plan += [("edge-base", "redirect", CAMPAIGN), ("edge-base", "pixel", PIXEL)]
    rows = []
    print(f"server cpu {SERVER_CPU}, wrk cpu {LOAD_CPU}, {CONNS} connections, {DURATION}s x {ROUNDS} rounds", flush=True)
    for rnd in range(ROUNDS):
        for kind, route, path in plan:
            p, port = start(kind, work)
            try:
                url = f"http://127.0.0.1:{port}{path}"
                run_wrk(url, 1)  # warm-up
                before = cpu_jiffies(SERVER_CPU)
                reqs, rps, p99, bad, errs = run_wrk(url, DURATION)
                used = cpu_jiffies(SERVER_CPU) - before
            finally:
                p.terminate()
                p.wait(timeout=20)
            cpu_us = used / HZ * 1e6 / max(reqs, 1)
            row = dict(round=rnd + 1, server=kind, route=route, requests=reqs, rps=rps, p99_us=p99,
                       cpu_us_per_req=cpu_us, non_2xx_3xx=bad, socket_errors=errs)
            rows.append(row)
            print(f"  round {rnd + 1} {kind:9} {route:8} {rps:10.0f} rps  p99 {p99:8.0f} us  "
                  f"cpu {cpu_us:6.2f} us/req  bad {bad} {errs}", flush=True)

    def med(kind, route, key):
        vals = [r[key] for r in rows if r["server"] == kind and r["route"] == route]
        return statistics.median(vals) if vals else float("nan")

    bare_cpu = med("bare", "redirect", "cpu_us_per_req")
    nap_cpu = med("bare+nap", "redirect", "cpu_us_per_req")
    print("\nmedians (ratios against the baselines measured in this run)")
    print(f"{'server':9} {'route':8} {'rps':>10} {'p99 us':>8} {'cpu us/req':>10} {'cpu/bare':>8} "
          f"{'cpu/bare+nap':>12} {'rps/nginx':>9} {'p99/nginx':>9}")
    summary = []
    for kind, route, _ in plan:
        rps, p99, cpu = med(kind, route, "rps"), med(kind, route, "p99_us"), med(kind, route, "cpu_us_per_req")
        n_rps, n_p99 = med("nginx", route, "rps"), med("nginx", route, "p99_us")
        s = dict(server=kind, route=route, rps=rps, p99_us=p99, cpu_us_per_req=cpu, cpu_vs_bare=cpu / bare_cpu,
                 cpu_vs_bare_nap=cpu / nap_cpu, rps_vs_nginx=rps / n_rps, p99_vs_nginx=p99 / n_p99)
        summary.append(s)
        print(f"{kind:9} {route:8} {rps:10.0f} {p99:8.0f} {cpu:10.2f} {s['cpu_vs_bare']:8.3f} "
              f"{s['cpu_vs_bare_nap']:12.3f} {s['rps_vs_nginx']:9.3f} {s['p99_vs_nginx']:9.3f}")
    with open(os.path.join(work, "compare.json"), "w") as f:
        json.dump(dict(rows=rows, summary=summary), f, indent=1)
    print(f"\nraw results: {work}/compare.json")


if __name__ == "__main__":
    sys.exit(main())
