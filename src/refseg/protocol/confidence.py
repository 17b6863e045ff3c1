"""Confidence from the grounder's own token probabilities: a score per instance, and one for
"no target".

A grounding model writes its answer one token at a time, and at each step it had a distribution
over the vocabulary. Two readings of those distributions are useful to a user who wants to
threshold answers:

* **instance score**: how sure the model was of the numbers that place an instance: the
  geometric mean of the probabilities of the tokens that wrote its box (Qwen writes one token per
  digit, so a hesitant first digit of a coordinate pulls the score down);
* **no-target score**: at the one step where the answer committed to "an empty list" or "a list
  of objects" (the character after the list's ``[``), the share of the probability that went to
  the empty list among the two: ``P(]) / (P(]) + P({))``, read from the step's most likely
  tokens, whatever the tokenizer merges (``[]``, ``[{``, `` [``...).

Both work on text, from a :class:`TokenTrace` (each generated token's text and log-probability
and the step's top alternatives); a grounder without token probabilities has no trace and its
scores are ``None``, never invented. Nothing here imports a model library.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from refseg.protocol.answers import ParsedAnswer

#: How many alternatives per step a trace keeps: enough to hold nearly all the probability at a
#: decision step of a trained model, few enough to keep traces small.
TOP_K = 20

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass
class TokenTrace:
    """What a grounder saw while writing one answer.

    Attributes:
        texts: each generated token's text; their concatenation is the answer text the parser
            read (special tokens that were dropped from the answer are absent here too).
        logprobs: the natural-log probability of each generated token.
        alternatives: per step, the ``(text, logprob)`` of the most likely tokens (up to
            :data:`TOP_K`), most likely first.
    """

    texts: list[str]
    logprobs: list[float]
    alternatives: list[list[tuple[str, float]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.logprobs):
            raise ValueError("a trace needs one log-probability per token")
        if self.alternatives and len(self.alternatives) != len(self.texts):
            raise ValueError("a trace needs the alternatives of every step, or none")

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def spans(self) -> list[tuple[int, int]]:
        """Each token's ``[start, end)`` character span in :attr:`text`."""
        out, at = [], 0
        for piece in self.texts:
            out.append((at, at + len(piece)))
            at += len(piece)
        return out

    def token_at(self, char: int) -> int | None:
        """The index of the token that wrote character ``char``."""
        for index, (start, end) in enumerate(self.spans()):
            if start <= char < end:
                return index
        return None


def instance_scores(trace: TokenTrace | None, parsed: ParsedAnswer) -> list[float | None]:
    """One score in [0, 1] per parsed instance: the geometric mean probability of the tokens
    that wrote its box's four numbers; ``None`` where that cannot be told (no trace, the answer
    text differs from the trace's, a box the answer did not write as numbers)."""
    scores: list[float | None] = [None] * len(parsed.instances)
    if trace is None or trace.text != parsed.raw or not parsed.instances:
        return scores
    spans = trace.spans()
    for k, box in enumerate(_box_spans(trace.text, parsed)):
        if box is None:
            continue
        tokens = [
            i
            for i, (a, b) in enumerate(spans)
            if a < b and any(a < end and b > start for start, end in box)
        ]
        if tokens:
            mean = sum(trace.logprobs[i] for i in tokens) / len(tokens)
            scores[k] = min(1.0, math.exp(mean))
    return scores


def _box_spans(text: str, parsed: ParsedAnswer) -> list[list[tuple[int, int]] | None]:
    """Where each instance's four box numbers were written (their character spans), matched
    from the end of the text backwards (the last instance's box is the last such run, the one
    before it precedes it...), so numbers quoted in reasoning or prose before the answer are
    not taken for it."""
    numbers = [(m.start(), m.end(), float(m.group())) for m in _NUMBER.finditer(text)]
    spans: list[list[tuple[int, int]] | None] = [None] * len(parsed.instances)
    limit = len(numbers)  # runs must end before this index
    for k in range(len(parsed.instances) - 1, -1, -1):
        instance = parsed.instances[k]
        if instance.box_derived:
            continue
        box = [float(v) for v in instance.box]
        for j in range(limit - 4, -1, -1):
            if all(math.isclose(numbers[j + i][2], box[i], abs_tol=1e-6) for i in range(4)):
                spans[k] = [(start, end) for start, end, _ in numbers[j : j + 4]]
                limit = j
                break
    return spans


def no_target_score(trace: TokenTrace | None, parsed: ParsedAnswer) -> float | None:
    """The probability share of "an empty list" at the step that chose between an empty list
    and a list of objects; ``None`` without a trace with alternatives, for an unread answer, or
    when that step cannot be found."""
    if trace is None or not trace.alternatives or trace.text != parsed.raw or not parsed.ok:
        return None
    decision = _decision_char(trace.text, parsed)
    if decision is None:
        return None
    step = trace.token_at(decision)
    if step is None:
        return None
    start = trace.spans()[step][0]
    before = trace.text[start:decision]  # what the chosen token wrote before the decision
    empty = objects = 0.0
    for text, logprob in trace.alternatives[step]:
        if not text.startswith(before):
            continue  # a different path to this point: not a vote on the decision
        rest = text[len(before) :].lstrip()
        if rest.startswith("]"):
            empty += math.exp(logprob)
        elif rest.startswith("{"):
            objects += math.exp(logprob)
    if empty + objects <= 0.0:
        return None
    return empty / (empty + objects)


def _decision_char(text: str, parsed: ParsedAnswer) -> int | None:
    """Where the answer's list said ``]`` (empty) or ``{`` (its first object)."""
    if parsed.no_target:
        # the last empty list: the parser prefers the final answer-shaped value
        ends = [m.end() - 1 for m in re.finditer(r"\[\s*\]", text)]
        return ends[-1] if ends else None
    first = next((span for span in _box_spans(text, parsed) if span is not None), None)
    if first is None:
        return None
    brace = text.rfind("{", 0, first[0][0])
    if brace < 0 or not text[:brace].rstrip().endswith("["):
        return None  # not a list of objects (a bare dict, say): no such decision was made
    return brace
