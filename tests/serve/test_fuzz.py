"""Property-based tests of the HTTP API: Schemathesis generates requests for every route from the server's
own OpenAPI schema, valid ones and ones that break the schema on purpose, and every answer must be below
500 and, when it is an error, in the OpenAI error envelope the official client parses."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.conftest import ticket_rows
from tuneloop.registry.store import Registry
from tuneloop.serve.handler import Limits
from tuneloop.server import ServeOptions, build_app


@pytest.fixture(scope="module")
def api_schema(tiny_model_dir, adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{root / 'r.db'}"
    Registry(url).register("support", adapters["a"], str(tiny_model_dir), "lora")
    routes = root / "routes.yaml"
    routes.write_text("routes:\n  support-ab:\n    - {model: support:1, weight: 1}\n")
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=url, routes=routes, request_log="registry",
                                    run_jobs=False, limits=Limits(max_tokens=8, timeout=30, max_body_bytes=2**20, max_file_bytes=2**20)))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.served = ["support", "support-ab", str(tiny_model_dir)]  # names that reach the engine
    return schema


def strategy(schema, operation, mode):
    """The operation's cases; for the generation routes, half of them name a model this server serves, so
    that generated sampling settings, messages and stops reach the engine instead of ending in a 404."""
    cases = operation.as_strategy(generation_mode=mode)
    if operation.path not in ("/v1/chat/completions", "/v1/completions"):
        return cases

    def served(case, pick):
        if isinstance(case.body, dict):
            case.body["model"] = schema.served[pick % len(schema.served)]
            case.body.pop("max_completion_tokens", None)
            case.body["max_tokens"] = 1 + pick * 3  # within this server's limit of 8
        return case

    return st.one_of(cases, st.tuples(cases, st.integers(0, 2)).map(lambda pair: served(*pair)))


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


# Per operation and mode: valid requests (positive) and requests that break the schema (negative).
EXAMPLES = 40


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_request_gets_a_server_error(api_schema, mode):
    failures = []
    for operation in operations(api_schema):

        @given(case=strategy(api_schema, operation, mode))
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}")
            elif response.status_code >= 400:
                body = json.loads(response.text)
                if set(body) != {"error"} or not isinstance(body["error"].get("message"), str):
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code} without the envelope: {response.text[:300]}")

        try:
            check()
        except Unsatisfiable:  # nothing to break: an operation without parameters or body (GET /health)
            assert mode == schemathesis.GenerationMode.NEGATIVE
    assert not failures, "\n".join(failures[:20])


def test_the_schema_covers_every_route(api_schema):
    paths = {operation.path for operation in operations(api_schema)}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}/events",
            "/v1/feedback", "/admin/routes/{name}", "/admin/models/load"} <= paths


def test_valid_training_rows_are_processed(api_schema, tmp_path):
    """A positive upload through the same app: the fuzzed route also works for real data."""
    from starlette.testclient import TestClient

    rows = "".join(json.dumps(r) + "\n" for r in ticket_rows(4)).encode()
    with TestClient(api_schema.app) as client:
        stored = client.post("/v1/files", files={"file": ("t.jsonl", rows)}, data={"purpose": "fine-tune"}).json()
    assert stored["status"] == "processed", stored
