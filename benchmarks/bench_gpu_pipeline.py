"""The GPU pipeline's throughput (grounder + segmenter), printed as JSON; skips without CUDA.

Real-size model *configurations* with random weights: Qwen3-VL-2B-Instruct (the default
grounder) and SAM 2 hiera-small. The cost of a forward pass or of generating a fixed number of
tokens does not depend on the weight values, only on shapes, dtypes and kernels, so no download
is needed and the figures hold for the trained models; what random weights cannot tell is how
many tokens a trained model writes, hence the fixed ``--new-tokens`` (about what one grounded
box and point take in refseg's answer format). Measured, in images/s:

* ``hf_generate``: Qwen3-VL ``generate`` on a batch of images, one phrase each;
* ``sam2_embed_once``: SAM 2 encodes each image once, then decodes ``--phrases`` box prompts on
  the shared embedding (refseg's pipeline);
* ``sam2_reencode_per_phrase``: the image re-encoded for every phrase (Seg-Zero's loop);
* ``pipeline_embed_once`` / ``pipeline_reencode``: generate + SAM 2 end to end;
* ``vllm_generate``: vLLM generation where vLLM is installed and ``--vllm-model`` names a model
  folder (vLLM loads weights and a tokenizer from disk); otherwise reported as skipped;
* the box-decoder head (``refseg.segmentation.boxdec``) is reported as not measured here.

Budget: the default sizes are meant to finish well under 8 minutes on one H200 (model set-up
included; an estimate, not yet run on a GPU); ``--deadline`` (seconds) skips the parts not started
in time and marks them. ``--cpu-smoke-test`` runs tiny sizes on the CPU to check the script.
Without CUDA it prints one JSON line ``{"skipped": ...}`` and exits 0 (CI checks exactly that).

Usage: python benchmarks/bench_gpu_pipeline.py [--batch 8] [--phrases 4] [--new-tokens 48]
       [--repeats 3] [--image-size 640x480] [--vllm-model DIR] [--deadline 420]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

#: SAM 2 (2.1) hiera-small's image encoder; prompt encoder and mask decoder are the defaults.
SAM2_HIERA_SMALL = {
    "hidden_size": 96,
    "num_attention_heads": 1,
    "blocks_per_stage": [1, 2, 11, 2],
    "embed_dim_per_stage": [96, 192, 384, 768],
    "num_attention_heads_per_stage": [1, 2, 4, 8],
    "window_size_per_stage": [8, 4, 14, 7],
    "global_attention_blocks": [7, 10, 13],
    "window_positional_embedding_background_size": [7, 7],
}


def skip_line() -> str | None:
    """The one-line reason to skip, or None when a CUDA device is usable."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device"
    return None


def qwen_model(device: str, dtype, tiny: bool):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from refseg.testing.real_size import MODELS  # Qwen3-VL-2B-Instruct's published sizes

    published = MODELS["qwen3-vl-2b"]
    settings = {
        "text_config": {**published["text"], "vocab_size": 151936},
        "vision_config": dict(published["vision"]),
        "tie_word_embeddings": True,
    }
    if tiny:  # a smoke-test size for checking this script on a CPU
        settings["text_config"].update(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16,
        )  # fmt: skip
        settings["vision_config"].update(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
            deepstack_visual_indexes=[0],
        )  # fmt: skip
    config = Qwen3VLConfig(**settings)
    import torch

    with torch.device(device):
        model = Qwen3VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval(), config


def sam2_model(device: str, dtype):
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model, Sam2VisionConfig

    backbone = dict(SAM2_HIERA_SMALL)  # small enough for the CPU smoke test as it is
    vision = Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**backbone))
    config = Sam2Config(vision_config=vision)
    import torch

    with torch.device(device):
        model = Sam2Model._from_config(config, dtype=dtype)
    return model.eval()


