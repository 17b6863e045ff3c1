"""Random-weight SAM 2 video and SAM 3 tracker models, tiny or at real size, for tests and
benchmarks of :mod:`refseg.video.memory` (no such weights can be downloaded here).

The tiny configurations keep every part of the real models (Hiera or ViT image encoder, FPN,
memory attention, memory encoder, object pointers, occlusion head) at a width that runs in
milliseconds on a CPU. Two constraints come from transformers' code and are kept: the memory
encoder's output is 64 channels wide (the memory attention's key/value width is fixed at 64),
and the model's hidden width must exceed it (object pointers are split into 64-wide tokens).
``real_size_sam2_video`` is transformers' default ``Sam2VideoConfig``, the SAM 2.1 Hiera-tiny
architecture (38.9 M parameters); its cost does not depend on the weight values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Square input side of the tiny models (SAM 2: 8x8 image embeddings; SAM 3: patch 14 -> 8x8).
SAM2_SIZE = 128
SAM3_SIZE = 112
_DECODER = {
    "hidden_size": 128,
    "mlp_dim": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "iou_head_hidden_dim": 32,
}
_MEMORY = {
    "memory_attention_hidden_size": 128,
    "memory_attention_num_layers": 1,
    "memory_attention_feed_forward_hidden_size": 64,
    "memory_encoder_hidden_size": 128,
    "memory_encoder_output_channels": 64,
    "mask_downsampler_embed_dim": 128,
    "memory_fuser_embed_dim": 128,
    "memory_fuser_intermediate_dim": 64,
}


def tiny_sam2_vision_config(size: int = SAM2_SIZE, fpn_hidden: int = 128) -> dict[str, Any]:
    """A tiny SAM 2 image encoder (4-stage Hiera, ``size`` px input, 16 px patches at the last
    level), shared by the image-segmenter tests (``Sam2Config``) and the video models here."""
    return {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": 8,
            "image_size": [size, size],
            "blocks_per_stage": [1, 1, 2, 1],
            "embed_dim_per_stage": [8, 16, 32, 64],
            "num_attention_heads_per_stage": [1, 1, 1, 1],
            "window_size_per_stage": [4, 4, 4, 2],
            "global_attention_blocks": [3],
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": [64, 32, 16, 8],
        "backbone_feature_sizes": [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        "fpn_hidden_size": fpn_hidden,
    }


def tiny_sam2_video_config() -> Any:
    """A ~1 M-parameter ``Sam2VideoConfig`` (Hiera encoder, 128 px input)."""
    import transformers

    size = SAM2_SIZE
    return transformers.Sam2VideoConfig(
        vision_config=tiny_sam2_vision_config(size),
        prompt_encoder_config={
            "hidden_size": 128,
            "image_size": size,
            "patch_size": 16,
            "mask_input_channels": 8,
        },
        mask_decoder_config=_DECODER,
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        **_MEMORY,
    )


def tiny_sam3_tracker_config() -> Any:
    """A ~1.7 M-parameter ``Sam3TrackerVideoConfig`` (ViT encoder, patch 14, 112 px input)."""
    import transformers

    size, patch = SAM3_SIZE, 14
    grid = size // patch
    return transformers.Sam3TrackerVideoConfig(
        vision_config={
            "model_type": "sam3_vision_model",
            "backbone_config": {
                "model_type": "sam3_vit_model",
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "image_size": size,
                "patch_size": patch,
                "window_size": 4,
                "global_attn_indexes": [1],
                "pretrain_image_size": size,
            },
            "fpn_hidden_size": 128,
            "backbone_feature_sizes": [[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
        },
        prompt_encoder_config={
            "hidden_size": 128,
            "image_size": size,
            "patch_size": patch,
            "mask_input_channels": 8,
        },
        mask_decoder_config=_DECODER,
        memory_attention_rope_feat_sizes=[grid, grid],
        image_size=size,
        **_MEMORY,
    )


def real_size_sam2_video_config() -> Any:
    """transformers' default ``Sam2VideoConfig``: the SAM 2.1 Hiera-tiny architecture."""
    import transformers

    return transformers.Sam2VideoConfig()


def save_tracker_model(
    folder: str | Path, family: str = "sam2-video", *, size: str = "tiny", seed: int = 0
) -> Path:
    """Write a random-weight ``family`` model (``sam2-video`` or ``sam3-tracker``) to ``folder``
    with ``save_pretrained``; ``size`` is ``tiny`` or (SAM 2 only) ``real``.

    Random initialisation gives near-constant mask logits; every matrix is rescaled to unit gain
    so that thresholded masks vary with the image and the prompt (as the image-segmenter tests
    do), and the occlusion head is biased to "present"; that is what the tracker's shapes and
    bookkeeping need. Its masks follow nothing in particular."""
    import math

    import torch
    import transformers

    if family == "sam2-video":
        config = tiny_sam2_video_config() if size == "tiny" else real_size_sam2_video_config()
        model_cls = transformers.Sam2VideoModel
    elif family == "sam3-tracker" and size == "tiny":
        config, model_cls = tiny_sam3_tracker_config(), transformers.Sam3TrackerVideoModel
    else:
        raise ValueError(f"no {size} {family} model here")
    torch.manual_seed(seed)
    model = model_cls(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "positional_embedding" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) / math.sqrt(param[0].numel()))
        # The occlusion head says "present": a random one says "absent" about half the time,
        # and SAM 2 then blanks the mask, which leaves nothing to follow.
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(8.0)
    out = Path(folder)
    model.save_pretrained(out)
    return out
