"""Token traces from transformers' ``generate``: what :mod:`refseg.protocol.confidence` reads.

``generate(output_scores=True)`` keeps every step's full distribution (vocabulary x steps x
batch: ~120 MB per answer of 200 tokens at Qwen's 152k vocabulary), so a logits processor keeps
only what the scores need instead: each step's top alternatives and the log-probability of the
token that was chosen (looked up one step later, when it is known).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from refseg.protocol.confidence import TOP_K, TokenTrace


class TraceRecorder:
    """A logits processor that records, per step and row, the top-``k`` log-probabilities and
    the chosen token's log-probability; it changes no score. Placed last, it sees the
    distribution generation chose from (after the model's own processors)."""

    def __init__(self, k: int = TOP_K) -> None:
        self.k = k
        self.top: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.chosen: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(scores.float(), dim=-1)
        if self._last is not None:  # the token chosen at the previous step is known now
            self.chosen.append(self._last.gather(1, input_ids[:, -1:])[:, 0].cpu())
        values, ids = logp.topk(min(self.k, logp.shape[-1]), dim=-1)
        self.top.append((values.cpu(), ids.cpu()))
        self._last = logp
        return scores

    def finish(self, new_tokens: torch.Tensor) -> None:
        """Look up the last step's chosen token (``new_tokens``: ``(batch, steps)``)."""
        steps = len(self.top)
        if self._last is not None and len(self.chosen) < steps and new_tokens.shape[1] >= steps:
            last = new_tokens[:, steps - 1 : steps].to(self._last.device)
            self.chosen.append(self._last.gather(1, last)[:, 0].cpu())
        self._last = None


def build_traces(
    recorder: TraceRecorder, new_tokens: torch.Tensor, decode: Callable[[Sequence[int]], str]
) -> list[TokenTrace | None]:
    """One :class:`TokenTrace` per row. ``decode`` turns ids into text exactly as the answers
    were decoded (special tokens dropped), so the traces' text is the answers' text; a row whose
    incremental decoding does not add up to that (should not happen) gets ``None``."""
    steps = min(len(recorder.top), len(recorder.chosen), new_tokens.shape[1])
    single: dict[int, str] = {}

    def piece(token: int) -> str:
        if token not in single:
            single[token] = decode([token])
        return single[token]

    traces: list[TokenTrace | None] = []
    for row in range(new_tokens.shape[0]):
        ids = [int(t) for t in new_tokens[row, :steps]]
        texts = _incremental_texts(ids, decode)
        if "".join(texts) != decode(ids):
            traces.append(None)
            continue
        alternatives = [
            [
                (piece(int(token)), float(value))
                for value, token in zip(recorder.top[step][0][row], recorder.top[step][1][row])
            ]
            for step in range(steps)
        ]
        logprobs = [float(recorder.chosen[step][row]) for step in range(steps)]
        traces.append(TokenTrace(texts, logprobs, alternatives))
    return traces


def _incremental_texts(ids: list[int], decode: Callable[[Sequence[int]], str]) -> list[str]:
    """Each token's share of the decoded text. A token that ends inside a multi-byte character
    decodes to a replacement character until the next token completes it: the corrected text
    is then credited to the later token, so the pieces always join to the whole."""
    texts: list[str] = []
    previous = ""
    for end in range(1, len(ids) + 1):
        full = decode(ids[:end])
        common = _common_prefix(previous, full)
        surplus = len(previous) - common
        for i in range(len(texts) - 1, -1, -1):  # take back what the earlier tokens misread
            if surplus <= 0:
                break
            cut = min(surplus, len(texts[i]))
            texts[i] = texts[i][: len(texts[i]) - cut]
            surplus -= cut
        texts.append(full[common:])
        previous = full
    return texts


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def trace_decoder(tokenizer: Any) -> Callable[[Sequence[int]], str]:
    """How refseg decodes answers, as a function of ids (one place, so traces match)."""

    def decode(ids: Sequence[int]) -> str:
        return tokenizer.decode(
            list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
        )

    return decode
