#!/usr/bin/env python3
"""Drills against the release binaries, each printing its figures (docs/hardening.md).

    scripts/drill.sh crash  [--kills 20] [--seconds 60]
    scripts/drill.sh abuse  [--only slowloris,nonreading,huge,garbage,sighup]
    scripts/drill.sh faults

crash:  postback-heavy funnel traffic from loadtest while the edge is killed with SIGKILL at
        random points and restarted on its address; then `loadtest verify` checks that every
        acknowledged postback is stored exactly once (and everything else verify checks).
abuse:  slowloris (slowhttptest), clients that pipeline and never read, huge bodies and user
        agents, 10 000 garbage campaign ids, SIGHUP storms under load; each against a
        baseline measured in the same run.
faults: EIO injected into the WAL's fdatasync with strace while postbacks flow, and a full
        disk (a small tmpfs) under the log; the log must recover by itself.
Everything listens on 127.0.0.1 only.
"""

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EDGE = os.path.join(TARGET, "release", "edge")
LOADTEST = os.path.join(TARGET, "release", "loadtest")
CAMP = "/c/5aaea5a02d38914cfd2ad8c1"
PORT = 18099


def log(msg):
    print(msg, flush=True)


class Edge:
    """The release edge on 127.0.0.1:PORT with its data in `data`."""

    def __init__(self, data, args=(), config=None, cmd_prefix=(), env=None):
        self.data = data
        cmd = list(cmd_prefix) + [EDGE, "--listen", f"127.0.0.1:{PORT}", "--data-dir", data,
                                  "--store", f"file://{data}/lake"] + list(args)
        if config:
            cmd += ["--config", config]
        self.logfile = open(os.path.join(data, "edge.log"), "a")
        self.p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.logfile,
                                  env=dict(os.environ, RUST_LOG="info", **(env or {})))
        wait_port(PORT, self.p)

    def pid(self):
        """The edge's pid (the child of strace, when it runs under strace)."""
        kids = f"/proc/{self.p.pid}/task/{self.p.pid}/children"
        try:
            with open(kids) as f:
                first = f.read().split()
            if first and os.path.basename(os.readlink(f"/proc/{first[0]}/exe")) == "edge":
                return int(first[0])
        except OSError:
            pass
        return self.p.pid

    def rss_mib(self):
        with open(f"/proc/{self.pid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def cpu_s(self):
        with open(f"/proc/{self.pid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def metrics(self):
        text = urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def kill9(self):
        os.kill(self.pid(), signal.SIGKILL)
        self.p.wait()

    def stop(self, limit=120):
        os.kill(self.pid(), signal.SIGTERM)
        return self.p.wait(timeout=limit)

    def log_text(self):
        with open(os.path.join(self.data, "edge.log")) as f:
            return f.read()


def wait_port(port, proc, limit=20.0):
    t = time.time()
    while time.time() - t < limit:
        if proc.poll() is not None:
            raise RuntimeError(f"the edge exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the edge did not start listening")


def loadtest(args, capture=True):
    cmd = [LOADTEST, "--target", f"http://127.0.0.1:{PORT}", "--quiet", "--json"] + list(args)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def loadtest_result(p):
    out, err = p.communicate()
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"loadtest failed: {err}\n{out}")


def demo_config(work, extra=""):
    with open(os.path.join(ROOT, "edge", "src", "demo.toml")) as f:
        text = f.read()
    path = os.path.join(work, "edge.toml")
    with open(path, "w") as f:
        f.write(text.replace("[server]", "[server]\n" + extra, 1))
    return path


# --- crash ------------------------------------------------------------------------------

def crash(args):
    work = tempfile.mkdtemp(prefix="drill-crash-")
    data = os.path.join(work, "data")
    os.makedirs(data)
    ledger = os.path.join(work, "run.ledger")
    edge = Edge(data, ["--workers", "2"])
    run = loadtest(["-c", "32", "--conversion-rate", "0.5", "--pixel-share", "0.2",
                    "--duration", f"{args.seconds}s", "--timeout", "2s", "--retries", "3",
                    "--ledger", ledger])
    rng = random.Random(args.seed)
    kills = 0
    t0 = time.time()
    while kills < args.kills and time.time() - t0 < args.seconds - 3:
        time.sleep(rng.uniform(0.3, 2.0))
        edge.kill9()
        kills += 1
        time.sleep(rng.uniform(0.05, 0.5))
        edge = Edge(data, ["--workers", "2"])
    result = loadtest_result(run)
    code = edge.stop()
    log(f"crash: {kills} kill -9 over {time.time() - t0:.0f} s; the last stop exited {code}")
    for step, st in result.get("steps", {}).items():
        log(f"  {step}: {st.get('statuses')} unanswered {st.get('unanswered')}")
    log(f"  transport errors: {result.get('errors')}")
    v = subprocess.run([LOADTEST, "verify", "--ledger", ledger, "--store", f"file://{data}/lake",
                        "--json"], capture_output=True, text=True)
    print(v.stdout[-4000:], v.stderr[-2000:])
    verdict = json.loads(v.stdout) if v.stdout.strip().startswith("{") else {}
    c = verdict.get("conversions", {})
    log(f"crash drill: kills={kills} acknowledged={c.get('acknowledged')} "
        f"acknowledged_stored={c.get('acknowledged_stored')} differences={verdict.get('differences')} "
        f"verify exit={v.returncode}")
    if v.returncode != 0 or kills < args.kills:
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


# --- abuse ------------------------------------------------------------------------------

def baseline_rate(edge, seconds=8, rate=None, extra=()):
    args = ["-c", "32", "--duration", f"{seconds}s"] + (["--rate", str(rate)] if rate else []) + list(extra)
    cpu0 = edge.cpu_s()
    r = loadtest_result(loadtest(args))
    cpu = edge.cpu_s() - cpu0
    return r, cpu


def summary(r):
    """(answers per second, p99 ms of visits, transport errors) from loadtest's JSON."""
    visit = r.get("steps", {}).get("visit", {})
    return r.get("rps", 0), visit.get("latency", {}).get("p99_ms"), sum(r.get("errors", {}).values())


def slowloris(work):
    if not shutil.which("slowhttptest"):
        log("slowloris: skipped (apt-get install slowhttptest)")
        return None
    data = os.path.join(work, "slow")
    os.makedirs(data)
    edge = Edge(data, ["--workers", "1"])
    base, _ = baseline_rate(edge, rate=20000)
    attack = subprocess.Popen(["slowhttptest", "-c", "3000", "-H", "-i", "5", "-r", "600", "-l", "25",
                               "-u", f"http://127.0.0.1:{PORT}{CAMP}", "-p", "3", "-x", "24"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)
    open_conns = edge.metrics().get("edge_connections_open", 0)
    under, _ = baseline_rate(edge, rate=20000)
    attack.terminate()
    attack.wait()
    m = edge.metrics()
    timeouts = m.get('edge_requests_total{route="other",status="408"}', 0)
    edge.stop()
    b, u = summary(base), summary(under)
    log(f"slowloris: {int(open_conns)} connections open under attack, {int(timeouts)} closed with 408; "
        f"legitimate open-loop load at 20 000 req/s: p99 {b[1]} ms alone, {u[1]} ms under attack; errors {b[2]} / {u[2]}")
    return dict(open=open_conns, timeouts_408=timeouts, p99_alone=b[1], p99_attack=u[1], errors=u[2])


def nonreading(work, clients=150, mode="mixed"):
    data = os.path.join(work, f"nonread-{mode}")
    os.makedirs(data)
    cfg = demo_config(data, "send_timeout_ms = 5000\nidle_timeout_ms = 8000")
    edge = Edge(data, ["--workers", "2"], config=cfg)
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.sendall(f"GET {CAMP} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        s.recv(4096)
        s.close()
    before = edge.rss_mib()
    body = b"x" * 65536
    first = b"POST /nothing HTTP/1.1\r\nHost: t\r\nContent-Length: 65536\r\n\r\n" + body
    metrics, visits = first, first
    while len(metrics) < 65536 + 120000:
        metrics += b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
        visits += f"GET {CAMP}?utm_source=abuse HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    socks = []
    for i in range(clients):
        s = socket.create_connection(("127.0.0.1", PORT))
        s.setblocking(False)
        data_i = visits if mode == "visits" or (mode == "mixed" and i % 3 == 0) else metrics
        socks.append([s, data_i, 0])
    peak = before
    t = time.time()
    while time.time() - t < 6:
        for x in socks:
            s, d, sent = x
            try:
                while sent < len(d):
                    n = s.send(d[sent:])
                    if n == 0:
                        break
                    sent += n
            except BlockingIOError:
                pass
            except OSError:
                sent = len(d)
            x[2] = sent
        peak = max(peak, edge.rss_mib())
        time.sleep(0.02)
    t = time.time()
    while edge.metrics().get("edge_connections_open", 0) > 1 and time.time() - t < 30:
        time.sleep(0.25)
    closed_after = time.time() - t
    m = edge.metrics()
    for s, _, _ in socks:
        s.close()
    edge.stop()
    log(f"non-reading pipelined clients ({clients}, {mode}): RSS {before:.0f} MiB -> peak {peak:.0f} MiB "
        f"(+{peak - before:.0f} MiB); all closed {6 + closed_after:.1f} s after they started; "
        f"send timeouts {int(m.get('edge_send_timeouts_total', 0))}")
    return dict(clients=clients, mode=mode, rss_before_mib=before, rss_peak_mib=peak,
                grown_mib=peak - before, send_timeouts=m.get("edge_send_timeouts_total", 0))


def read_answers(s, buf, want):
    """Reads `want` whole responses from s (after what is in buf); returns the rest of buf."""
    done = 0
    while done < want:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            m = re.search(rb"(?i)content-length: *(\d+)", buf[:end])
            total = end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= total:
                buf = buf[total:]
                done += 1
                continue
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("the edge closed the connection")
        buf += chunk
    return buf


def raw_requests(n, make, conns=16, depth=16):
    """Sends n requests made by make(i) over `conns` keep-alive connections, `depth` at a time
    on each, reading every answer; returns the seconds taken."""
    socks = [[socket.create_connection(("127.0.0.1", PORT)), b""] for _ in range(conns)]
    t = time.time()
    i = 0
    while i < n:
        for x in socks:
            k = min(depth, n - i)
            if k == 0:
                break
            x[0].sendall(b"".join(make(i + j) for j in range(k)))
            x[1] = read_answers(x[0], x[1], k)
            i += k
    for s, _ in socks:
        s.close()
    return time.time() - t


def huge(work):
    data = os.path.join(work, "huge")
    os.makedirs(data)
    fetch = os.path.join(ROOT, "data")
    extra = ""
    if os.path.exists(os.path.join(fetch, "regexes.yaml")):
        extra = f'ua_regexes = "{fetch}/regexes.yaml"'
    cfg = demo_config(data, extra)
    edge = Edge(data, ["--workers", "1"], config=cfg)
    chrome = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/70.0.{}.110 Safari/537.36"
    n = 20000

    def visit(ua, body=b""):
        head = (f"GET /c/demo-lp?utm_source=s HTTP/1.1\r\nHost: t\r\nUser-Agent: {ua}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return head + body

    cases = [
        ("normal agents, each new (a parse each)", lambda i: visit(chrome.format(i))),
        ("16 KiB agents, each new", lambda i: visit(chrome.format(i) + " x" * 8000)),
        ("normal agents, 64 KiB bodies", lambda i: visit(chrome.format(i % 50), b"b" * 65536)),
        ("normal agents, seen before", lambda i: visit(chrome.format(i % 50))),
    ]
    out = {}
    for name, make in cases:
        raw_requests(500, make)
        rss0, cpu0 = edge.rss_mib(), edge.cpu_s()
        secs = raw_requests(n, make)
        cpu = edge.cpu_s() - cpu0
        out[name] = dict(cpu_us=cpu * 1e6 / n, rps=n / secs, rss_mib=edge.rss_mib())
    edge.stop()
    base = out["normal agents, each new (a parse each)"]["cpu_us"]
    for name, r in out.items():
        log(f"huge: {name}: {r['cpu_us']:.1f} µs of edge CPU per visit ({r['cpu_us'] / base:.2f}x), "
            f"{r['rps']:.0f} visits/s, RSS {r['rss_mib']:.0f} MiB")
    return out


def garbage(work):
    data = os.path.join(work, "garbage")
    os.makedirs(data)
    edge = Edge(data, ["--workers", "1"])
    rng = random.Random(7)
    ids = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24)) for _ in range(10000)]
    n = 40000
    make_bad = lambda i: f"GET /c/{ids[i % len(ids)]}?x=1 HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    make_good = lambda i: f"GET {CAMP}?utm_source=s{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode()
    out = {}
    for name, make in [("valid campaign", make_good), ("10 000 garbage ids", make_bad)]:
        raw_requests(1000, make)
        rss0, cpu0 = edge.rss_mib(), edge.cpu_s()
        secs = raw_requests(n, make)
        out[name] = dict(cpu_us=(edge.cpu_s() - cpu0) * 1e6 / n, rps=n / secs, rss_growth_mib=edge.rss_mib() - rss0)
    m = edge.metrics()
    edge.stop()
    for name, r in out.items():
        log(f"garbage: {name}: {r['cpu_us']:.1f} µs CPU per request, {r['rps']:.0f} req/s, RSS +{r['rss_growth_mib']:.1f} MiB")
    not_found = m.get('edge_requests_total{route="campaign",status="404"}', 0)
    dropped = sum(v for k, v in m.items() if k.startswith("edge_events_dropped_total"))
    log(f"garbage: 404s {int(not_found)}, events dropped {int(dropped)}")
    return out


def sighup(work):
    data = os.path.join(work, "sighup")
    os.makedirs(data)
    cfg = demo_config(data)
    edge = Edge(data, ["--workers", "2"], config=cfg)
    base, _ = baseline_rate(edge, seconds=8)
    stop = time.time() + 8
    run = loadtest(["-c", "32", "--duration", "8s"])
    hups = 0
    while time.time() < stop:
        os.kill(edge.pid(), signal.SIGHUP)
        hups += 1
        time.sleep(0.01)
    storm = loadtest_result(run)
    time.sleep(1)
    m = edge.metrics()
    edge.stop()
    b, s = summary(base), summary(storm)
    log(f"sighup: {hups} SIGHUPs in 8 s under load, {int(m.get('edge_config_reloads_total', 0))} reloads, "
        f"{int(m.get('edge_config_reload_failures_total', 0))} refused; {s[0]:.0f} req/s vs {b[0]:.0f} alone "
        f"({s[0] / max(b[0], 1):.2f}x), p99 {s[1]} ms vs {b[1]} ms, errors {s[2]} vs {b[2]}")
    return dict(hups=hups, reloads=m.get("edge_config_reloads_total"), rps_ratio=s[0] / max(b[0], 1),
                errors=s[2])


def abuse(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp(prefix="drill-abuse-")
    only = set(args.only.split(","))
    results = {}
    for name, f in [("slowloris", slowloris), ("nonreading", nonreading), ("huge", huge),
                    ("garbage", garbage), ("sighup", sighup)]:
        if name in only:
            if name == "nonreading":
                results[name] = [nonreading(work, mode=m) for m in ("metrics", "visits", "mixed")]
            else:
                results[name] = f(work)
    print(json.dumps(results, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)


# --- faults -----------------------------------------------------------------------------

def postback(i):
    try:
        r = urllib.request.urlopen(
            f"http://127.0.0.1:{PORT}/postback?cid=0167a15c98772c0004000001&payout=1&txid=f{i}", timeout=10)
        return r.status
    except urllib.error.HTTPError as e:
        return e.code


def faults(args):
    """Ten commits in a row fail with EIO (the 100th to 109th fdatasync) while postbacks come
    every 20 ms: how long conversions are answered 503, and that the log recovers by itself."""
    work = tempfile.mkdtemp(prefix="drill-faults-")
    data = os.path.join(work, "eio")
    os.makedirs(data)
    edge = Edge(data, ["--workers", "1"], cmd_prefix=[
        "strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync",
        "-e", "inject=fdatasync:error=EIO:when=100..109"])
    answers = []
    t0 = time.time()
    i = 0
    while time.time() - t0 < 15:
        answers.append((time.time() - t0, postback(i)))
        i += 1
        time.sleep(0.02)
    m = edge.metrics()
    code = edge.stop()
    refused = [t for t, st in answers if st == 503]
    ok = sum(1 for _, st in answers if st == 200)
    window = (refused[-1] - refused[0]) if refused else 0.0
    log(f"faults (EIO from 10 fdatasyncs in a row): {len(answers)} postbacks, {ok} acknowledged, "
        f"{len(refused)} answered 503 over {window:.1f} s, then 200 again; commit failures "
        f"{int(m.get('edge_wal_failures_total', 0))}, failing at the end {int(m.get('edge_wal_failing', 0))}, "
        f"events lost {int(m.get('edge_wal_events_lost_total', 0))}; exit {code}")
    for line in edge.log_text().splitlines():
        if "sink:" in line:
            log("  " + line)
    shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("crash")
    c.add_argument("--kills", type=int, default=20)
    c.add_argument("--seconds", type=int, default=60)
    c.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("abuse")
    a.add_argument("--only", default="slowloris,nonreading,huge,garbage,sighup")
    sub.add_parser("faults")
    args = ap.parse_args()
    {"crash": crash, "abuse": abuse, "faults": faults}[args.cmd](args)


if __name__ == "__main__":
    main()
