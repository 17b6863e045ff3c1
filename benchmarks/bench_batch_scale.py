"""`refseg segment --batch` in 1 process and in N processes (accelerate launch), as JSON.

A folder of distinct images (the bundled photo and the COCO sample's photos, mirrored and
cropped) is segmented with a phrase list. The grounder is a local OpenAI-style test server that
answers one box at once, so the figures measure refseg's side: decoding, the SAM encoder and
decoder, records. Runs alternate (1, N, 1, N, ...) so that load from other processes falls on
both; the medians of wall time (launch and model loading included) and the images/s each run
reports are printed with the machine's load average. Each process gets its share of the thread
budget (``LOCAL_WORLD_SIZE``), so N processes use the same cores as one.

Usage (from the repository root): python benchmarks/bench_batch_scale.py [--images 12]
       [--phrases 2] [--processes 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageOps

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.grounding.chat_server import ChatServer  # noqa: E402

from refseg.protocol import format_answer  # noqa: E402


def make_images(folder: Path, count: int) -> None:
    sources = [ROOT / "src/refseg/assets/astronaut.jpg"]
    coco = ROOT / "data/coco-sample"
    sources += sorted((coco / "images").glob("*.jpg"))
    made = 0
    while made < count:
        for source in sources:
            if made >= count:
                break
            image = Image.open(source).convert("RGB")
            variant = made // len(sources)
            if variant % 2:
                image = ImageOps.mirror(image)
            if variant >= 2:
                w, h = image.size
                cut = 0.05 * (variant // 2)
                image = image.crop((int(w * cut), int(h * cut), w, h))
            image.save(folder / f"img{made:03d}.jpg", quality=92)
            made += 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_once(processes: int, args: list[str], out: Path) -> dict:
    command = [sys.executable, "-m", "refseg.cli", *args, "--out", str(out)]
    if processes > 1:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            "-m", "refseg.cli", *args, "--out", str(out),
        ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"batch run failed: {done.stderr.strip().splitlines()[-1:]}")
    match = re.search(r"([\d.]+) images/s", done.stdout)
    return {"wall_s": wall, "images_per_s": float(match.group(1)) if match else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--phrases", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()

    answer = format_answer([((120, 90, 520, 400), [(320, 245)])])
    with (
        tempfile.TemporaryDirectory(prefix="refseg-bench-batch-") as tmp,
        ChatServer(lambda request: answer) as server,
    ):
        work = Path(tmp)
        photos = work / "photos"
        photos.mkdir()
        make_images(photos, options.images)
        phrases = work / "phrases.txt"
        phrases.write_text("".join(f"thing {k}\n" for k in range(options.phrases)))
        args = ["segment", "--batch", str(photos), "--phrases", str(phrases),
                "--grounder", f"openai:{server.url}#m"]  # fmt: skip
        load_before = [round(x, 2) for x in os.getloadavg()]
        runs: dict[int, list[dict]] = {1: [], options.processes: []}
        for round_ in range(options.rounds):
            for processes in runs:
                out = work / f"out-{processes}-{round_}"
                runs[processes].append(run_once(processes, args, out))
        median = statistics.median
        figures = {
            "images": options.images,
            "phrases_per_image": options.phrases,
            "cores": len(os.sched_getaffinity(0)),
            "rounds": options.rounds,
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
        for processes, results in runs.items():
            figures[f"{processes}_process"] = {
                "wall_s_median": round(median(r["wall_s"] for r in results), 2),
                "images_per_s_median": round(median(r["images_per_s"] for r in results), 3),
                "runs": [{k: round(v, 3) for k, v in r.items()} for r in results],
            }
        one, many = figures["1_process"], figures[f"{options.processes}_process"]
        figures["speedup_images_per_s"] = round(
            many["images_per_s_median"] / one["images_per_s_median"], 3
        )
        figures["speedup_wall"] = round(one["wall_s_median"] / many["wall_s_median"], 3)
        print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
