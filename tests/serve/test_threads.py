"""The server splits the CPU thread budget across its concurrent model calls."""

from __future__ import annotations

import time

import pytest

from refseg import threads


@pytest.mark.parametrize(("budget", "concurrency", "per_call"), [(4, 2, 2), (2, 4, 1), (6, 1, 6)])
def test_each_concurrent_call_gets_a_share(
    make_client, sam, monkeypatch, budget, concurrency, per_call
) -> None:
    monkeypatch.setenv(threads.ENV, str(budget))
    client = make_client(segmenter=None, segmenter_spec="onnx-sam", max_concurrency=concurrency)
    deadline = time.monotonic() + 60
    while client.get("/healthz").json()["status"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    health = client.get("/healthz").json()
    assert health["ready"], health
    assert health["threads"] == {"budget": budget, "per_call": per_call}
    model = client.app.state.engine.segmenter
    for session in (model.encoder, model.decoder):
        assert session.get_session_options().intra_op_num_threads == per_call
