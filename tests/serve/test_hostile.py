"""Hostile and unlucky input against a real server: every class of bad request gets a 4xx in the OpenAI error
envelope (never a 5xx, never a wrong 200), one bad request never fails another, and a good request still
works afterwards."""

from __future__ import annotations

import io
import json
import threading
import time

import httpx
import openai
import pytest

from tests.conftest import running, ticket_rows
from tuneloop.serve.handler import Limits
from tuneloop.server import ServeOptions, build_app

KEY = "s3cret"
ASK = [{"role": "user", "content": "My parcel is late"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{root / 'r.db'}", api_keys=[KEY],
                                    request_log="off", run_jobs=False, limits=Limits(max_tokens=32, max_body_bytes=2**20)))
    with running(app) as url:
        yield {"url": url, "model": str(tiny_model_dir)}


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server["url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        yield client


def refused(response: httpx.Response, status: int | None = None) -> dict:
    """A 4xx in the envelope the openai client parses."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert status is None or response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def chat(server, **fields) -> dict:
    return {"model": server["model"], "messages": ASK, "max_tokens": 4, **fields}


def raw(http, path: str, text: str | bytes, content_type: str = "application/json") -> httpx.Response:
    return http.post(path, content=text, headers={"content-type": content_type})


@pytest.mark.parametrize("field, value", [
    ("seed", 2**70), ("seed", -(2**70)), ("temperature", "NaN"), ("temperature", "Infinity"), ("top_p", "-Infinity"),
    ("max_tokens", 10**12), ("max_tokens", 0), ("stop", '["' + "x" * 300 + '"]'), ("user", '"' + "u" * 1000 + '"'),
    ("metadata", json.dumps({f"k{i}": "v" for i in range(40)})), ("n", 3), ("messages", "[]"),
])
def test_bad_numbers_and_sizes_are_refused_with_the_field_named(server, http, field, value):
    body = json.dumps(chat(server))[:-1] + f', "{field}": {value if isinstance(value, str) else json.dumps(value)}}}'
    problem = refused(raw(http, "/v1/chat/completions", body), 400)
    assert field in problem["message"], problem


def test_an_extreme_seed_fails_alone_while_other_requests_in_the_batch_finish(server, http):
    results = {}

    def good(i):
        results[i] = http.post("/v1/chat/completions", json=chat(server, max_tokens=16, temperature=0.8, seed=i)).status_code

    threads = [threading.Thread(target=good, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    bad = raw(http, "/v1/chat/completions", json.dumps(chat(server))[:-1] + ', "seed": 18446744073709551616, "temperature": 1}')
    for t in threads:
        t.join(60)
    refused(bad, 400)
    assert results == {i: 200 for i in range(6)}


def test_bodies_that_do_not_parse_get_the_envelope(server, http):
    refused(raw(http, "/v1/chat/completions", b'\xff\xfe{"model": "x"}'), 400)
    deep = '{"model": "m", "messages": ' + "[" * 50_000 + "]" * 50_000 + "}"
    refused(raw(http, "/v1/chat/completions", deep), 400)
    refused(raw(http, "/v1/chat/completions", "not json at all"), 400)
    refused(raw(http, "/v1/chat/completions", json.dumps(chat(server)), content_type="text/plain"))
    assert refused(http.get("/v1/no-such-route"), 404)["message"].startswith("no route GET /v1/no-such-route")
    refused(http.get("/v1/chat/completions"), 405)


def test_a_huge_body_is_refused_before_it_is_read(server, http):
    started = time.perf_counter()
    big = json.dumps(chat(server, messages=[{"role": "user", "content": "word " * 2_000_000}]))  # 10 MB
    assert refused(raw(http, "/v1/chat/completions", big), 413)["code"] == "request_too_large"
    assert time.perf_counter() - started < 5

    def chunks():  # no Content-Length: counted as it arrives
        yield big[:100].encode()
        for _ in range(40):
            yield b" " * 65536

    assert refused(http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(server, http):
    long = [{"role": "user", "content": "x" * 900_000}]  # under the body limit, far over any context
    started = time.perf_counter()
    problem = refused(http.post("/v1/chat/completions", json=chat(server, messages=long)), 400)
    assert problem["code"] == "context_length_exceeded" and "characters" in problem["message"]
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("authorization", ["Bearer s3crét", "Bearer \u00ff\u00fe", "Bearer", "Basic abc", ""])
def test_any_authorization_header_is_a_401_not_a_crash(server, authorization):
    response = httpx.post(f"{server['url']}/v1/chat/completions", json=chat(server),
                          headers={"Authorization": authorization.encode("latin-1")} if authorization else {})
    assert refused(response, 401)["code"] == "invalid_api_key"


def test_route_weights_must_be_finite(server, http):
    for weight in ("Infinity", "NaN", "-1", "1e300"):
        body = '{"variants": [{"model": "m", "weight": ' + weight + "}]}"
        refused(http.put("/admin/routes/ab", content=body, headers={"content-type": "application/json"}), 400)
    assert http.get("/admin/routes").json() == {}


def test_feedback_and_admin_bodies_are_bounded(server, http):
    refused(http.post("/v1/feedback", json={"request_id": "x" * 100, "rating": "up"}), 400)
    refused(raw(http, "/v1/feedback", '{"request_id": "r", "score": NaN}'), 400)
    refused(http.post("/admin/models/load", json={"model": "m" * 1000}), 400)


def test_a_good_request_works_after_all_of_that(server):
    client = openai.OpenAI(base_url=f"{server['url']}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(model=server["model"], messages=ASK, max_tokens=4, temperature=0)
    assert answer.choices[0].finish_reason in ("stop", "length")


# --- files and jobs ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def jobs_server(tiny_model_dir, tmp_path_factory):
    """The jobs API without a worker: jobs queue, nothing trains."""
    root = tmp_path_factory.mktemp("hostile-jobs")
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{root / 'r.db'}", request_log="off",
                                    run_jobs=False))
    with running(app) as url:
        yield {"url": url, "model": str(tiny_model_dir), "api": openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)}


GOOD_ROWS = "".join(json.dumps(r) + "\n" for r in ticket_rows(8)).encode()


@pytest.mark.parametrize("name", [None, "upload", "..", ".", "/", "a/../../b.jsonl", "x" * 300, "tab\there.jsonl", "../etc/passwd"])
def test_any_file_name_is_metadata_and_the_file_is_checked(jobs_server, name):
    api = jobs_server["api"]
    stored = api.files.create(file=(name, io.BytesIO(GOOD_ROWS)) if name is not None else io.BytesIO(GOOD_ROWS), purpose="fine-tune")
    assert stored.status == "processed", stored.status_details
    assert 0 < len(stored.filename) <= 255 and "/" not in stored.filename and stored.filename not in (".", "..")
    assert api.files.content(stored.id).read() == GOOD_ROWS


def test_a_file_that_fails_its_check_is_never_trained_on(jobs_server):
    api = jobs_server["api"]
    bad = api.files.create(file=("bad.jsonl", io.BytesIO(b'{"messages": []}\n\xff\xfe\nnot json\n')), purpose="fine-tune")
    assert bad.status == "error" and "line 1" in bad.status_details
    job = api.fine_tuning.jobs.create(model=jobs_server["model"], training_file=bad.id)
    assert job.status == "failed" and job.error.param == "training_file"
    other = api.files.create(file=("data.jsonl", io.BytesIO(GOOD_ROWS)), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="purpose 'fine-tune'"):
        api.fine_tuning.jobs.create(model=jobs_server["model"], training_file=other.id)


@pytest.mark.parametrize("hyperparameters", [
    {"learning_rate_multiplier": "NaN"}, {"learning_rate_multiplier": "Infinity"}, {"learning_rate_multiplier": 0},
    {"n_epochs": 10**9}, {"batch_size": -1}, {"beta": "NaN"}, {"n_epochs": "many"},
])
def test_job_hyperparameters_are_bounded_and_nothing_is_queued(jobs_server, hyperparameters):
    api = jobs_server["api"]
    stored = api.files.create(file=("t.jsonl", io.BytesIO(GOOD_ROWS)), purpose="fine-tune")
    before = len(api.fine_tuning.jobs.list(limit=1000).data)
    text = json.dumps({"model": jobs_server["model"], "training_file": stored.id})[:-1]
    text += ', "hyperparameters": {' + ", ".join(f'"{k}": {v if isinstance(v, str) and v in ("NaN", "Infinity") else json.dumps(v)}'
                                               for k, v in hyperparameters.items()) + "}}"
    refused(httpx.post(f"{jobs_server['url']}/v1/fine_tuning/jobs", content=text, headers={"content-type": "application/json"}), 400)
    assert len(api.fine_tuning.jobs.list(limit=1000).data) == before


def test_job_seeds_and_list_parameters_are_bounded(jobs_server):
    url = jobs_server["url"]
    stored = jobs_server["api"].files.create(file=("t.jsonl", io.BytesIO(GOOD_ROWS)), purpose="fine-tune")
    refused(httpx.post(f"{url}/v1/fine_tuning/jobs", json={"model": jobs_server["model"], "training_file": stored.id, "seed": 2**70}), 400)
    for query in ("limit=-1", "limit=0", "limit=99999999999999999999", "limit=abc", "after=" + "x" * 500):
        refused(httpx.get(f"{url}/v1/fine_tuning/jobs?{query}"), 400)
    job = jobs_server["api"].fine_tuning.jobs.create(model=jobs_server["model"], training_file=stored.id)
    for query in ("after=ftevent-x", "after=1", "limit=-5"):
        refused(httpx.get(f"{url}/v1/fine_tuning/jobs/{job.id}/events?{query}"), 400)
    refused(httpx.get(f"{url}/v1/fine_tuning/jobs/{'j' * 100}"), 400)
    refused(httpx.get(f"{url}/v1/fine_tuning/jobs/ftjob-nope"), 404)
    refused(httpx.get(f"{url}/v1/files?purpose=nonsense"), 400)
