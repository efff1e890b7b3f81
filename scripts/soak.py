#!/usr/bin/env python3
"""Soak test (not in CI): `vitrine serve` under mixed load for a while.

Load, all at once, for --minutes (default 30):
  * writers: single-product writes at --write-rate (create, replace,
    patch, delete), each with an image URL on a local image server (small JPEG-like PNGs, and now and
    then a 6000x6600 PNG of 130 KB that decodes to 40 megapixels);
  * searchers: text searches, and image_url searches of the large PNG;
  * slow clients: idle sockets, half-sent request heads, trickled bodies,
    bodies announced at 2 GB, kept-alive sockets left open.

First, a burst of 32 concurrent searches by that 40-megapixel PNG, with
the server's peak RSS. Every minute it prints the server's RSS, the answers by status, connection
errors and the indexing backlog (queued + running jobs, from /metrics). At
the end it stops the load, waits for the backlog to drain (up to
--drain-minutes) and prints a JSON summary: RSS at start, peak and end,
answers by status, 5xx other than 503, backlog at the end of the load and
after draining.

    cargo build --release --bin vitrine
    target/release/vitrine bench populate --data-dir /tmp/soak --products 2000
    scripts/soak.py --binary target/release/vitrine --data-dir /tmp/soak \
        --model /tmp/soak/model --minutes 30
"""

import argparse
import collections
import http.client
import http.server
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib

ADMIN = "soak-admin-key-0123456789abcdef"


def png(width, height, seed):
    """A PNG of the given size: a few noisy rows, the rest one colour (so a
    huge image is a small file)."""
    rows = []
    rnd = random.Random(seed)
    noisy = bytes(rnd.getrandbits(8) for _ in range(width * 3))
    flat = bytes([seed % 256, 80, 160]) * width
    for y in range(height):
        rows.append(b"\x00" + (noisy if y < 16 else flat))
    raw = b"".join(rows)

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


class Images(http.server.BaseHTTPRequestHandler):
    small = [png(320, 240, i) for i in range(16)]
    large = None

    def do_GET(self):
        if self.path.startswith("/large"):
            body = Images.large
        else:
            n = int(self.path.rsplit("/", 1)[-1].split(".")[0] or 0)
            body = Images.small[n % len(Images.small)]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.status = collections.Counter()
        self.errors = collections.Counter()
        self.server_errors = collections.Counter()

    def answer(self, what, status):
        with self.lock:
            self.status[f"{what} {status}"] += 1
            if isinstance(status, int) and status >= 500 and status != 503:
                self.server_errors[f"{what} {status}"] += 1

    def error(self, what, e):
        with self.lock:
            self.errors[f"{what}: {type(e).__name__}"] += 1


