"""The grounder at real size on this machine's CPU: engines and weight formats side by side.

A Qwen3-VL-2B (or Qwen2.5-VL-3B) folder of the published configuration with random weights and
the real Qwen3 tokenizer (:mod:`refseg.testing.real_size`; cost does not depend on weight values)
is built once, exported to OpenVINO at each asked format through refseg's own export
(:mod:`refseg.grounding.ov_export`), and every engine answers the same 640x480 image and phrase
through refseg's grounder classes. Each engine runs in a child process of its own, one after
another (peak RSS is the child's; the load average is recorded before each).

Per engine: build/load seconds (export excluded; reported apart), first-token seconds (prefill:
the vision encoder and the prompt), seconds per further token, and the seconds of each answer
kind estimated as first token + (tokens - 1) x per token, with the answer kinds' token counts
measured with the real tokenizer (a box + point answer; outlines of 8, 16 and 32 vertices in
the protocol's path encoding). Generation is forced to the asked length (transformers:
``min_new_tokens``; OpenVINO: ``ignore_eos``), since random weights stop anywhere.

    python benchmarks/bench_cpu_grounder.py --work /tmp/bench-grounder \\
        --engines transformers:fp32,transformers:bf16,openvino:int8,openvino:int4 \\
        --image-sizes 320x240,448x336,640x480,960x720,1280x960

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PHRASE = "the man in red on the left"
SIZE = (640, 480)


def answer_tokens(name: str) -> dict[str, int]:
    """Tokens of each answer kind with the real tokenizer, for a typical 640x480 object."""
    import numpy as np

    from refseg.grounding.coords import Convention, from_pixels
    from refseg.paths import trace
    from refseg.protocol import format_answer
    from refseg.testing.real_size import MODELS, real_tokenizer

    tokenizer = real_tokenizer()
    facts = MODELS[name]["processor"]
    convention = (
        Convention("norm1000")
        if MODELS[name]["family"] == "qwen3-vl"
        else Convention(
            "resized", facts["min_pixels"], facts["max_pixels"], facts["patch_size"] * 2
        )
    )
    width, height = SIZE
    yy, xx = np.mgrid[:height, :width]
    blob = ((xx - 250) / 120.0) ** 2 + ((yy - 230) / 150.0) ** 2 < 1  # a person-sized ellipse
    box, points = from_pixels((130, 80, 370, 380), [(250, 230)], convention, width, height)
    frame_w, frame_h = convention.frame(width, height)
    out = {"box_point": len(tokenizer(format_answer([(box, points)])).input_ids)}
    for vertices in (8, 16, 32):
        rings = [r * (frame_w / width, frame_h / height) for r in trace(blob, vertices)]
        text = format_answer([(box, [], rings)])  # the path SFT targets' form: no point
        out[f"path_{vertices}"] = len(tokenizer(text).input_ids)
    return out


def image_token_curve(grounder, sizes: list[tuple[int, int]]) -> list[dict]:
    """OpenVINO only: first-token seconds (best of 3) for random images of each size."""
    import numpy as np

    from refseg.grounding.openvino import image_tensor

    rng = np.random.default_rng(0)
    out = []
    for width, height in sizes:
        pixels = image_tensor(rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8))
        config = grounder._generation_config(1)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            result = grounder.pipeline.generate(
                grounder.prompt(PHRASE), images=[pixels], generation_config=config
            )
            best = min(best, time.perf_counter() - start)
        frame_w, frame_h = grounder.resized_size(width, height)
        out.append(
            {
                "image": f"{width}x{height}",
                "image_tokens": (frame_w // grounder.factor) * (frame_h // grounder.factor),
                "prompt_tokens": int(result.perf_metrics.get_num_input_tokens()),
                "first_token_s": round(best, 2),
            }
        )
    return out


def child(
    engine: str, folder: str, tokens: int, repeats: int, sizes: list[tuple[int, int]]
) -> dict:
    """One engine's figures (run in a fresh process)."""
    import numpy as np

    from refseg.grounding import load_grounder

    kind, weights = engine.split(":")
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    start = time.perf_counter()
    if kind == "openvino":
        spec = f"qwen3-vl:{folder};engine=openvino;weights={weights}"
        grounder = load_grounder(spec, max_new_tokens=tokens)
    else:
        dtype = {"fp32": "float32", "bf16": "bfloat16"}[weights]
        grounder = load_grounder(f"qwen3-vl:{folder}", dtype=dtype, max_new_tokens=tokens)
    load_s = time.perf_counter() - start
    runs = []
    for length in [1, tokens] * repeats:
        start = time.perf_counter()
        if kind == "openvino":
            config = grounder._generation_config(length)
            config.ignore_eos = True
            from refseg.grounding.openvino import image_tensor

            pixels = image_tensor(image[None])
            result = grounder.pipeline.generate(
                grounder.prompt(PHRASE), images=[pixels], generation_config=config
            )
            produced = int(result.perf_metrics.get_num_generated_tokens())
        else:
            import torch

            batch = grounder.prepare([image], [PHRASE])
            config = grounder._generation_config()
            config.max_new_tokens = config.min_new_tokens = length
            with torch.inference_mode():
                out = grounder.model.generate(**batch, generation_config=config)
            produced = int(out.shape[1] - batch["input_ids"].shape[1])
            prompt_tokens = int(batch["input_ids"].shape[1])
        runs.append({"tokens": produced, "seconds": time.perf_counter() - start})
    if kind == "openvino":
        prompt_tokens = int(result.perf_metrics.get_num_input_tokens())
    # the first pair is a warm-up (lazy compilation, caches): figures from the later ones
    firsts = [r["seconds"] for r in runs[2:] if r["tokens"] == 1] or [runs[0]["seconds"]]
    longs = [r for r in runs[2:] if r["tokens"] > 1] or [runs[1]]
    first = min(firsts)
    per_token = min((r["seconds"] - first) / (r["tokens"] - 1) for r in longs)
    figures = {
        "engine": engine,
        "load_s": round(load_s, 1),
        "prompt_tokens": prompt_tokens,
        "first_token_s": round(first, 2),
        "per_token_s": round(per_token, 4),
        "tokens_per_s": round(1 / per_token, 1),
        "runs": [{k: round(v, 2) for k, v in r.items()} for r in runs],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
    }
    if kind == "openvino" and sizes:
        figures["image_sizes"] = image_token_curve(grounder, sizes)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="model folder cache")
    parser.add_argument("--model", default="qwen3-vl-2b")
    parser.add_argument(
        "--engines", default="transformers:fp32,transformers:bf16,openvino:int8,openvino:int4"
    )
    parser.add_argument("--tokens", type=int, default=20, help="tokens of the long run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--image-sizes",
        default="",
        help="OpenVINO engines: first token against image size, e.g. 320x240,640x480",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.work / args.model
    if args.child:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.image_sizes.split(",") if s]
        print(json.dumps(child(args.child, str(folder), args.tokens, args.repeats, sizes)))
        return
    from refseg.grounding.ov_export import export_model
    from refseg.testing.real_size import build_real_size

    document: dict = {"model": args.model, "image": list(SIZE), "phrase": PHRASE}
    document["cores"] = len(os.sched_getaffinity(0))
    document["weights"] = "random (cost does not depend on weight values)"
    if not (folder / "config.json").is_file():
        start = time.perf_counter()
        build_real_size(folder, args.model, dtype="bfloat16")
        document["build_s"] = round(time.perf_counter() - start, 1)
    document["answer_tokens"] = answer_tokens(args.model)
    document["exports"] = {}
    results = []
    for engine in args.engines.split(","):
        kind, weights = engine.split(":")
        if kind == "openvino":
            start = time.perf_counter()
            export = export_model(folder, weights)
            manifest = json.loads((export / "refseg-openvino.json").read_text())
            document["exports"][weights] = {
                "export_s": manifest.get("export_s"),
                "check_s": round(time.perf_counter() - start, 1),
                "gb": round(sum(f.stat().st_size for f in export.iterdir()) / 1e9, 2),
            }
        load = [round(x, 2) for x in os.getloadavg()]
        done = subprocess.run(
            [sys.executable, __file__, "--work", str(args.work), "--model", args.model,
             "--tokens", str(args.tokens), "--repeats", str(args.repeats), "--child", engine,
             "--image-sizes", args.image_sizes],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            results.append({"engine": engine, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        figures["loadavg_before"] = load
        figures["answer_s"] = {
            kind: round(figures["first_token_s"] + (n - 1) * figures["per_token_s"], 1)
            for kind, n in document["answer_tokens"].items()
        }
        results.append(figures)
        print(json.dumps(figures), file=sys.stderr, flush=True)
    document["results"] = results
    print(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
