"""Fixtures for the server tests: a scripted grounder (a test double for the VLM, not for the
server), the bundled image's bytes, and a TestClient factory over the real ONNX segmenter."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from refseg.grounding.base import GroundedInstance, Grounding

ASSETS = Path(__file__).resolve().parents[2] / "src" / "refseg" / "assets"


class ScriptedGrounder:
    """Answers by keyword, in fractions of the image size, so results are predictable.

    ``helmet`` -> one instance (box over the head, one point); ``two`` -> two instances;
    ``nothing`` -> an explicit no-target answer; ``garbled`` -> a parse error; ``explode`` ->
    raises (a model failure). With ``think``, each answer carries reasoning. ``gate`` (an
    Event), when set on the instance, makes ``ground`` wait for it: tests use it to hold a
    worker busy.
    """

    name = "scripted"

    def __init__(self) -> None:
        self.calls = 0
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def ground(
        self, images: Sequence[np.ndarray], phrases: Sequence[str], *, think: bool = False
    ) -> list[Grounding]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        return [self._one(image, phrase, think) for image, phrase in zip(images, phrases)]

    def _one(self, image: np.ndarray, phrase: str, think: bool) -> Grounding:
        height, width = image.shape[:2]
        reasoning = f"Looking for {phrase!r} in a {width}x{height} image." if think else None
        if "explode" in phrase:
            raise RuntimeError("CUDA error: device-side assert triggered")
        if "nothing" in phrase:
            return Grounding(no_target=True, raw_answer="[]", reasoning=reasoning)
        if "garbled" in phrase:
            return Grounding(
                raw_answer="the helmet is at (3", reasoning=reasoning, parse_error="no JSON found"
            )
        head = GroundedInstance(
            box=(0.3 * width, 0.08 * height, 0.72 * width, 0.5 * height),
            points=[(0.5 * width, 0.3 * height)],
        )
        instances = [head]
        if "two" in phrase:
            instances.append(
                GroundedInstance(box=(0.55 * width, 0.62 * height, 0.95 * width, height))
            )
        return Grounding(instances=instances, raw_answer='[{"bbox_2d": ...}]', reasoning=reasoning)


class MemoSegmenter:
    """The real segmenter, with image encodings remembered across tests by pixel hash.

    The shared CPU makes one SAM encoder pass cost seconds; every test builds a fresh app (with
    an empty server cache, so the server's own caching is still what the tests observe), and
    this keeps the suite from paying for the same astronaut encoding in each of them.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self._memo: dict[str, object] = {}
        self._lock = threading.Lock()

    def embed(self, image: np.ndarray):
        from refseg.image import image_digest

        key = image_digest(image)
        with self._lock:
            if key not in self._memo:
                self._memo[key] = self.inner.embed(image)
            return self._memo[key]

    def predict(self, embedding, prompts, *, refine=None):
        return self.inner.predict(embedding, prompts, refine=refine)


@pytest.fixture(scope="session")
def memo_sam(sam) -> MemoSegmenter:
    return MemoSegmenter(sam)


@pytest.fixture(scope="session")
def astronaut_bytes() -> bytes:
    return (ASSETS / "astronaut.jpg").read_bytes()


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    return ASSETS / "astronaut.jpg"


@pytest.fixture
def grounder() -> ScriptedGrounder:
    return ScriptedGrounder()


@pytest.fixture
def make_client(memo_sam) -> Iterator[Callable[..., TestClient]]:
    """``make_client(**create_app_kwargs)`` -> a started TestClient (closed after the test)."""
    from refseg.serve import create_app

    clients: list[TestClient] = []

    def make(**kwargs) -> TestClient:
        kwargs.setdefault("segmenter", memo_sam)
        kwargs.setdefault("api_key", "")  # independent of REFSEG_API_KEY in the environment
        # A loopback Host, as a browser on this machine sends (keyless servers check it).
        client = TestClient(
            create_app(**kwargs), raise_server_exceptions=False, base_url="http://127.0.0.1:8000"
        )
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
