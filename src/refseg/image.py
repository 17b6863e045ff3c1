"""Image loading with the safety and colour handling a CLI user needs.

Everything downstream works on ``uint8`` RGB arrays of shape ``(H, W, 3)`` in the orientation the
image is *displayed* in (EXIF orientation applied), so coordinates given by users, models and
ground truth all refer to the same pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from refseg.errors import InputError
from refseg.limits import DEFAULT_MAX_PIXELS, max_pixels

__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "ImageTooLarge",
    "allow_pixels",
    "image_digest",
    "image_size",
    "load_image",
    "max_pixels",
]

#: The only decoders refseg hands outside bytes to (Pillow's format names; ``JPEG`` includes
#: the multi-picture JPEGs phones write). Pillow would otherwise try every format it knows,
#: including EPS through an external Ghostscript interpreter (a ``{ } loop`` pins a CPU for
#: ever) and rarely used parsers nobody here needs. GIF and TIFF give their first frame.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "AVIF", "BMP", "TIFF", "GIF")

ImageLike = str | os.PathLike | bytes | np.ndarray | Image.Image


class ImageTooLarge(InputError):
    """The image has more pixels than the limit (the server answers 413, not 422)."""


def _formats() -> list[str]:
    """The allowed formats this Pillow build can decode (AVIF and WebP are optional)."""
    Image.init()
    return [name for name in ALLOWED_FORMATS if name in Image.OPEN]


def allow_pixels(limit: int) -> None:
    """Raise Pillow's own decompression-bomb bound to at least ``limit`` pixels.

    Pillow refuses, in :func:`Image.open`, any image over twice its ``MAX_IMAGE_PIXELS``
    (89,478,485: about 179 M pixels), whatever refseg's limit says; so a ``REFSEG_MAX_PIXELS``
    (or ``serve --max-pixels``) above that was silently capped. refseg checks its own limit on
    the header before decoding anything, so Pillow's bound is raised to match it (never
    lowered: other callers in the process keep at least the bound they had). Pillow still
    refuses images over twice the raised bound, as a second line of defence.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and limit > current:
        Image.MAX_IMAGE_PIXELS = limit


def _open(handle: io.BytesIO | Path, name: str) -> Image.Image:
    """``Image.open`` restricted to :data:`ALLOWED_FORMATS`, with a one-line refusal."""
    try:
        return Image.open(handle, formats=_formats())
    except Image.UnidentifiedImageError as exc:
        raise InputError(
            f"{name}: not a readable image in an accepted format ({', '.join(ALLOWED_FORMATS)})"
        ) from exc


def image_size(data: bytes, *, name: str = "image", limit: int | None = None) -> tuple[int, int]:
    """``(width, height)`` from the header of encoded ``data``, decoding no pixels.

    Lets a caller refuse work that depends on the size (the pixel limit, pixels x prompts)
    before paying for the decode. Raises :class:`InputError` for anything unreadable.
    ``limit`` (default: :func:`max_pixels`) is the pixel limit the caller will apply: Pillow's
    own bound is raised to it (:func:`allow_pixels`) so that sizes within it can be read.
    """
    if not data:
        raise InputError(f"{name} is empty (0 bytes)")
    allow_pixels(max_pixels() if limit is None else limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open(io.BytesIO(data), name) as probe:
                return probe.size
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:  # PIL raises many types for corrupt headers
        raise InputError(f"{name}: not a readable image ({type(exc).__name__})") from exc


def load_image(source: ImageLike, *, limit: int | None = None) -> np.ndarray:
    """Load ``source`` as a displayed-orientation ``uint8`` RGB array ``(H, W, 3)``.

    Accepts a path, encoded bytes, a PIL image or an array (``HxW`` gray, ``HxWx3`` RGB,
    ``HxWx4`` RGBA; ``uint8`` or ``uint16``). 16-bit, CMYK, palette, RGBA and grayscale inputs
    are converted; transparency is composited on white. Raises :class:`InputError` with one line
    for anything unreadable or over the pixel limit.
    """
    limit = max_pixels() if limit is None else limit
    allow_pixels(limit)
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, limit, name="image")
    name = "image bytes"
    if isinstance(source, bytes):
        if not source:
            raise InputError("image is empty (0 bytes)")
        handle: io.BytesIO | Path = io.BytesIO(source)
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise InputError(f"{name}: no such image file")
        if path.stat().st_size == 0:
            raise InputError(f"{name}: file is empty (0 bytes)")
        handle = path
    try:
        with warnings.catch_warnings():
            # refseg applies its own limit below; PIL's warning threshold would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(handle, name)
            # Header only so far: check the size before decoding any pixels.
            width, height = image.size
            if width * height > limit:
                raise ImageTooLarge(
                    f"{name}: {width}x{height} = {width * height} pixels is over the limit of "
                    f"{limit} (set REFSEG_MAX_PIXELS to raise it)"
                )
            image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: refused as a decompression bomb ({exc})") from exc
    except Exception as exc:  # PIL raises many types for corrupt data
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"{name}: not a readable image ({type(exc).__name__}: {detail})") from exc
    return _from_pil(image, limit, name=name, owned=True)


def _from_pil(image: Image.Image, limit: int, *, name: str, owned: bool = False) -> np.ndarray:
    """The RGB array of a PIL image; ``owned``: refseg opened it, so it may be changed in place
    (a caller's own image never is)."""
    width, height = image.size
    if width * height > limit:
        raise ImageTooLarge(f"{name}: {width}x{height} pixels is over the limit of {limit}")
    if width == 0 or height == 0:
        raise InputError(f"{name}: image has no pixels")
    try:  # in place when the image is ours: the default copies it even when nothing turns
        if owned:
            ImageOps.exif_transpose(image, in_place=True)
        else:
            image = ImageOps.exif_transpose(image) or image
    except Exception:  # a broken EXIF block should not make the pixels unusable
        pass
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image)
        if array.dtype != np.uint8:
            array = _scale_to_uint8(array)
        return _from_array(array)
    if mode == "P" or mode in ("LA", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":  # convert() copies even an RGB image
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit data (or wider integers holding 16-bit values) scaled to 0-255."""
    if array.dtype != np.uint16 and array.max(initial=0) <= 255:
        return array.clip(0, 255).astype(np.uint8)
    return np.clip(np.round(array.astype(np.float64) / 257.0), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint16 or (array.dtype.kind in "iu" and array.dtype != np.uint8):
        array = _scale_to_uint8(array)
    elif array.dtype.kind == "f":
        array = np.clip(np.round(array * (255.0 if array.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        array = array.astype(np.uint8)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        rgb = array[:, :, :3].astype(np.float32)
        alpha = array[:, :, 3:4].astype(np.float32) / 255.0
        array = np.round(rgb * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.uint8)


def image_digest(image: np.ndarray) -> str:
    """A content hash of the decoded pixels, used to share embeddings between requests."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()
