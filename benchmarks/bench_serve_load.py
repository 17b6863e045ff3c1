"""`refseg serve` under concurrent load on 127.0.0.1, printed as JSON.

Starts ``refseg serve --port 0`` in a child process (the default ONNX SAM, no grounder), warms it
up on the bundled image, then sends ``--clients`` concurrent clients x ``--requests`` box
requests each (random boxes; every 8th on a mirrored copy of the image) and reports statuses,
requests/s (answered and served), latency percentiles (200s, 503s, all) and the server's peak
RSS against its warmed-up RSS. Loopback only; bounded in count and by ``--deadline`` seconds.

    python benchmarks/bench_serve_load.py [--clients 64] [--requests 4] [--max-concurrency 2]
        [--max-queue 16] [--refine 0] [--retry-after 0.5] [--out FILE.json]

With ``--retry-after S`` a client answered 503 waits min(Retry-After, S) seconds before its
next request, as a polite client would (the default sends at once, a worst case).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image, ImageOps

from refseg.serve.loadgen import run_load

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "src" / "refseg" / "assets" / "astronaut.jpg"


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [
        sys.executable,
        "-m",
        "refseg.cli",
        "serve",
        "--port",
        "0",
        "--max-concurrency",
        str(args.max_concurrency),
        "--max-queue",
        str(args.max_queue),
        "--log-level",
        "warning",
    ]
    env = {**os.environ, "REFSEG_API_KEY": "", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if match:
            url = match.group(1)
            break
        if not line and process.poll() is not None:
            raise SystemExit(f"refseg serve exited: {process.stderr.read()}")
    else:
        process.kill()
        raise SystemExit("refseg serve did not start")
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=process.stderr.read, daemon=True).start()
    while httpx.get(url + "/healthz", timeout=5).json()["status"] == "loading":
        time.sleep(0.2)
    return process, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=16)
    parser.add_argument("--refine", type=int, default=0, help="decoder refinement rounds")
    parser.add_argument("--retry-after", type=float, default=0.0)
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    base = Image.open(IMAGE).convert("RGB")
    images = []
    for variant in (base, ImageOps.mirror(base)):
        buffer = io.BytesIO()
        variant.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())

    process, url = start_server(args)
    try:
        for image in images:
            warm = httpx.post(
                url + "/v1/segment",
                files={"image": ("a.jpg", image, "image/jpeg")},
                data={"box": "150,40,370,260"},
                timeout=300,
            )
            warm.raise_for_status()
        rng = random.Random(args.seed)

        def make_request(client: int, number: int) -> dict:
            x1, y1 = rng.uniform(0, 380), rng.uniform(0, 380)
            x2, y2 = x1 + rng.uniform(40, 130), y1 + rng.uniform(40, 130)
            data = {"box": f"{x1:.1f},{y1:.1f},{x2:.1f},{y2:.1f}", "refine": str(args.refine)}
            image = images[(client + number) % 8 == 0]
            return {"files": {"image": ("a.jpg", image, "image/jpeg")}, "data": data}

        report = run_load(
            url + "/v1/segment",
            make_request,
            clients=args.clients,
            requests_per_client=args.requests,
            deadline_s=args.deadline,
            server_pid=process.pid,
            honour_retry_after=args.retry_after,
        )
        health = httpx.get(url + "/healthz", timeout=5).json()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
    summary = {
        **report.summary(),
        "max_concurrency": args.max_concurrency,
        "max_queue": args.max_queue,
        "refine": args.refine,
        "retry_after_cap_s": args.retry_after,
        "server_cache": health["cache"],
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
