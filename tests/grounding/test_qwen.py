"""QwenGrounder end to end on tiny real-architecture checkpoints (no hub, no mocks of the model).

Random weights answer gibberish, so most tests assert on structure; the conversion test first
teaches a tiny model one answer (a few dozen optimiser steps) so the whole path - chat template,
processor resize, generate, decode, parse, coordinate convention - is checked against numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from refseg.errors import InputError, ModelError  # noqa: E402
from refseg.grounding import Grounding, load_grounder  # noqa: E402
from refseg.grounding.coords import smart_resize  # noqa: E402
from refseg.grounding.qwen import QwenGrounder  # noqa: E402
from refseg.protocol import format_answer  # noqa: E402
from refseg.testing.tiny_vlm import build_tiny_vlm, teach_answer  # noqa: E402

DIRS = {"qwen3-vl": "tiny_qwen3_vl_dir", "qwen2.5-vl": "tiny_qwen25_vl_dir"}
# Different sizes and aspect ratios, so left padding and per-image resizing both matter.
SIZES = [(120, 200), (300, 150), (64, 64), (90, 330)]
PHRASES = ["the red circle", "the blue square on the left", "dog", "a long thin thing"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls on a shared 2-core machine run several times faster on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(sizes=SIZES, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.fixture(scope="module", params=sorted(DIRS))
def grounder(request) -> QwenGrounder:
    folder = request.getfixturevalue(DIRS[request.param])
    return load_grounder(f"{request.param}:{folder}", max_new_tokens=6, batch_size=4)


def test_load_grounder_runs_the_real_generate_path(grounder):
    assert isinstance(grounder, QwenGrounder)
    assert grounder.device.type == "cpu" and grounder.model.dtype == torch.float32
    expected = "norm1000" if grounder.family == "qwen3-vl" else "resized"
    assert grounder.convention.kind == expected
    out = grounder.ground(_images(), PHRASES)
    assert len(out) == len(PHRASES)
    for g in out:
        assert isinstance(g, Grounding)
        assert g.raw_answer or g.parse_error  # gibberish is an error, never an exception
        if g.parse_error:
            assert not g.instances and not g.no_target


def test_batched_generation_equals_one_at_a_time(grounder):
    images = _images()
    batched = [g.raw_answer for g in grounder.ground(images, PHRASES)]
    single = [grounder.ground([im], [ph])[0].raw_answer for im, ph in zip(images, PHRASES)]
    assert batched == single
    # Stronger than comparing (possibly constant) gibberish: the next-token logits of each
    # left-padded row equal those of the row alone.
    with torch.inference_mode():
        together = grounder.model(**grounder.prepare(images, PHRASES)).logits[:, -1]
        for i, (im, ph) in enumerate(zip(images, PHRASES)):
            alone = grounder.model(**grounder.prepare([im], [ph])).logits[0, -1]
            torch.testing.assert_close(together[i], alone, atol=1e-4, rtol=1e-4)


def test_processor_resize_is_the_conventions_frame(grounder):
    images = _images([(120, 200), (1000, 37), (17, 23)])
    batch = grounder.prepare(images, ["x"] * 3)
    for image, (_, gh, gw) in zip(images, batch["image_grid_thw"].tolist()):
        h, w = image.shape[:2]
        expected = smart_resize(h, w, grounder.factor, grounder.min_pixels, grounder.max_pixels)
        assert (gh * grounder.patch_size, gw * grounder.patch_size) == expected


def test_prompt_carries_think_and_coordinate_wording(grounder):
    text = grounder.build_messages(None, "dog", think=True)[-1]["content"][1]["text"]
    assert "<think>" in text and '"dog"' in text
    wording = "0-1000 scale" if grounder.family == "qwen3-vl" else "pixel positions"
    assert wording in text
    rendered = grounder.processor.apply_chat_template(
        grounder.build_messages(None, "dog"), tokenize=False, add_generation_prompt=True
    )
    assert "<|vision_start|><|image_pad|><|vision_end|>" in rendered
    out = grounder.ground(_images()[:1], ["dog"], think=True)
    assert len(out) == 1


def test_max_pixels_controls_resizing_and_the_frame(tiny_qwen25_vl_dir):
    small = load_grounder(
        f"qwen2.5-vl:{tiny_qwen25_vl_dir}", max_pixels=28 * 28 * 8, max_new_tokens=2
    )
    assert small.convention.max_pixels == 28 * 28 * 8
    w, h = small.resized_size(400, 300)
    assert w * h <= 28 * 28 * 8
    batch = small.prepare(_images([(300, 400)]), ["dog"])
    _, gh, gw = batch["image_grid_thw"][0].tolist()
    assert (gw * 14, gh * 14) == (w, h)
    with pytest.raises(InputError, match="min_pixels"):
        load_grounder(f"qwen2.5-vl:{tiny_qwen25_vl_dir}", min_pixels=10**6, max_pixels=10**5)


class _Scripted(QwenGrounder):
    """Runs the real generation, then answers from a script: isolates ground()'s wiring."""

    def __init__(self, *args, script: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.script = script

    def generate(self, images, phrases, *, think=False):
        real = super().generate(images, phrases, think=think)
        assert len(real) == len(phrases)
        return [self.script[p] for p in phrases]


def test_ground_converts_each_answer_with_its_own_image_size(tiny_qwen3_vl_dir):
    base = load_grounder(f"qwen3-vl:{tiny_qwen3_vl_dir}")
    script = {
        "a": format_answer([((100, 200, 500, 600), [(300, 400)])]),
        "b": format_answer([((0, 0, 1000, 1000), [(500, 500)]), ((10, 10, 20, 20), [])]),
        "c": "[]",
        "d": "I cannot see it",
    }
    g = _Scripted(
        base.model, base.processor, family="qwen3-vl", max_new_tokens=1, batch_size=2, script=script
    )
    sizes = [(100, 200), (300, 50), (64, 64), (80, 80)]  # (h, w)
    out = g.ground(_images(sizes), ["a", "b", "c", "d"])  # two batches of two
    box = out[0].instances[0]
    assert box.box == pytest.approx((20, 20, 100, 60)) and box.points == [(60, 40)]
    assert [i.box for i in out[1].instances] == [(0, 0, 50, 300), (0.5, 3, 1, 6)]
    assert out[1].instances[1].points == []
    assert out[2].no_target and not out[2].instances
    assert out[3].parse_error and out[3].raw_answer == "I cannot see it"


@pytest.mark.parametrize(
    ("family", "answer", "expected"),
    [
        # norm1000: x * 150 / 1000, y * 100 / 1000
        ("qwen3-vl", ((100, 200, 500, 600), (300, 400)), ((15, 20, 75, 60), (45, 40))),
        # resized: the processor sees 150x100 as 140x112 (multiples of 28)
        (
            "qwen2.5-vl",
            ((10, 20, 100, 90), (50, 50)),
            (
                (10 * 150 / 140, 20 * 100 / 112, 100 * 150 / 140, 90 * 100 / 112),
                (50 * 150 / 140, 50 * 100 / 112),
            ),
        ),
    ],
)
def test_taught_answer_comes_back_in_image_pixels(tmp_path, family, answer, expected):
    folder = build_tiny_vlm(tmp_path / family, family=family, layers=2, vision_depth=1)
    image = _images([(100, 150)], seed=3)[0]
    box, point = answer
    text = format_answer([(box, [point])])
    # The taught weights go through save_pretrained and the real loading path.
    teacher = load_grounder(f"{family}:{folder}")
    teach_answer(teacher, image, "the red box", text)
    teacher.model.save_pretrained(folder)
    student = load_grounder(f"{family}:{folder}", max_new_tokens=48)
    (g,) = student.ground([image], ["the red box"])
    assert g.raw_answer == text, g.raw_answer
    assert g.parse_error is None and len(g.instances) == 1
    assert g.instances[0].box == pytest.approx(expected[0])
    assert g.instances[0].points == [pytest.approx(expected[1])]


# ---------------------------------------------------------------------------------------------
# Errors a user can act on: one line, naming what to fix, fast


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_folder_is_one_line(tmp_path):
    with pytest.raises(ModelError) as exc:
        load_grounder(f"qwen3-vl:{tmp_path / 'nope'}")
    assert "no such model folder" in _one_line(exc)
    with pytest.raises(ModelError) as exc:
        load_grounder(f"qwen3-vl:{tmp_path}")
    assert "config.json" in _one_line(exc)


def test_uncached_hub_id_offline_fails_fast_naming_the_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError) as exc:
        load_grounder("qwen3-vl:refseg-tests/no-such-model-0")
    message = _one_line(exc)
    assert "'refseg-tests/no-such-model-0'" in message and "local folder" in message
    assert time.perf_counter() - start < 5
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ModelError, match="no-such-model-0"):
        load_grounder("qwen3-vl:refseg-tests/no-such-model-0", local_files_only=True)


