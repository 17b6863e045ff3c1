"""Schema-driven fuzzing of the API with schemathesis: requests generated from /openapi.json
(valid and invalid bodies, both content types) must never make the server fail (5xx), and
every answer must be one the schema documents.

Schemathesis' "schema-valid data is accepted" check is left out: the schema cannot say that an
``image`` must be a decodable image or that a request needs a phrase *or* prompts, so a 422 for
such a body is the documented answer, not a failure."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402


def test_api_never_fails_on_generated_requests(memo_sam):
    from refseg.serve import create_app

    # Any Host: the generated requests carry the test client's own name.
    app = create_app(segmenter=memo_sam, api_key="", allowed_hosts=["*"])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/segment", "/healthz"}
    seen: set[int] = set()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case) -> None:
            response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
            seen.add(response.status_code)

        run()
    assert 422 in seen  # the generated bodies reached the input checks
