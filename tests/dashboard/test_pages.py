"""The dashboard over HTTP, without a browser: who may see and change what, what each page shows, and
that no URL reaches outside the runs folder."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest

from tests.dashboard.conftest import KEY, READ_KEY
from tuneloop.dashboard.runs import list_runs
from tuneloop.layout import TrainDir
from tuneloop.registry.store import Registry


def signed_in(url: str, key: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    answer = client.post("/ui/login", data={"key": key, "next": "/ui"})
    assert answer.status_code == 303 and "tuneloop_session" in client.cookies
    return client


# Every request that changes state, as a signed-in page sends it (form or JSON).
CHANGES = [
    ("POST", "/ui/registry/tiny/alias", {"data": {"alias": "production", "version": "2", "reason": "because"}}),
    ("POST", "/ui/registry/tiny/rollback", {"data": {"alias": "production", "reason": "because"}}),
    ("POST", "/ui/review/ab?dir=tiny-run/eval/ab", {"data": {"j-q0001": "1"}}),
    ("POST", "/ui/review/data?dir=tiny-run/data", {"data": {"v-0": "drop"}}),
    ("PUT", "/admin/routes/tiny", {"json": {"variants": [{"model": "tiny:1", "weight": 1}]}}),
    ("POST", "/v1/fine_tuning/jobs", {"json": {"model": "x", "training_file": "file-1"}}),
    ("POST", "/v1/chat/completions", {"json": {"model": "tiny:1", "messages": [{"role": "user", "content": "hi"}]}}),
]


def state(site) -> dict:
    registry = Registry(site.registry_url)
    ab = site.run.eval.ab
    return {"history": registry.history("tiny"), "judgments": ab.judgments.is_file(),
            "review": site.run.data.review_csv.read_text()}


def test_without_a_write_key_nothing_that_changes_state_is_allowed_and_nothing_changes(site, dashboard):
    before = state(site)
    origin = {"origin": dashboard}
    anonymous = httpx.Client(base_url=dashboard, timeout=60)
    reader = signed_in(dashboard, READ_KEY)
    writer_elsewhere = signed_in(dashboard, KEY)
    for method, path, body in CHANGES:
        assert anonymous.request(method, path, headers=origin, **body).status_code == 401, path
        assert anonymous.request(method, path, headers={"authorization": f"Bearer {READ_KEY}"}, **body).status_code == 403, path
        refused = reader.request(method, path, headers=origin, **body)
        assert refused.status_code == 403 and "may only read" in refused.json()["error"]["message"], path
        # A signed-in browser made to post by another site (cross-site request forgery).
        forged = writer_elsewhere.request(method, path, headers={"origin": "http://attacker.example"}, **body)
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "cross_origin", path
        assert writer_elsewhere.request(method, path, **body).status_code == 403, path  # no Origin at all
    assert state(site) == before


def test_an_open_server_still_refuses_dashboard_actions_sent_from_another_site(site, tiny_model_dir):
    from tests.conftest import running
    from tuneloop.server import ServeOptions, build_app

    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=site.registry_url, runs=site.runs, jobs=False))
    before = state(site)
    with running(app) as url:
        for method, path, body in CHANGES[:4]:
            answer = httpx.request(method, url + path, headers={"origin": "http://attacker.example"}, **body)
            assert answer.status_code == 403 and answer.json()["error"]["code"] == "cross_origin", path
    assert state(site) == before


def test_pages_send_a_visitor_to_sign_in_and_a_wrong_key_is_refused(dashboard):
    anonymous = httpx.Client(base_url=dashboard, timeout=60)
    answer = anonymous.get("/ui/registry/tiny")
    assert answer.status_code == 303 and answer.headers["location"] == "/ui/login?next=%2Fui%2Fregistry%2Ftiny"
    assert "Sign in" in anonymous.get("/ui/login").text
    wrong = anonymous.post("/ui/login", data={"key": "guess", "next": "/ui"})
    assert wrong.status_code == 401 and "not one this server accepts" in wrong.text and "tuneloop_session" not in anonymous.cookies
    # After signing in, `next` may only lead to this dashboard, never to another site.
    assert anonymous.post("/ui/login", data={"key": KEY, "next": "//attacker.example/x"}).headers["location"] == "/ui"
    assert anonymous.get("/ui/static/style.css").status_code == 200  # the sign-in page's own style needs no key


def test_a_read_only_key_sees_every_page_without_the_buttons_that_change_things(dashboard):
    reader = signed_in(dashboard, READ_KEY)
    page = reader.get("/ui/registry/tiny")
    assert page.status_code == 200 and "read-only" in page.text
    assert "Point the alias" not in page.text and "Roll back" not in page.text
    assert "Point the alias" in signed_in(dashboard, KEY).get("/ui/registry/tiny").text


def test_each_page_shows_what_its_part_of_the_loop_has(site, dashboard):
    client = signed_in(dashboard, KEY)
    expected = {
        "/ui": ["Overview", "tiny-run", "@production", "requests", "p50 latency"],
        "/ui/runs": ["tiny-run", "data", "train", "eval"],
        "/ui/runs/tiny-run": ["rows read", "Systems on the test split", "finetuned", "json_valid", "Confusion matrices",
                              "Samples side by side", "upstream manifest", "paired bootstrap"],
        "/ui/registry": ["tiny", "@production"],
        "/ui/registry/tiny": ["Versions", "Alias history", "first version", str(site.run.root / "train")],
        "/ui/jobs": ["New job", "fine-tuned model"],  # (the browser tests may have added jobs)
        "/ui/traffic?window=7d": ["tiny@production", "tiny:1", "tiny:2", "p95_latency_ms", "Over time"],
        "/ui/review": ["tiny-run/eval/ab", "tiny-run/data"],
        "/ui/review/ab?dir=tiny-run/eval/ab": ["Response 1", "Response 2", "Ticket"],
        "/ui/review/data?dir=tiny-run/data": ["verdict", str(site.run.data.review_csv)],
        "/ui/playground": ["tiny:1", "tiny@production"],
    }
    for path, texts in expected.items():
        page = client.get(path)
        assert page.status_code == 200, path
        for text in texts:
            assert text in page.text, f"{path}: no {text!r}"
    # The reviewer never learns which system wrote which response.
    assert "finetuned" not in client.get("/ui/review/ab?dir=tiny-run/eval/ab").text


def test_drift_of_a_served_version_is_checked_on_demand(dashboard):
    page = signed_in(dashboard, KEY).get("/ui/traffic", params={"window": "all", "drift": "tiny@production"})
    # The verdict of the version the alias names (the site's traffic is too little for a test to decide).
    assert page.status_code == 200 and re.search(r"<p>tiny:1: <strong>(drift|no drift|too few samples)</strong></p>", page.text)
    unknown = signed_in(dashboard, KEY).get("/ui/traffic", params={"window": "all", "drift": "nope@production"})
    assert unknown.status_code == 200 and "registry has no model &#39;nope@production&#39;" in unknown.text


@pytest.mark.parametrize("path", [
    # (a client folds plain "/.." itself; these arrive as they are written)
    "/ui/runs/%2e%2e", "/ui/runs/%2e%2e/%2e%2e", "/ui/runs/tiny-run/%2e%2e/%2e%2e/home", "/ui/runs/%2Ftmp",
    "/ui/run-file?run=tiny-run&stage=data&name=train.jsonl", "/ui/run-file?run=tiny-run&stage=../..&name=report.html",
    "/ui/run-file?run=..&stage=&name=report.html", "/ui/run-file?run=tiny-run&stage=data&name=../../registry.db",
    "/ui/review/ab?dir=..", "/ui/review/data?dir=/etc", "/ui/static/../site.py", "/ui/run-metrics?run=/tmp&stage=train",
])
def test_no_url_reaches_outside_the_runs_folder(dashboard, path):
    answer = signed_in(dashboard, KEY).get(path)
    assert answer.status_code in (404, 422), (path, answer.status_code)


def test_the_curve_follows_a_training_while_it_writes_its_metrics(site, dashboard):
    live = site.runs / "live-run" / "train"
    live.mkdir(parents=True)
    lines = TrainDir(site.run.train.root).metrics.read_text().splitlines(keepends=True)
    client = signed_in(dashboard, KEY)
    params = {"run": "live-run", "stage": "train"}
    try:
        (live / "metrics.jsonl").write_text("".join(lines[:5]) + lines[5][:10])  # a line half written
        first = client.get("/ui/run-metrics", params=params).json()
        assert first["running"] and [r["step"] for r in first["records"]] == [1, 2, 3, 4, 5] and first["next"] == 5
        (live / "metrics.jsonl").write_text("".join(lines))
        second = client.get("/ui/run-metrics", params={**params, "after": first["next"]}).json()
        assert [r["step"] for r in second["records"]] == list(range(6, len(lines) + 1))
        (live / "manifest.json").write_text(json.dumps({"stage": "train", "summary": {}}))
        assert client.get("/ui/run-metrics", params={**params, "after": second["next"]}).json() == \
            {"records": [], "next": len(lines), "running": False}
    finally:
        shutil.rmtree(live.parent)


def test_the_runs_list_pages_through_many_runs(tmp_path, site):
    manifest = (site.run.train.root / "manifest.json").read_text()
    for i in range(120):
        folder = tmp_path / f"run-{i:04d}"
        folder.mkdir()
        (folder / "manifest.json").write_text(manifest)
    (tmp_path / "notes").mkdir()  # not a run
    page, total = list_runs(tmp_path, offset=100, limit=50)
    assert total == 120 and len(page) == 20
    assert {r.id for r in list_runs(tmp_path, 0, None, "run-011")[0]} == {f"run-011{i}" for i in range(10)}
