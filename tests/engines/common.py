"""What the engine tests share: the photo, the phrase and the answers the tiny models learn."""

from pathlib import Path

from refseg.protocol import format_answer

ASTRONAUT = Path(__file__).resolve().parents[2] / "src" / "refseg" / "assets" / "astronaut.jpg"
PHRASE = "the face"
#: Qwen3-VL answers on the 0-1000 grid; Qwen2.5-VL in pixels of its resized input (the tiny
#: model's 64-token bound makes the 512x512 photo a 256x256 frame).
ANSWERS = {
    "qwen3-vl": format_answer([((273, 39, 625, 390), [(449, 215)])]),
    "qwen2.5-vl": format_answer([((70, 10, 160, 100), [(115, 55)])]),
}