def qwen_inputs(config, batch: int, height: int, width: int, device: str, dtype):
    """Token ids and patches as Qwen3-VL's processor lays them out (no tokenizer needed)."""
    import torch

    vision = config.vision_config
    patch, merge = vision.patch_size, vision.spatial_merge_size
    grid_h, grid_w = height // patch // merge * merge, width // patch // merge * merge
    per_image = grid_h * grid_w // (merge * merge)
    prompt = torch.randint(1000, 100000, (batch, 24), device=device)
    ids = torch.cat(
        [
            prompt[:, :8],
            torch.full((batch, 1), config.vision_start_token_id, device=device),
            torch.full((batch, per_image), config.image_token_id, device=device),
            torch.full((batch, 1), config.vision_end_token_id, device=device),
            prompt[:, 8:],
        ],
        dim=1,
    )
    channels = 3 * vision.temporal_patch_size * patch * patch
    pixels = torch.randn(batch * grid_h * grid_w, channels, device=device, dtype=dtype)
    grid = torch.tensor([[1, grid_h, grid_w]] * batch, device=device)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": pixels,
        "image_grid_thw": grid,
    }


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs after one warm-up."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8, help="images per generate call")
    parser.add_argument("--phrases", type=int, default=4, help="phrases (box prompts) per image")
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--vllm-model", default=None, help="a model folder for vLLM")
    parser.add_argument("--deadline", type=float, default=420.0, help="seconds")
    parser.add_argument(
        "--cpu-smoke-test", action="store_true", help="tiny configs on the CPU (checks the script)"
    )
    args = parser.parse_args()

    reason = None if args.cpu_smoke_test else skip_line()
    if reason is not None:
        print(json.dumps({"skipped": f"bench_gpu_pipeline: {reason}; nothing measured"}))
        return

    import torch

    started = time.perf_counter()
    device = "cpu" if args.cpu_smoke_test else "cuda"
    dtype = torch.float32 if args.cpu_smoke_test else torch.bfloat16
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    width, height = (int(v) for v in args.image_size.lower().split("x"))
    if args.cpu_smoke_test:
        args.batch, args.phrases, args.new_tokens, args.repeats = 1, 2, 4, 1
        width, height = 128, 96
    torch.manual_seed(0)
    out: dict = {
        "note": "random weights: cost does not depend on weight values (shapes, dtypes and "
        "kernels set it); generation length is fixed at new_tokens",
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke test)",
        "dtype": str(dtype).replace("torch.", ""),
        "batch": args.batch,
        "phrases_per_image": args.phrases,
        "new_tokens": args.new_tokens,
        "image_size": [width, height],
        "repeats": args.repeats,
        "results": {},
    }
    results = out["results"]

    def left() -> float:
        return args.deadline - (time.perf_counter() - started)

    qwen, config = qwen_model(device, dtype, args.cpu_smoke_test)
    inputs = qwen_inputs(config, args.batch, height, width, device, dtype)

    @torch.inference_mode()
    def generate():
        return qwen.generate(
            **inputs,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )

    generate_s = timed(generate, args.repeats, sync)
    results["hf_generate"] = {
        "seconds_per_batch": round(generate_s, 4),
        "images_per_s": round(args.batch / generate_s, 2),
        "tokens_per_s": round(args.batch * args.new_tokens / generate_s, 1),
    }
    qwen = None  # free its memory before SAM 2 is built
    if device == "cuda":
        torch.cuda.empty_cache()

    sam = sam2_model(device, dtype)
    size = sam.config.vision_config.backbone_config.image_size[0]
    pixels = torch.randn(args.batch, 3, size, size, device=device, dtype=dtype)
    boxes = torch.tensor(
        [[[100.0, 120.0, 500.0, 600.0]] * args.phrases] * args.batch, device=device
    )

    @torch.inference_mode()
    def embed_once():
        embeddings = sam.get_image_embeddings(pixels)
        for index in range(args.phrases):  # one decoder call per phrase, shared embedding
            sam(image_embeddings=embeddings, input_boxes=boxes[:, index : index + 1],
                multimask_output=False)  # fmt: skip

    @torch.inference_mode()
    def reencode():
        for index in range(args.phrases):  # Seg-Zero: the whole model once per phrase
            sam(pixel_values=pixels, input_boxes=boxes[:, index : index + 1],
                multimask_output=False)  # fmt: skip

    if left() > 0:
        once_s = timed(embed_once, args.repeats, sync)
        results["sam2_embed_once"] = {"images_per_s": round(args.batch / once_s, 2)}
        results["pipeline_embed_once"] = {
            "images_per_s": round(args.batch / (generate_s + once_s), 2)
        }
    if left() > 0:
        again_s = timed(reencode, args.repeats, sync)
        results["sam2_reencode_per_phrase"] = {"images_per_s": round(args.batch / again_s, 2)}
        results["pipeline_reencode"] = {
            "images_per_s": round(args.batch / (generate_s + again_s), 2)
        }
        if "sam2_embed_once" in results:
            results["embed_once_speedup"] = round(again_s / once_s, 2)
    sam = None

    results["vllm_generate"] = vllm_figures(args, left())
    results["boxdec_head"] = {"skipped": "not measured by this script yet"}
    for name in ("sam2_embed_once", "sam2_reencode_per_phrase"):
        results.setdefault(name, {"skipped": "deadline reached"})
    out["seconds_total"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out, indent=1))


def vllm_figures(args: argparse.Namespace, seconds_left: float) -> dict:
    """vLLM generation images/s for ``--vllm-model`` (text-only prompts of the same length)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"skipped": "vLLM is not installed"}
    if not args.vllm_model:
        return {"skipped": "give --vllm-model DIR (vLLM loads weights and tokenizer from disk)"}
    if seconds_left < 120:
        return {"skipped": "deadline reached"}
    from vllm import LLM, SamplingParams

    llm = LLM(model=args.vllm_model, max_model_len=4096, gpu_memory_utilization=0.5)
    params = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, ignore_eos=True)
    prompts = [{"prompt_token_ids": list(range(1000, 1400))} for _ in range(args.batch)]
    llm.generate(prompts, params)
    start = time.perf_counter()
    for _ in range(args.repeats):
        llm.generate(prompts, params)
    seconds = (time.perf_counter() - start) / args.repeats
    return {"images_per_s": round(args.batch / seconds, 2), "note": "text tokens, no image"}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