def test_wrong_family_is_refused(tiny_qwen3_vl_dir):
    with pytest.raises(ModelError) as exc:
        load_grounder(f"qwen2.5-vl:{tiny_qwen3_vl_dir}")
    assert "qwen3-vl:" in _one_line(exc)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tiny_qwen3_vl_dir):
    with pytest.raises(ModelError) as exc:
        load_grounder(f"qwen3-vl:{tiny_qwen3_vl_dir}", device="cuda")
    assert "CUDA" in _one_line(exc) and "cpu" in str(exc.value)


def test_bad_options_and_inputs(tiny_qwen3_vl_dir):
    spec = f"qwen3-vl:{tiny_qwen3_vl_dir}"
    with pytest.raises(InputError, match="dtype"):
        load_grounder(spec, dtype="float8")
    with pytest.raises(InputError, match="device"):
        load_grounder(spec, device="tpu:0")
    with pytest.raises(InputError, match="temperature"):
        load_grounder(spec, do_sample=True)
    g = load_grounder(spec, max_new_tokens=2)
    with pytest.raises(InputError, match="2 images but 1 phrases"):
        g.ground(_images()[:2], ["dog"])
    with pytest.raises(InputError, match="uint8 RGB"):
        g.ground([np.zeros((10, 10), np.uint8)], ["dog"])
    with pytest.raises(InputError, match="aspect ratio"):
        g.ground([np.zeros((2, 900, 3), np.uint8)], ["dog"])


def test_prompt_template_replaces_the_protocol_prompt(tiny_qwen3_vl_dir):
    grounder = load_grounder(f"qwen3-vl:{tiny_qwen3_vl_dir}", prompt_template='Find: "{phrase}"')
    (message,) = grounder.build_messages(None, "  the red box ")
    assert message["content"][1] == {"type": "text", "text": 'Find: "the red box"'}
    with pytest.raises(InputError, match="only"):
        load_grounder(f"qwen3-vl:{tiny_qwen3_vl_dir}", prompt_template="{other}").build_messages(
            None, "x"
        )


@pytest.mark.parametrize(
    "card", ['["not", "an object"]', '{"prompt_template": "no field"}', "{broken", "x" * 70000]
)
def test_a_bad_model_card_is_one_line_naming_it(tiny_qwen3_vl_dir, tmp_path, card):
    folder = tmp_path / "model"
    folder.mkdir()
    for item in Path(tiny_qwen3_vl_dir).iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "refseg.json").write_text(card)
    with pytest.raises(ModelError, match=r"refseg\.json: unreadable model card") as info:
        load_grounder(f"qwen3-vl:{folder}")
    assert "\n" not in str(info.value)
