"""Load test of the web app: N parallel clients posting photos to /api/predict for a while.

Each client (a thread with its own HTTP connection) uploads campus photos in turn, as fast as
the server answers, for ``--seconds``; the script reports requests per second, latency
percentiles and the errors (any non-200 answer or failed connection). Only 127.0.0.1.

    python benchmarks/load_webapp.py --checkpoint runs/quick/unet-effnet-lite0/best.pt
        [--clients 8] [--seconds 60] [--photos DIR] [--limit 4]
    python benchmarks/load_webapp.py --url http://127.0.0.1:5000     # a server already running

With ``--checkpoint`` the server is started as a subprocess (``python -m helpers.webapp``) on
a free port and stopped at the end. Target: 8 clients for 60 s with zero errors.
"""

from __future__ import annotations

import os

# As the prediction command and the web app run (see helpers.predict): idle OpenMP threads
# sleep instead of spinning. Set OMP_WAIT_POLICY=ACTIVE to compare.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import http.client
import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from helpers.config import project_path
from helpers.data import find_campus


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    """Return a multipart/form-data body with the photo in the field ``image``, and its type."""
    boundary = uuid.uuid4().hex
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"'
            "\r\nContent-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(checkpoint: str, port: int, threads: int, runtime: str | None = None,
                 timeout: float = 180) -> subprocess.Popen:
    """Start ``python -m helpers.webapp`` on 127.0.0.1:port (with ``--runtime`` when given) and
    wait until /healthz answers, at most ``timeout`` seconds."""
    command = [sys.executable, "-m", "helpers.webapp", "--checkpoint", checkpoint,
               "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads)]
    command += ["--runtime", runtime] if runtime else []
    server = subprocess.Popen(command, cwd=project_path(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not answer /healthz within {timeout:g} s")


def run_clients(url: str, uploads: list[tuple[bytes, str]], clients: int, seconds: float) -> dict:
    """Return latencies (s) of successful requests and the errors, from ``clients`` threads."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError(f"{url}: this load test only targets 127.0.0.1")
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        turn = index
        while time.perf_counter() < stop_at:
            body, content_type = uploads[turn % len(uploads)]
            turn += 1
            start = time.perf_counter()
            try:
                connection.request("POST", "/api/predict", body=body,
                                   headers={"Content-Type": content_type})
                response = connection.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - start
                ok = response.status == 200 and "mask_png" in json.loads(payload)
                with lock:
                    (latencies.append(elapsed) if ok
                     else errors.append(f"HTTP {response.status}: {payload[:200]!r}"))
            except (OSError, http.client.HTTPException, ValueError) as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "errors": errors, "wall_s": time.perf_counter() - started}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--checkpoint", help="start a server for this checkpoint")
    target.add_argument("--url", help="a server already running on 127.0.0.1")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--photos", default=None, help="default: the campus photos")
    parser.add_argument("--limit", type=int, default=4, help="photos to cycle through")
    parser.add_argument("--server-threads", type=int, default=8, help="waitress threads")
    args = parser.parse_args(argv)

    args.photos = args.photos or str(find_campus())
    photos = sorted(Path(args.photos).glob("*.jpg"))[: args.limit]
    if not photos:
        print(f"error: no JPEG photos in {args.photos}", file=sys.stderr)
        return 2
    uploads = [multipart(p.read_bytes(), p.name) for p in photos]
    server = None
    url = args.url
    if args.checkpoint:
        port = free_port()
        print(f"starting python -m helpers.webapp --checkpoint {args.checkpoint} on port {port}")
        server = start_server(args.checkpoint, port, args.server_threads)
        url = f"http://127.0.0.1:{port}"
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            health = json.loads(answer.read())
        print(f"{url}: {health['model']} ({health['runtime']}, {health['precision']}); "
              f"{args.clients} clients for {args.seconds:.0f} s, cycling {len(photos)} photos "
              f"({', '.join(p.name for p in photos)})")
        result = run_clients(url, uploads, args.clients, args.seconds)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    latencies, errors = result["latencies"], result["errors"]
    completed = len(latencies)
    print(f"requests: {completed} ok, {len(errors)} errors in {result['wall_s']:.1f} s "
          f"-> {completed / result['wall_s']:.2f} requests/s")
    if latencies:
        print(f"latency: p50 {percentile(latencies, 0.5):.2f} s, p90 {percentile(latencies, 0.9):.2f} s, "
              f"p99 {percentile(latencies, 0.99):.2f} s, mean {statistics.mean(latencies):.2f} s")
    for error in errors[:5]:
        print(f"  error: {error}")
    if latencies:
        from helpers.report import write_result

        write_result("benchmark_load_webapp", {"summary": {
            "clients": args.clients, "seconds": round(result["wall_s"], 1),
            "requests per s": completed / result["wall_s"],
            "p50 s": percentile(latencies, 0.5), "p90 s": percentile(latencies, 0.9),
            "p99 s": percentile(latencies, 0.99), "errors": len(errors)}}, "benchmark")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
