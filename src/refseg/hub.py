"""Loading transformers checkpoints the way users name them: a hub id or a local folder.

Shared by the torch backends (Qwen-VL grounders, SAM / SAM 2 segmenters) so that every model
fails the same way: a hub id is looked up in the local cache first with no network at all,
``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` stop there, and a download gets a short timeout.
Every failure is one line naming the id and saying how to pass a local folder instead. Device and
dtype choices are checked here too, so "cuda" on a machine without a GPU is one clear line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from refseg.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
DOWNLOAD_TIMEOUT_S = 10.0


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def offline(local_files_only: bool | None = None) -> bool:
    """Whether downloads are off (the argument, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE``)."""
    if local_files_only:
        return True
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(
        f.strip().lower() in ("1", "true", "yes", "on") for f in flags
    )


def looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else the user meant as a folder."""
    return (
        source.startswith((".", "/", "~"))
        or "\\" in source
        or source.count("/") > 1
        or os.path.isabs(source)
    )


def resolve_source(
    source: str | Path,
    family: str,
    *,
    patterns: Sequence[str],
    local_files_only: bool | None = None,
    revision: str | None = None,
) -> Path:
    """The local folder holding checkpoint ``source`` (a folder, or a hub id cached or fetched).

    ``family`` is the spec prefix (``qwen3-vl``, ``sam2`` ...) used in messages; ``patterns``
    are the files fetched for a hub id. Only when the cache misses and downloads are allowed is
    the hub asked, with a short timeout.
    """
    text = str(source).strip()
    if not text:
        raise InputError(f"{family}: the model id is empty; give a hub id or a local folder")
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ModelError(
                f"{family}:{text}: no config.json in this folder; pass a checkpoint folder "
                "written by save_pretrained (config.json, *.safetensors, ...)"
            )
        return folder
    if isinstance(source, Path) or looks_like_path(text) or folder.exists():
        raise ModelError(f"{family}:{text}: no such model folder")
    if not HUB_ID.match(text):
        raise ModelError(f"{family}:{text}: neither a local folder nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    local = f"{family}:/path/to/{text.rsplit('/', 1)[-1]}"
    try:
        cached = Path(
            snapshot_download(
                text, revision=revision, allow_patterns=list(patterns), local_files_only=True
            )
        )
        if (cached / "config.json").is_file() and any(cached.glob("*.safetensors")):
            return cached
    except Exception:
        pass  # not (fully) cached: the hub is asked below, if allowed
    if offline(local_files_only):
        raise ModelError(
            f"model {text!r} is not in the local Hugging Face cache and downloads are off "
            f"(local_files_only / HF_HUB_OFFLINE); download it where the hub is reachable, "
            f"or pass a local folder: {local}"
        )
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(
                text,
                revision=revision,
                allow_patterns=list(patterns),
                etag_timeout=DOWNLOAD_TIMEOUT_S,
            )
        )
    except GatedRepoError as exc:
        raise ModelError(
            f"model {text!r} is gated: accept its licence on the hub and log in "
            f"(hf auth login), or pass a local folder: {local}"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"no model {text!r} on the hub (check the id; private models need a login), "
            f"or pass a local folder: {local}"
        ) from exc
    except Exception as exc:
        raise ModelError(
            f"cannot fetch model {text!r}: not in the local cache and the hub is not reachable "
            f"({first_line(exc)}); download it where the hub is reachable and pass the folder: "
            f"{local}"
        ) from exc


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when torch sees it, else CPU. A named device must exist."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"device {str(device)!r} was asked for but this torch {torch.__version__} sees no "
                "CUDA GPU; use device cpu (or auto)"
            )
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ModelError(
                f"device {str(device)!r} was asked for but only {torch.cuda.device_count()} "
                "CUDA GPU(s) exist"
            )
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {str(device)!r} was asked for but MPS is not available")
    elif chosen.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {str(device)!r}; use auto, cpu, cuda or cuda:N")
    return chosen


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: bfloat16 on CUDA, float32 elsewhere; else a named float type."""
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.bfloat16, torch.float16):
            return dtype
        raise InputError(f"unsupported dtype {dtype}; use float32, bfloat16 or float16")
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in _DTYPE_NAMES:
        raise InputError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return getattr(torch, _DTYPE_NAMES[key])
