#!/usr/bin/env python3
"""Side-by-side: the edge against nginx and a bare monoio server, on the same core, driven
by wrk and by our own loadtest.

Each server is pinned to one core (SERVER_CPU) and driven by the generator pinned to another
(LOAD_CPU); the runs are interleaved (ROUNDS rounds), so a noisy neighbour hurts every
server alike. The steady figure is the server core's CPU time per request, read from
/proc/stat for that core (user + nice + system + irq + softirq) and divided by the
requests the generator counted; the generator's core is read the same way, so the two
generators can be compared by what each request costs them.

Then edge-only measurements: rules (ONLY=rules: a campaign with rules and a landing page
against a plain one, with realistic visitors), scaling (one worker on one core against two workers on
both, by the edge process's CPU time per request) and memory (RSS with IDLE idle keep-alive
connections open, against nginx holding the same). Run through benches/compare.sh, which
builds and installs what this needs.
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
LOADTEST = os.path.join(TARGET, "release", "loadtest")
# Optional: another edge binary to run beside this one (e.g. a build without the sink).
EDGE_BASELINE = os.environ.get("EDGE_BASELINE", "")
EDGE_BASELINE_ARGS = os.environ.get("EDGE_BASELINE_ARGS", "").split()
DURATION = int(os.environ.get("DURATION", "10"))
CONNS = int(os.environ.get("CONNS", "64"))
ROUNDS = int(os.environ.get("ROUNDS", "2"))
SERVER_CPU = int(os.environ.get("SERVER_CPU", "0"))
LOAD_CPU = int(os.environ.get("LOAD_CPU", "1"))
PIPELINE = int(os.environ.get("PIPELINE", "16"))
IDLE = int(os.environ.get("IDLE", "10000"))
HZ = os.sysconf("SC_CLK_TCK")

# The request loadtest sends first (its visits rotate the last digit and the user agent),
# so that both generators ask the servers for the same work.
CAMPAIGN = "/c/5aaea5a02d38914cfd2ad8c1?utm_source=loadtest&utm_medium=funnel&utm_content=c0"
WRK_HEADERS = ["-H", "User-Agent: Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/131.0.0.0 Safari/537.36", "-H", "Accept-Language: en-US,en;q=0.9"]
PIXEL = "/p.gif?cid=0167a15c98772c0004000001&payout=1.5&type=lead"
LOCATION = "https://offers.example.com/drip?aff_sub=0167a15c98772c0004000001&src=blog&medium=review"

NGINX_CONF = """
worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 65536; }}
http {{
  access_log {work}/access.log;
  keepalive_requests 100000000;
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
        ["taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{CONNS}", f"-d{duration}s", "--latency", *WRK_HEADERS, url],
        capture_output=True, text=True, check=True,
    ).stdout
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return reqs, rps, parse_latency(out), (int(bad.group(1)) if bad else 0), (errors.group(1) if errors else "")


def run_loadtest(port, duration, pipeline=1, conversion_rate=0.0, cpu=None, extra=()):
    """Our generator; returns what run_wrk does (the funnel's steps summed)."""
    pin = ["taskset", "-c", str(LOAD_CPU if cpu is None else cpu)]
    out = subprocess.run(
        pin + [LOADTEST, "--target", f"http://127.0.0.1:{port}", "-c", str(CONNS), "-d", f"{duration}s",
               "--pipeline", str(pipeline), "--conversion-rate", str(conversion_rate), "--json", *extra],
        capture_output=True, text=True, check=True,
    ).stdout
    j = json.loads(out)
    steps = j["steps"]
    reqs = j["requests"]
    expected = {"visit": "302", "click": "302", "postback": "200", "pixel": "200"}
    bad = sum(n for name, st in steps.items() for code, n in st["statuses"].items() if code != expected[name])
    p99 = max(st["latency"]["p99_ms"] for st in steps.values()) * 1000 if steps else float("nan")
    errs = " ".join(f"{k} {v}" for k, v in j["errors"].items())
    return reqs, j["rps"], p99, bad, errs


def proc_cpu_jiffies(pid):
    """utime + stime of a process and all its threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start(kind, work, cpus=None, workers=1, config=None):
    pin = ["taskset", "-c", str(SERVER_CPU) if cpus is None else cpus]
    if kind in ("edge", "edge-base"):
        port = 18092
        env = dict(os.environ, RUST_LOG="warn")
        data = f"{work}/edge-data"
        shutil.rmtree(data, ignore_errors=True)
        cmd = [EDGE, "--listen", f"127.0.0.1:{port}", "--workers", str(workers), "--data-dir", data]
        if config:
            cmd += ["--config", config]
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


GENERATORS = {
    # name: (function(port, duration) -> results, what it is)
    "wrk": lambda port, path, d: run_wrk(f"http://127.0.0.1:{port}{path}", d),
    "loadtest": lambda port, path, d: run_loadtest(port, d),
    "loadtest-p": lambda port, path, d: run_loadtest(port, d, pipeline=PIPELINE),
    "funnel": lambda port, path, d: run_loadtest(port, d, conversion_rate=0.05),
}


def interleaved(work):
    plan = [("edge", "redirect", CAMPAIGN, "wrk"), ("nginx", "redirect", CAMPAIGN, "wrk"),
            ("bare", "redirect", CAMPAIGN, "wrk"), ("bare+nap", "redirect", CAMPAIGN, "wrk"),
            ("edge", "pixel", PIXEL, "wrk"), ("nginx", "pixel", PIXEL, "wrk"),
            ("edge", "redirect", CAMPAIGN, "loadtest"), ("nginx", "redirect", CAMPAIGN, "loadtest"),
            ("bare", "redirect", CAMPAIGN, "loadtest"),
            ("edge", "redirect", CAMPAIGN, "loadtest-p"), ("nginx", "redirect", CAMPAIGN, "loadtest-p"),
            ("bare", "redirect", CAMPAIGN, "loadtest-p"),
            ("edge", "funnel", CAMPAIGN, "funnel")]
    if EDGE_BASELINE:
        plan += [("edge-base", "redirect", CAMPAIGN, "wrk"), ("edge-base", "pixel", PIXEL, "wrk")]
    rows = []
    print(f"server cpu {SERVER_CPU}, generator cpu {LOAD_CPU}, {CONNS} connections, {DURATION}s x {ROUNDS} rounds, "
          f"loadtest-p = pipeline {PIPELINE}, funnel = loadtest with 5% conversions", flush=True)
    for rnd in range(ROUNDS):
        for kind, route, path, gen in plan:
            p, port = start(kind, work)
            try:
                GENERATORS[gen](port, path, 1)  # warm-up
                before, gen_before = cpu_jiffies(SERVER_CPU), cpu_jiffies(LOAD_CPU)
                reqs, rps, p99, bad, errs = GENERATORS[gen](port, path, DURATION)
                used, gen_used = cpu_jiffies(SERVER_CPU) - before, cpu_jiffies(LOAD_CPU) - gen_before
            finally:
                p.terminate()
                p.wait(timeout=20)
            cpu_us = used / HZ * 1e6 / max(reqs, 1)
            gen_us = gen_used / HZ * 1e6 / max(reqs, 1)
            row = dict(round=rnd + 1, server=kind, route=route, generator=gen, requests=reqs, rps=rps, p99_us=p99,
                       cpu_us_per_req=cpu_us, gen_cpu_us_per_req=gen_us, non_2xx_3xx=bad, socket_errors=errs)
            rows.append(row)
            print(f"  round {rnd + 1} {kind:9} {route:8} {gen:10} {rps:10.0f} rps  p99 {p99:8.0f} us  "
                  f"cpu {cpu_us:6.2f} us/req  generator {gen_us:6.2f} us/req  bad {bad} {errs}", flush=True)

    def med(kind, route, gen, key):
        vals = [r[key] for r in rows if r["server"] == kind and r["route"] == route and r["generator"] == gen]
        return statistics.median(vals) if vals else float("nan")

    print("\nmedians (ratios against the baselines measured in this run; cpu = the server core's)")
    print(f"{'server':9} {'route':8} {'generator':10} {'rps':>10} {'p99 us':>8} {'cpu us/req':>10} {'cpu/bare':>8} "
          f"{'cpu/bare+nap':>12} {'rps/nginx':>9} {'p99/nginx':>9} {'gen us/req':>10} {'rps/wrk':>8}")
    summary = []
    for kind, route, _, gen in plan:
        rps, p99, cpu = med(kind, route, gen, "rps"), med(kind, route, gen, "p99_us"), med(kind, route, gen, "cpu_us_per_req")
        gen_us = med(kind, route, gen, "gen_cpu_us_per_req")
        base_route = "redirect" if route == "funnel" else route
        base_gen = "loadtest" if gen == "funnel" else gen
        bare_cpu = med("bare", base_route, base_gen, "cpu_us_per_req")
        nap_cpu = med("bare+nap", base_route, "wrk", "cpu_us_per_req")
        n_rps, n_p99 = med("nginx", base_route, base_gen, "rps"), med("nginx", base_route, base_gen, "p99_us")
        w_rps = med(kind, route, "wrk", "rps")
        s = dict(server=kind, route=route, generator=gen, rps=rps, p99_us=p99, cpu_us_per_req=cpu,
                 cpu_vs_bare=cpu / bare_cpu, cpu_vs_bare_nap=cpu / nap_cpu, rps_vs_nginx=rps / n_rps,
                 p99_vs_nginx=p99 / n_p99, gen_cpu_us_per_req=gen_us, rps_vs_wrk=rps / w_rps)
        summary.append(s)
        print(f"{kind:9} {route:8} {gen:10} {rps:10.0f} {p99:8.0f} {cpu:10.2f} {s['cpu_vs_bare']:8.3f} "
              f"{s['cpu_vs_bare_nap']:12.3f} {s['rps_vs_nginx']:9.3f} {s['p99_vs_nginx']:9.3f} {gen_us:10.2f} "
              f"{s['rps_vs_wrk']:8.3f}")
    return rows, summary


def lifetime_run(p, port, extra=()):
    """A one-second warm-up and a DURATION run of loadtest (pipelined) against the edge process
    p, then p is stopped. Returns requests, rps, bad answers, errors, the edge's CPU over its
    whole life per request, and its CPU jiffies during the run."""
    try:
        warm = run_loadtest(port, 1, pipeline=PIPELINE, extra=extra)[0]
        before = proc_cpu_jiffies(p.pid)
        reqs, rps, _, bad, errs = run_loadtest(port, DURATION, pipeline=PIPELINE, extra=extra)
        used = proc_cpu_jiffies(p.pid) - before
    finally:
        p.terminate()
        # The whole life of the process, drain included: with a core to spare the uploader
        # encodes Parquet during the run, without one it does it at the end.
        _, _, usage = os.wait4(p.pid, 0)
        p.returncode = 0
    life = usage.ru_utime + usage.ru_stime
    return reqs, rps, bad, errs, life * 1e6 / max(reqs + warm, 1), used


def scaling(work):
    """One edge worker on one core against two workers on that core and two on both cores, each
    driven by loadtest (pipelined) on LOAD_CPU: the edge process's CPU time over its whole life
    (start, warm-up, run and the drain that uploads everything) per request. Two workers on one
    core show what workers share; two on two cores also share a core with the generator."""
    rows = []
    configs = [("1 worker, 1 core", 1, str(SERVER_CPU)), ("2 workers, 1 core", 2, str(SERVER_CPU)),
               ("2 workers, 2 cores", 2, f"{SERVER_CPU},{LOAD_CPU}")]
    print(f"\nscaling: edge workers and cores; loadtest pipeline {PIPELINE} on cpu {LOAD_CPU}", flush=True)
    for rnd in range(ROUNDS):
        for name, workers, cpus in configs:
            p, port = start("edge", work, cpus=cpus, workers=workers)
            reqs, rps, bad, errs, cpu_us, used = lifetime_run(p, port)
            busy = used / HZ / DURATION
            rows.append(dict(round=rnd + 1, config=name, rps=rps, cpu_us_per_req=cpu_us, busy_cores=busy,
                             rps_per_busy_core=rps / max(busy, 1e-9), bad=bad, errors=errs))
            print(f"  round {rnd + 1} {name:18}: {rps:10.0f} rps  edge cpu {cpu_us:6.2f} us/req (life)  "
                  f"busy cores during the run {busy:4.2f}  rps per busy core {rps / max(busy, 1e-9):10.0f}  bad {bad} {errs}",
                  flush=True)
    med = {name: statistics.median(r["cpu_us_per_req"] for r in rows if r["config"] == name) for name, _, _ in configs}
    base = med[configs[0][0]]
    print("medians: " + ", ".join(f"{n} {v:.2f} us/req ({v / base:.3f}x)" for n, v in med.items()))
    return dict(rows=rows, cpu_us_per_req=med, ratio_to_one_worker={n: v / base for n, v in med.items()})


# Two campaigns on one edge with GeoIP, uap-core's agents and data-centre ranges: the plain
# one redirects straight to an offer; the other matches rules on country, device, OS,
# browser, language and bot, shows a landing page (signed cookie, click table) and fills
# visitor tokens.
RULES_CONF = """
[server]
geoip_db = "{data}/GeoLite2-City.mmdb"
ua_regexes = "{data}/regexes.yaml"
trusted_proxies = ["127.0.0.1"]
bot_networks = ["3.0.0.0/9", "13.32.0.0/15", "34.64.0.0/10", "35.184.0.0/13", "52.0.0.0/10",
                "104.196.0.0/14", "20.33.0.0/16", "40.64.0.0/10", "2600:1f00::/24"]
click_secret = "compare.py click secret, 32 bytes"

[[traffic_sources]]
id = "ts"
name = "Source"
params = {{ source = "utm_source", var_2 = "utm_medium", target = "utm_content" }}
cost_param = "cost"

[[offers]]
id = "o1"
name = "Offer 1"
url = "https://offers.example.com/drip?aff_sub={{click_id}}&src={{source}}&medium={{var_2}}"
payout = 92.4

[[offers]]
id = "o2"
name = "Offer 2"
url = "https://trial.example.com/start?subid={{click_id}}&c={{country}}&d={{device}}&os={{os}}&b={{browser}}"
payout = 12.5

[[offers]]
id = "o3"
name = "Offer 3"
url = "https://trial.example.com/start?subid={{click_id}}&src={{source}}"

[[offers]]
id = "safe"
name = "Safe page"
url = "https://safe.example.com/?id={{click_id}}"

[[landing_pages]]
id = "lp"
name = "Review"
url = "https://lp.example.com/review?cid={{click_id}}&c={{country}}&d={{device}}&src={{source}}"

[[campaigns]]
id = "plain"
name = "Plain"
traffic_source = "ts"
cost = 0.05
  [[campaigns.paths]]
  offers = [ {{ offer = "o1", weight = 3 }}, {{ offer = "o3", weight = 1 }} ]

[[campaigns]]
id = "rules"
name = "Rules and a landing page"
traffic_source = "ts"
cost = 0.05
  [[campaigns.paths]]
  landing_page = "lp"
  offers = [ {{ offer = "o1", weight = 3 }}, {{ offer = "o2", weight = 1 }} ]
  [[campaigns.rules]]
  bot = true
  paths = [ {{ offers = [ {{ offer = "safe" }} ] }} ]
  [[campaigns.rules]]
  countries = ["US", "CA", "GB"]
  devices = ["mobile"]
  paths = [ {{ landing_page = "lp", offers = [ {{ offer = "o2" }} ] }} ]
  [[campaigns.rules]]
  os = ["Windows"]
  browsers = ["Firefox", "Edge"]
  languages = ["de", "fr"]
  paths = [ {{ landing_page = "lp", offers = [ {{ offer = "o1" }} ] }} ]
  [[campaigns.rules]]
  countries = ["DE", "FR", "JP", "BR", "IN"]
  paths = [ {{ weight = 1, landing_page = "lp", offers = [ {{ offer = "o1" }} ] }},
            {{ weight = 1, offers = [ {{ offer = "o2" }} ] }} ]
"""


def rules(work):
    """The edge's CPU per redirect on the campaign with rules and a landing page against the
    plain campaign, on one edge (one worker, SERVER_CPU) with GeoIP and agents, driven by
    loadtest (pipelined, visits only) with AGENTS distinct user agents from addresses spread
    over the world; rounds interleaved. The CPU is the edge process's over its whole life
    (start and the drain included), per request, so the sink's enrichment counts too."""
    data = os.path.join(ROOT, "data")
    for f in ("GeoLite2-City.mmdb", "regexes.yaml"):
        if not os.path.exists(os.path.join(data, f)):
            subprocess.run([os.path.join(ROOT, "scripts", "fetch-data.sh"), data], check=True)
    conf = os.path.join(work, "rules.toml")
    with open(conf, "w") as f:
        f.write(RULES_CONF.format(data=data))
    agents = os.environ.get("AGENTS", "3000")
    cases = [("plain", "plain", 0.0), ("rules+lp", "rules", 0.0), ("rules+lp+clicks", "rules", 1.0)]
    rows = []
    print(f"\nrules: plain campaign against rules and a landing page; {agents} agents, spread addresses, "
          f"loadtest pipeline {PIPELINE} on cpu {LOAD_CPU}", flush=True)
    for rnd in range(ROUNDS):
        for name, campaign, clicks in cases:
            p, port = start("edge", work, config=conf)
            extra = ("--campaign", campaign, "--agents", agents, "--forwarded-for", "--click-through", str(clicks))
            reqs, rps, bad, errs, cpu_us, _ = lifetime_run(p, port, extra)
            rows.append(dict(round=rnd + 1, case=name, rps=rps, cpu_us_per_req=cpu_us, bad=bad, errors=errs))
            print(f"  round {rnd + 1} {name:16}: {rps:10.0f} rps  edge cpu {cpu_us:6.2f} us/req (life)  bad {bad} {errs}",
                  flush=True)
    med = {n: statistics.median(r["cpu_us_per_req"] for r in rows if r["case"] == n) for n, _, _ in cases}
    base = med["plain"]
    print("medians: " + ", ".join(f"{n} {v:.2f} us/req ({v / base:.3f}x)" for n, v in med.items()))
    return dict(rows=rows, cpu_us_per_req=med, ratio_to_plain={n: v / base for n, v in med.items()})


def idle_connections(port, n):
    """Opens n keep-alive connections, each answered once, and returns them (left open)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed before answering")
            got += chunk
        socks.append(s)
    return socks


def memory(work):
    """RSS of the edge (one worker) and of nginx with IDLE idle keep-alive connections open."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, IDLE + 1024)), hard))
    out = {}
    print(f"\nmemory: RSS with {IDLE} idle keep-alive connections", flush=True)
    for kind in ("edge", "nginx"):
        p, port = start(kind, work)
        try:
            time.sleep(0.5)
            before = rss_kib(p.pid)
            socks = idle_connections(port, IDLE)
            time.sleep(1.0)
            after = rss_kib(p.pid)
            alive = sum(1 for s in socks if s.fileno() >= 0)
            for s in socks:
                s.close()
        finally:
            p.terminate()
            p.wait(timeout=20)
        out[kind] = dict(rss_before_kib=before, rss_idle_kib=after, connections=alive)
        print(f"  {kind:6} RSS {before / 1024:7.1f} MiB at rest, {after / 1024:7.1f} MiB with {alive} idle connections "
              f"({(after - before) / max(alive, 1):.2f} KiB per connection)", flush=True)
    out["edge_vs_nginx"] = out["edge"]["rss_idle_kib"] / out["nginx"]["rss_idle_kib"]
    print(f"edge/nginx RSS with {IDLE} idle connections: {out['edge_vs_nginx']:.3f}")
    return out


def main():
    work = tempfile.mkdtemp(prefix="compare-")
    only = set(os.environ.get("ONLY", "interleaved,scaling,memory").split(","))
    result = {}
    if "interleaved" in only:
        rows, summary = interleaved(work)
        result.update(rows=rows, summary=summary)
    if "scaling" in only:
        result["scaling"] = scaling(work)
    if "memory" in only:
        result["memory"] = memory(work)
    if "rules" in only:
        result["rules"] = rules(work)
    with open(os.path.join(work, "compare.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"\nraw results: {work}/compare.json")


if __name__ == "__main__":
    sys.exit(main())
