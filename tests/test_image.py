import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from refseg.errors import InputError
from refseg.image import ImageTooLarge, image_digest, image_size, load_image


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_rgb_png_from_path(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "a.png"
    Image.fromarray(array).save(path)
    np.testing.assert_array_equal(load_image(path), array)


@pytest.mark.parametrize(
    "mode",
    ["L", "P", "RGBA", "CMYK", "LA", "I;16"],
)
def test_modes_become_rgb_uint8(mode):
    base = Image.new("RGB", (12, 8), (200, 100, 50))
    if mode == "I;16":
        image = Image.fromarray(np.full((8, 12), 65535, dtype=np.uint16))
        fmt = "PNG"
    else:
        image = base.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "LA" else "PNG")
    out = load_image(encode(image, fmt))
    assert out.dtype == np.uint8 and out.shape == (8, 12, 3)
    if mode == "I;16":
        assert (out == 255).all()  # 16-bit white stays white, not clipped garbage


def test_rgba_transparency_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert (load_image(encode(image)) == 255).all()


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW when displayed
    out = load_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)  # displayed as portrait
    assert out[:10].mean() > 200  # the stripe is now on top


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
    ],
)
def test_unreadable_bytes(data, message):
    with pytest.raises(InputError, match=message):
        load_image(data)


def test_truncated_and_empty_files(tmp_path):
    full = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(full[: len(full) // 3])
    with pytest.raises(InputError, match="not a readable image"):
        load_image(truncated)
    empty = tmp_path / "e.png"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(empty)
    with pytest.raises(InputError, match="no such image"):
        load_image(tmp_path / "missing.png")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming a huge size: the IHDR says so, no pixel data follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    idat = zlib.compress(b"\x00" * 16)  # far too little data: decoding would fail
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_pixel_limit_refuses_before_decoding(monkeypatch):
    data = png_header_only(9_000, 9_000)  # 81 Mpx: over the default limit
    with pytest.raises(InputError, match="over the limit"):
        load_image(data)
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "100")
    with pytest.raises(InputError, match="over the limit"):
        load_image(encode(Image.new("RGB", (20, 20))))


def test_arrays_and_digest():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = load_image(gray)
    assert out.shape == (3, 4, 3)
    assert image_digest(out) == image_digest(out.copy())
    assert image_digest(out) != image_digest(out[::-1].copy())
    with pytest.raises(InputError):
        load_image(np.zeros((2, 2, 5), np.uint8))


# --- allow-listed decoders ------------------------------------------------------------------

EPS_LOOP = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n{ } loop\n"


def _saved(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_allowed_formats_decode(fmt):
    pixels = np.zeros((6, 10, 3), np.uint8)
    pixels[:, :5] = 200
    decoded = load_image(_saved(Image.fromarray(pixels), fmt))
    assert decoded.shape == (6, 10, 3)
    assert decoded[:, :4].mean() > 150 and decoded[:, 6:].mean() < 60
    assert image_size(_saved(Image.fromarray(pixels), fmt)) == (10, 6)


@pytest.mark.parametrize("fmt", ["TGA", "PCX", "SGI", "ICO", "PPM"])
def test_other_pillow_formats_are_refused(fmt):
    data = _saved(Image.new("RGB", (8, 8), (9, 9, 9)), fmt)
    Image.open(io.BytesIO(data)).load()  # Pillow itself reads it...
    with pytest.raises(InputError, match="accepted format"):
        load_image(data)  # ...refseg does not hand it to that decoder
    with pytest.raises(InputError, match="accepted format"):
        image_size(data)


def test_eps_never_reaches_ghostscript(tmp_path):
    path = tmp_path / "loop.eps"
    path.write_bytes(EPS_LOOP)
    for source in (EPS_LOOP, path):
        with pytest.raises(InputError, match="accepted format") as info:
            load_image(source)
        assert "\n" not in str(info.value)


def test_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((250, 250, 250), (0, 0, 0))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).mean() > 200


def test_phone_jpeg_with_multi_picture_data_is_accepted():
    buffer = io.BytesIO()
    first = Image.new("RGB", (16, 12), (200, 10, 10))
    first.save(buffer, format="MPO", save_all=True, append_images=[Image.new("RGB", (16, 12))])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert load_image(buffer.getvalue())[..., 0].mean() > 150


def test_over_the_pixel_limit_is_its_own_error_type(monkeypatch):
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "100")
    data = encode(Image.new("RGB", (20, 20)))
    with pytest.raises(ImageTooLarge):
        load_image(data)
    assert image_size(data) == (20, 20)  # the header alone is always readable
    monkeypatch.setenv("REFSEG_MAX_PIXELS", "lots")
    with pytest.raises(InputError, match="REFSEG_MAX_PIXELS must be a positive integer"):
        load_image(data)


def test_a_callers_pil_image_is_not_turned_in_place() -> None:
    """Files refseg opens are turned upright in place (one copy less); a PIL image the caller
    opened is theirs and stays as it was."""
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed turned 90 degrees
    buffer = io.BytesIO()
    Image.new("RGB", (4, 2), (10, 20, 30)).save(buffer, format="JPEG", exif=exif.tobytes())
    theirs = Image.open(io.BytesIO(buffer.getvalue()))
    assert load_image(theirs).shape == (4, 2, 3)  # displayed orientation
    assert theirs.size == (4, 2) and theirs.getexif().get(0x0112) == 6
    assert load_image(buffer.getvalue()).shape == (4, 2, 3)  # opened by refseg: same pixels
