"""Reading completions and columns (:mod:`refseg.train.rewards.common`), and the reward cache."""

from __future__ import annotations

import pytest

from refseg.train import rewards as R
from tests.train.rewards.helpers import GT_A, GT_B, H, W, answer, columns, inst


def test_completion_text_reads_strings_and_conversations():
    text = answer([])
    assert R.completion_text(text) == text
    assert R.completion_text([{"role": "assistant", "content": text}]) == text
    parts = [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "<answer>"},
                {"type": "text", "text": "[]</answer>"},
            ],
        }
    ]
    assert R.completion_text(parts) == "<answer>[]</answer>"
    assert R.completion_text(None) == ""


def test_conversational_and_string_completions_score_the_same():
    cols = columns([[GT_A]] * 2)
    good = answer([inst(GT_A)])
    strings = R.accuracy_reward(None, [good, good], **cols)
    convo = R.accuracy_reward(None, [[{"role": "assistant", "content": good}]] * 2, **cols)
    assert strings == convo == [1.0, 1.0]


def test_missing_column_is_reported():
    with pytest.raises(KeyError, match="gt_boxes"):
        R.accuracy_reward(None, [answer([])], width=[W], height=[H])


# --- the reward cache ----------------------------------------------------------------------


def test_built_rewards_share_a_cache_of_their_own_and_a_warm_cache_changes_nothing():
    R.reset_caches()
    cache = R.RewardCache()
    funcs, _ = R.build_rewards(
        {"accuracy": 1.0, "no_target": 1.0, "mask_iou": 1.0, "boundary_iou": 1.0},
        think=False,
        cache=cache,
    )
    cols = columns([[GT_A], [GT_A, GT_B]])
    texts = [answer([inst(GT_A)]), answer([inst(GT_B)])]
    first = [f(None, texts, **cols) for f in funcs]
    assert cache.last_match is not None and len(cache.gt._items) == 2
    reads = cache.read_all(texts, cols, None)
    assert cache.read_all(texts, cols, None) is reads  # a batch is read once
    # the built functions never touched the default cache
    assert R.DEFAULT_CACHE.last_match is None and not R.DEFAULT_CACHE.gt._items
    again = [f(None, texts, **cols) for f in funcs]
    cache.clear()
    assert cache.last_match is None and not cache.gt._items
    cold = [f(None, texts, **cols) for f in funcs]
    assert first == again == cold


def test_mask_iou_and_boundary_iou_match_a_batch_once(monkeypatch):
    from refseg.train.rewards import masks as mask_rewards

    calls = []
    real = mask_rewards.mask_match_score
    monkeypatch.setattr(
        mask_rewards, "mask_match_score", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    cache = R.RewardCache()
    cols = columns([[GT_A], [GT_B]])
    texts = [answer([inst(GT_A)]), answer([inst(GT_A)])]
    iou = R.mask_iou_reward(None, texts, cache=cache, **cols)
    biou = R.boundary_iou_reward(None, texts, cache=cache, **cols)
    assert len(calls) == 2  # one match per row, shared by both rewards
    assert iou[0] == pytest.approx(1.0) and iou[1] == 0.0 and biou[1] == 0.0
    R.mask_iou_reward(None, texts, cache=cache, scale=0.5, **cols)
    assert len(calls) == 4  # other settings: matched again


def test_direct_calls_use_the_default_cache_which_reset_empties():
    R.reset_caches()
    cols = columns([[GT_A]])
    R.mask_iou_reward(None, [answer([inst(GT_A)])], **cols)
    assert R.DEFAULT_CACHE.last_match is not None and R.DEFAULT_CACHE.gt._items
    assert R._GT_CACHE is R.DEFAULT_CACHE.gt  # the old module-level name
    R.reset_caches()
    assert R.DEFAULT_CACHE.last_match is None and not R.DEFAULT_CACHE.gt._items
