"""A grounder behind any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, TGI, ...).

The request is the one prompt of :mod:`refseg.protocol`, sent as one user turn holding the image
(a base64 PNG data URL, lossless so the server sees exactly our pixels; JPEG on request) and then
the instruction text: the same message an in-process :class:`~refseg.grounding.qwen.QwenGrounder`
builds. The answer goes through the one parser and the grounder's declared coordinate
:class:`~refseg.grounding.coords.Convention`, which the endpoint cannot tell us: a Qwen3-VL server
answers in ``norm1000``, a Qwen2.5-VL one in ``resized`` pixels with the *server's* pixel budget.

Only the standard library talks HTTP (``urllib``), so this backend works on a core install
without torch or an HTTP client package. Transient failures (connection errors, timeouts,
HTTP 429 and 5xx) are retried with exponential backoff; a dead endpoint or a garbage response is
one-line :class:`~refseg.errors.ModelError`; an answer the model wrote badly is a
``parse_error`` on its :class:`~refseg.grounding.base.Grounding`, never an exception.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image

from refseg.errors import InputError, ModelError
from refseg.grounding.base import Grounding, check_rgb
from refseg.grounding.coords import Convention, to_grounding
from refseg.grounding.http import (
    count_option,
    deadline_opener,
    endpoint_url,
    excerpt,
    json_object,
    number_option,
    post_with_retries,
)
from refseg.protocol import SYSTEM_PROMPT, build_prompt, parse_answer
from refseg.protocol.confidence import TOP_K, TokenTrace, instance_scores, no_target_score

__all__ = ["OpenAIGrounder", "chat_completions_url", "image_data_url"]

#: Longest wait between two tries, whatever the backoff or a server's Retry-After says.


def chat_completions_url(url: str) -> str:
    """The chat-completions address for a server URL given with or without ``/v1``.

    ``http://host:8000``, ``http://host:8000/v1`` and the full
    ``http://host:8000/v1/chat/completions`` all give the last form.
    """
    return endpoint_url(
        url, "chat/completions", grounder="openai", example="http://localhost:8000/v1"
    )


def image_data_url(image: np.ndarray, fmt: str = "png", quality: int = 95) -> str:
    """``image`` (``uint8`` RGB) as a ``data:`` URL (PNG lossless, or JPEG at ``quality``)."""
    buffer = io.BytesIO()
    pil = Image.fromarray(image)
    if fmt == "png":
        pil.save(buffer, format="PNG", compress_level=1)
        mime = "image/png"
    elif fmt == "jpeg":
        pil.save(buffer, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        raise InputError(f"image format {fmt!r} is not supported; use png or jpeg")
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIGrounder:
    """Ground phrases through an OpenAI-compatible ``/v1/chat/completions`` endpoint.

    Args:
        url: the server, with or without ``/v1`` (``http://localhost:8000/v1``).
        model: the model name the server expects in requests.
        convention: the coordinate convention the served model answers in (a
            :class:`Convention` or a spec such as ``norm1000`` or
            ``resized:min_pixels=3136,max_pixels=12845056``); it also picks the prompt wording.
        api_key_env: the environment variable holding an API key (sent as a bearer token
            when set); None sends none. The key itself is never stored in the object's repr.
        timeout: seconds each try may take in all (connect, send, headers and body: a
            deadline, not a per-read timeout a dripping server could keep renewing).
        retries: how many tries a request gets in all, the first included, before the endpoint
            is declared unreachable.
        backoff: the first wait between tries in seconds; it doubles with each try (with a
            little jitter), capped at :data:`MAX_BACKOFF_S`; a server's ``Retry-After`` wins.
        max_tokens: the answer's token budget (reasoning included).
        temperature: sampling temperature; 0 asks for greedy decoding.
        concurrency: requests in flight at once in :meth:`ground`.
        image_format: ``png`` (lossless, default) or ``jpeg`` (smaller requests).
        logprobs: ask for token log-probabilities (``logprobs``/``top_logprobs``), which give
            the instance and no-target scores; a server that refuses them (HTTP 400/422) is
            asked again without, once, and the scores are then ``None``.
        max_new_tokens: the in-process grounders' name for ``max_tokens``; when given it wins,
            so one set of grounder options works with every backend.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        convention: str | Convention = "norm1000",
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_tokens: int = 1024,
        temperature: float = 0.0,
        concurrency: int = 4,
        image_format: str = "png",
        max_new_tokens: int | None = None,
        logprobs: bool = True,
    ) -> None:
        self.endpoint = chat_completions_url(url)
        if not isinstance(model, str) or not model.strip():
            raise InputError("the openai grounder needs a model name (openai:URL#MODEL)")
        self.model = model.strip()
        self.convention = Convention.parse(convention)
        self.name = f"openai:{url}#{self.model}"
        self.api_key_env = api_key_env
        self.timeout = number_option(timeout, "timeout", low=0.0, strict=True)
        self.retries = count_option(retries, "retries")
        self.backoff = number_option(backoff, "backoff", low=0.0)
        if max_new_tokens is not None:
            max_tokens = max_new_tokens
        self.max_tokens = count_option(max_tokens, "max_tokens")
        self.temperature = number_option(temperature, "temperature", low=0.0)
        self.concurrency = count_option(concurrency, "concurrency")
        if image_format not in ("png", "jpeg"):
            raise InputError(f"image_format must be png or jpeg, got {image_format!r}")
        self.image_format = image_format
        self.logprobs = bool(logprobs)
        #: What the prompt asks for: ``box`` or ``path`` (see :func:`refseg.protocol.build_prompt`).
        self.answer = "box"
        # Proxies from the environment are honoured, as with any HTTP client.
        self._opener = deadline_opener()

    def __repr__(self) -> str:
        return f"OpenAIGrounder({self.endpoint!r}, {self.model!r}, convention='{self.convention}')"

    # -- requests -------------------------------------------------------------------------------

    def messages(
        self, image: np.ndarray, phrase: str, *, think: bool = False, answer: str | None = None
    ) -> list[dict]:
        """The chat messages for one pair: image part first, then the protocol's prompt
        (asking for ``answer``, default :attr:`answer`)."""
        prompt = build_prompt(
            phrase, think=think, coords=self.convention.prompt_coords, answer=answer or self.answer
        )
        content = [
            {"type": "image_url", "image_url": {"url": image_data_url(image, self.image_format)}},
            {"type": "text", "text": prompt},
        ]
        messages: list[dict] = []
        if SYSTEM_PROMPT is not None:
            messages.append({"role": "system", "content": SYSTEM_PROMPT})
        messages.append({"role": "user", "content": content})
        return messages

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def complete(self, messages: list[dict]) -> str:
        """POST one chat completion and return the answer text (retrying transient failures)."""
        return self._complete(messages)[0]

    def _complete(self, messages: list[dict]) -> tuple[str, TokenTrace | None]:
        """The answer text and, where the server returned token log-probabilities, its trace."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.logprobs:
            request.update(logprobs=True, top_logprobs=TOP_K)
        try:
            payload = post_with_retries(
                self._opener,
                self.endpoint,
                json.dumps(request).encode("utf-8"),
                self._headers,
                timeout=self.timeout,
                retries=self.retries,
                backoff=self.backoff,
            )
        except ModelError as exc:
            if not self.logprobs or not any(f"HTTP {s}" in str(exc) for s in (400, 422)):
                raise
            self.logprobs = False  # a server without log-probabilities: ask as before
            return self._complete(messages)
        text = self._answer_text(payload)
        return text, _trace(json_object(payload, self.endpoint), text)

    def _answer_text(self, payload: bytes) -> str:
        """The assistant's text from a chat-completions response body; garbage is ModelError."""
        data = json_object(payload, self.endpoint)
        if isinstance(data, dict) and isinstance(data.get("error"), (dict, str)):
            error = data["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ModelError(f"endpoint {self.endpoint} returned an error: {excerpt(message)}")
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ModelError(f"endpoint {self.endpoint} returned no choices: {excerpt(payload)}")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise ModelError(f"endpoint {self.endpoint} returned a choice without a message")
        text = _content_text(message.get("content"))
        if text is None:
            raise ModelError(
                f"endpoint {self.endpoint} returned message content of type "
                f"{type(message.get('content')).__name__}"
            )
        # Servers with a reasoning parser move the <think> block into its own field; put it
        # back so the one parser sees what the model wrote.
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if isinstance(reasoning, str) and reasoning.strip() and "</think>" not in text:
            text = f"<think>{reasoning}</think>{text}"
        return text

    # -- the grounder protocol ------------------------------------------------------------------

    def ground(
        self,
        images: Sequence[np.ndarray],
        phrases: Sequence[str],
        *,
        think: bool = False,
        answer: str | None = None,
    ) -> list[Grounding]:
        """Ground ``phrases[i]`` in ``images[i]``, up to ``concurrency`` requests at a time
        (asking for ``answer``: ``box`` or ``path``, default :attr:`answer`).

        Bad inputs raise :class:`InputError` before any request; an endpoint that stays
        unreachable or answers garbage raises :class:`ModelError`; a model answer that cannot
        be read is that pair's ``parse_error``.
        """
        if len(images) != len(phrases):
            raise InputError(f"got {len(images)} images but {len(phrases)} phrases")
        arrays = [check_rgb(image, i) for i, image in enumerate(images)]
        for i, phrase in enumerate(phrases):
            if not isinstance(phrase, str) or not phrase.strip():
                raise InputError(f"phrase {i} is empty")
        for image in arrays:  # the resized convention refuses extreme aspect ratios up front
            self.convention.frame(image.shape[1], image.shape[0])
        if not arrays:
            return []

        def one(index: int) -> Grounding:
            image = arrays[index]
            messages = self.messages(image, phrases[index], think=think, answer=answer)
            text, trace = self._complete(messages)
            height, width = image.shape[:2]
            parsed = parse_answer(text)
            for instance, score in zip(parsed.instances, instance_scores(trace, parsed)):
                instance.score = score
            grounding = to_grounding(parsed, self.convention, width, height)
            grounding.no_target_score = no_target_score(trace, parsed)
            return grounding

        if len(arrays) == 1 or self.concurrency == 1:
            return [one(i) for i in range(len(arrays))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(arrays))) as pool:
            return list(pool.map(one, range(len(arrays))))


# ---------------------------------------------------------------------------------------------
# helpers


def _trace(data: Any, text: str) -> TokenTrace | None:
    """The token trace in a chat-completions response (``choices[0].logprobs.content``: each
    token's text, log-probability and top alternatives), or None when it is absent, malformed
    or does not spell the answer text (a reasoning field moved back in front, say)."""
    try:
        content = data["choices"][0]["logprobs"]["content"]
        if not isinstance(content, list) or len(content) > 100_000:
            return None
        texts, logprobs, alternatives = [], [], []
        for entry in content:
            texts.append(str(entry["token"]))
            logprobs.append(min(0.0, float(entry["logprob"])))
            top = entry.get("top_logprobs") or []
            alternatives.append(
                [(str(t["token"]), min(0.0, float(t["logprob"]))) for t in top[:TOP_K]]
            )
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    if "".join(texts) != text:
        return None
    return TokenTrace(texts, logprobs, alternatives if all(alternatives) else [])


def _content_text(content: Any) -> str | None:
    """Message content as text: a string, a list of text parts, or None (empty)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, str):
                texts.append(part)
        return "".join(texts)
    return None
