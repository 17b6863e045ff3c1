"""Token traces from transformers' generate, checked against a teacher-forced forward pass of a
tiny taught Qwen3-VL; and the scores they give, through the grounder and the pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from refseg.grounding import load_grounder
from refseg.grounding.traces import TraceRecorder, _incremental_texts
from refseg.protocol import format_answer
from refseg.testing.tiny_vlm import build_tiny_vlm, teach_answer

PHRASE = "the astronaut's face"
ANSWER = format_answer([((273, 39, 625, 390), [(449, 215)])])


@pytest.fixture(scope="module")
def image(astronaut) -> np.ndarray:
    return astronaut


@pytest.fixture(scope="module")
def taught(tmp_path_factory, image):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = build_tiny_vlm(tmp_path_factory.mktemp("traced"), layers=2, vision_depth=1)
        grounder = load_grounder(f"qwen3-vl:{folder}", max_new_tokens=48)
        assert teach_answer(grounder, image, PHRASE, ANSWER) < 0.05
    finally:
        torch.set_num_threads(threads)
    return grounder


def test_pieces_join_to_the_text_when_a_character_spans_tokens() -> None:
    table = {1: b"a", 2: b"\xc3", 3: b"\xa9", 4: b"b"}  # "é" is two bytes, two tokens

    def decode(ids):
        return b"".join(table[i] for i in ids).decode("utf-8", errors="replace")

    pieces = _incremental_texts([1, 2, 3, 4], decode)
    assert "".join(pieces) == "aéb"
    assert pieces == ["a", "", "é", "b"]  # the character is credited to the token completing it


def test_the_recorder_changes_nothing_and_keeps_the_top_alternatives() -> None:
    recorder = TraceRecorder(k=2)
    scores = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert recorder(torch.tensor([[5], [5]]), scores) is scores
    recorder(torch.tensor([[5, 1], [5, 0]]), torch.zeros(2, 3))
    recorder.finish(torch.tensor([[1, 2], [0, 0]]))
    logp = torch.log_softmax(scores, -1)
    assert recorder.top[0][1].tolist() == [[1, 2], [0, 1]]
    assert recorder.chosen[0].tolist() == pytest.approx([float(logp[0, 1]), float(logp[1, 0])])
    assert recorder.chosen[1].tolist() == pytest.approx([math.log(1 / 3)] * 2)


def test_trace_logprobs_equal_a_teacher_forced_pass(taught, image) -> None:
    answers, _, (trace,) = taught._generate([image], [PHRASE])
    assert answers == [ANSWER] and trace is not None and trace.text == ANSWER
    batch = taught.prepare([image], [PHRASE])
    tokenizer = taught.processor.tokenizer
    target = tokenizer(ANSWER, add_special_tokens=False, return_tensors="pt").input_ids
    ids = torch.cat([batch["input_ids"], target], dim=1)
    inputs = {**batch, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    inputs["mm_token_type_ids"] = torch.cat(  # M-RoPE: answer tokens are text
        [batch["mm_token_type_ids"], torch.zeros_like(target)], dim=1
    )
    with torch.inference_mode():
        logits = taught.model(**inputs).logits[0, batch["input_ids"].shape[1] - 1 : -1]
    forced = torch.log_softmax(logits.float(), -1).gather(1, target[0][:, None])[:, 0]
    n = target.shape[1]
    assert trace.logprobs[:n] == pytest.approx(forced.tolist(), abs=1e-3)
    assert trace.alternatives[0][0][0] == trace.texts[0]  # greedy: the chosen is the top one


def test_the_pipeline_reports_each_source_and_their_product(taught, image, sam) -> None:
    from refseg.pipeline import PipelineOptions, load_pipeline

    pipe = load_pipeline(taught, sam, PipelineOptions(refiner="none"))
    result = pipe(image, PHRASE)
    (instance,) = result.instances
    grounder, segmenter = instance.scores["grounder"], instance.scores["segmenter"]
    assert grounder is not None and grounder > 0.8  # a taught answer: sure of its digits
    assert result.no_target_score is not None and result.no_target_score < 0.2
    assert segmenter is not None
    assert instance.score == pytest.approx(grounder * segmenter)
    data = result.to_dict()
    assert data["instances"][0]["scores"] == {
        "grounder": pytest.approx(grounder, abs=1e-6),
        "segmenter": pytest.approx(segmenter, abs=1e-6),
    }
    assert data["no_target_score"] == pytest.approx(result.no_target_score, abs=1e-6)
    strict = load_pipeline(taught, sam, PipelineOptions(refiner="none", min_score=0.999999))
    dropped = strict(image, PHRASE)
    assert dropped.instances == [] and dropped.no_target