def request(addr, method, path, body=None, key=ADMIN, timeout=60):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        res = conn.getresponse()
        text = res.read()
        return res.status, (json.loads(text) if text and text[:1] in b"{[" else text)
    finally:
        conn.close()


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def backlog(addr):
    try:
        _, text = request(addr, "GET", "/metrics")
    except Exception:
        return None
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith("vitrine_jobs{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def writer(addr, key, images, stop, stats, seed, interval):
    rnd = random.Random(seed)
    n = 0
    while not stop.is_set():
        started = time.time()
        n += 1
        pid = f"w{seed}-{n % 500}"
        large = rnd.random() < 0.02
        url = f"http://{images[0]}:{images[1]}/" + ("large.png" if large else f"img/{n}.png")
        doc = {"title": f"Red leather boot {n}", "price": f"{rnd.randint(1, 500)}.99",
               "category": rnd.choice(["boots", "bags", "hats"]), "image_url": url}
        op = rnd.random()
        try:
            if op < 0.4:
                s, _ = request(addr, "POST", "/v1/tenants/soak/products", dict(doc, external_id=pid), key)
            elif op < 0.7:
                s, _ = request(addr, "PUT", f"/v1/tenants/soak/products/{pid}", doc, key)
            elif op < 0.9:
                s, _ = request(addr, "PATCH", f"/v1/tenants/soak/products/{pid}",
                               {"title": f"Blue boot {n}"}, key)
            else:
                s, _ = request(addr, "DELETE", f"/v1/tenants/soak/products/{pid}", None, key)
            stats.answer("write", s)
        except Exception as e:
            stats.error("write", e)
        time.sleep(max(0.0, interval - (time.time() - started)))


def searcher(addr, key, images, stop, stats, seed):
    rnd = random.Random(seed)
    while not stop.is_set():
        try:
            if rnd.random() < 0.1:
                body = {"image_url": f"http://{images[0]}:{images[1]}/large.png"}
                what = "image search"
            else:
                body = {"text": rnd.choice(["red boots", "leather bag", "wool hat", f"boot {rnd.randint(0, 999)}"])}
                what = "text search"
            s, _ = request(addr, "POST", "/v1/tenants/soak/search", body, key)
            stats.answer(what, s)
        except Exception as e:
            stats.error("search", e)


def slow_client(addr, stop, stats, seed):
    rnd = random.Random(seed)
    while not stop.is_set():
        kind = rnd.choice(["idle", "half-head", "trickle", "huge", "keepalive"])
        try:
            s = socket.create_connection(addr, timeout=90)
            if kind == "half-head":
                s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            elif kind == "trickle":
                s.sendall(b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN.encode()
                          + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
            elif kind == "huge":
                s.sendall(b"POST /v1/tenants/soak/products HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000000\r\n"
                          b"Content-Type: application/json\r\nExpect: 100-continue\r\n\r\n")
            elif kind == "keepalive":
                s.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            start = time.time()
            while not stop.is_set():
                if kind == "trickle":
                    try:
                        s.sendall(b" ")
                    except OSError:
                        break
                    time.sleep(1)
                data = s.recv(4096) if kind != "trickle" else b""
                if kind != "trickle" and not data:
                    break
            stats.answer(f"slow {kind} closed after", f"{int(time.time() - start) // 10 * 10}s+")
            s.close()
        except Exception as e:
            stats.error(f"slow {kind}", e)
            time.sleep(0.5)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--binary", default="target/release/vitrine")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--drain-minutes", type=float, default=10)
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--write-rate", type=float, default=10.0,
                   help="product writes per second, all writers together (each with an image to index)")
    p.add_argument("--searchers", type=int, default=4)
    p.add_argument("--slow", type=int, default=40)
    a = p.parse_args()

    Images.large = png(6000, 6600, 7)
    images = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=images.serve_forever, daemon=True).start()
    img_addr = images.server_address

    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE__")}
    env.update({
        "VITRINE__DATA_DIR": a.data_dir,
        "VITRINE__ENCODER__MODEL": a.model,
        "VITRINE__AUTH__ADMIN_KEY": ADMIN,
        "VITRINE__SERVER__LISTEN": "127.0.0.1:0",
        "VITRINE__MEDIA__ALLOW_PRIVATE_NETWORKS": "true",
        "VITRINE__LOG__LEVEL": "warn,vitrine=info",
    })
    server = subprocess.Popen([a.binary, "serve"], env=env, stdout=subprocess.PIPE, text=True)
    addr = None
    for line in server.stdout:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("message", "").startswith("listening on"):
            host, port = ev["addr"].rsplit(":", 1)
            addr = (host, int(port))
        if ev.get("message") == "vector index ready":
            break
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()
    if addr is None:
        sys.exit("the server did not start")

    request(addr, "POST", "/v1/tenants", {"id": "soak", "name": "Soak"})
    _, k = request(addr, "POST", "/v1/tenants/soak/keys", {"scopes": ["search", "write"]})
    key = k["key"]

    # A burst first: 32 concurrent searches by a 130 KB PNG that decodes to
    # 40 megapixels (the decode budget's case), RSS sampled meanwhile.
    rss_before_burst = rss_mb(server.pid)
    burst = collections.Counter()
    burst_peak = [rss_before_burst]
    done = threading.Event()

    def sample():
        while not done.is_set():
            burst_peak[0] = max(burst_peak[0], rss_mb(server.pid))
            time.sleep(0.05)

    def one():
        try:
            s, _ = request(addr, "POST", "/v1/tenants/soak/search",
                           {"image_url": f"http://{img_addr[0]}:{img_addr[1]}/large.png"}, key)
            burst[s] += 1
        except Exception as e:
            burst[type(e).__name__] += 1

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers = [threading.Thread(target=one) for _ in range(32)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    done.set()
    print(json.dumps({"burst": "32 concurrent 6000x6600 PNG searches", "answers": dict(burst),
                      "rss_mb_before": round(rss_before_burst, 1), "rss_mb_peak": round(burst_peak[0], 1)}),
          flush=True)

    stats = Stats()
    stop = threading.Event()
    threads = []
    for i in range(a.writers):
        threads.append(threading.Thread(target=writer, daemon=True,
                                        args=(addr, key, img_addr, stop, stats, i, a.writers / a.write_rate)))
    for i in range(a.searchers):
        threads.append(threading.Thread(target=searcher, args=(addr, key, img_addr, stop, stats, 100 + i), daemon=True))
    for i in range(a.slow):
        threads.append(threading.Thread(target=slow_client, args=(addr, stop, stats, 200 + i), daemon=True))
    rss_start = rss_mb(server.pid)
    peak = rss_start
    for t in threads:
        t.start()
    start = time.time()
    while time.time() - start < a.minutes * 60:
        time.sleep(60)
        rss = rss_mb(server.pid)
        peak = max(peak, rss)
        with stats.lock:
            answers = dict(stats.status)
            errors = dict(stats.errors)
        print(json.dumps({"minute": round((time.time() - start) / 60, 1), "rss_mb": round(rss, 1),
                          "backlog": backlog(addr), "answers": answers, "errors": errors}), flush=True)
    stop.set()
    backlog_at_end = backlog(addr)
    drained_after = None
    t0 = time.time()
    while time.time() - t0 < a.drain_minutes * 60:
        b = backlog(addr)
        if b == 0:
            drained_after = round(time.time() - t0, 1)
            break
        time.sleep(5)
    rss_end = rss_mb(server.pid)
    server.terminate()
    server.wait(timeout=60)
    print(json.dumps({
        "summary": True,
        "minutes": a.minutes,
        "burst": {"answers": dict(burst), "rss_mb_before": round(rss_before_burst, 1),
                  "rss_mb_peak": round(burst_peak[0], 1)},
        "rss_mb": {"start": round(rss_start, 1), "peak": round(peak, 1), "end": round(rss_end, 1)},
        "answers": dict(stats.status),
        "server_errors_other_than_503": dict(stats.server_errors),
        "client_errors": dict(stats.errors),
        "backlog_at_end_of_load": backlog_at_end,
        "backlog_drained_after_secs": drained_after,
        "server_exit_code": server.returncode,
    }, indent=2))


if __name__ == "__main__":
    main()
