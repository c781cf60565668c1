"""Schema-driven fuzzing with schemathesis against the app's own OpenAPI schema, in process (ASGI, no network):
no 5xx, every response (errors included) matches its documented status, content type, body schema and headers,
and every header is well formed."""

from __future__ import annotations

import re

import pytest
import schemathesis
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                                response_schema_conformance, status_code_conformance)

from redraft.serving import create_app

EXAMPLES = 60  # per operation and run (derandomized: the same cases every run)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name


@schemathesis.check
def well_formed_headers(ctx, response, case) -> None:
    for name, value in response.headers.items():
        values = value if isinstance(value, list) else [value]
        assert _TOKEN.match(name), f"invalid header name {name!r}"
        for v in values:
            assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", v), f"control character in header {name}: {v!r}"


@pytest.fixture(scope="module")
def api_schema(tiny_checkpoint):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    # small limits keep valid requests cheap: short contexts, and big n x prompts hit the queue bound (429)
    app = create_app(tiny_checkpoint, model_name="tiny", max_model_len=64, max_batch_size=4, max_queue=4,
                     max_body_bytes=64 * 1024, default_max_tokens=8)
    yield schemathesis.openapi.from_asgi("/openapi.json", app)  # it runs the app's lifespan (the engine loop)
    torch.set_num_threads(before)


def _served_model(case):
    """Valid requests for the model this server has, so they reach the engine (and stream, and finish)."""
    if isinstance(case.body, dict) and "model" in case.body:
        case.body["model"] = "tiny"
    elif case.path_parameters and "model_id" in case.path_parameters:
        case.path_parameters["model_id"] = "tiny"
    return case


@pytest.mark.slow
def test_api_conforms_to_its_schema(api_schema):
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance, well_formed_headers]
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/health"}
    for op in operations:
        cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE).map(_served_model),
                          op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

        @given(case=cases)
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(checks=checks)

        check()
