"""A router name on the real server: each request goes to the model its content picks; the route comes
back in a header and is logged; /v1/models lists the router."""

from __future__ import annotations

import json
import time

import httpx

from tests.conftest import running
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app

ROUTER = """
router:
  name: support-router
  fallback: general
  routes:
    - name: billing
      model: support:1
      rules: [{{regex: "(?i)\\\\b(invoice|refund)\\\\b"}}, {{metadata: {{team: finance}}}}]
    - name: technical
      model: support:2
      rules: [{{keywords: [router, wifi]}}]
    - name: general
      model: "{base}"
"""


def test_requests_follow_the_router(tiny_model_dir, adapters, tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    for key in ("a", "b"):
        registry.register("support", adapters[key], str(tiny_model_dir), "lora")
    (tmp_path / "router.yaml").write_text(ROUTER.format(base=tiny_model_dir))
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=url, router=tmp_path / "router.yaml",
                                    request_log=str(tmp_path / "log.jsonl")))
    with running(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        def ask(text: str, **extra) -> httpx.Response:
            body = {"model": "support-router", "messages": [{"role": "user", "content": text}], "max_tokens": 2, **extra}
            response = http.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            return response

        assert ask("Where is my invoice?").headers["x-tuneloop-route"] == "billing"
        assert ask("My wifi router keeps dropping").headers["x-tuneloop-model"] == "support:2"
        assert ask("hello there", metadata={"team": "finance"}).headers["x-tuneloop-route"] == "billing"
        fallback = ask("hello there")
        assert (fallback.headers["x-tuneloop-route"], fallback.headers["x-tuneloop-model"]) == ("general", str(tiny_model_dir))
        assert "support-router" in {m["id"] for m in http.get("/v1/models").json()["data"]}
    time.sleep(0.1)
    routes = [json.loads(line)["route"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert routes == ["support-router/billing", "support-router/technical", "support-router/billing", "support-router/general"]


def test_route_train_cli_writes_a_classifier_the_router_uses(tmp_path):
    from typer.testing import CliRunner

    from tuneloop.cli import app
    from tuneloop.serve.router import Router

    examples = {
        "billing": ["I was charged twice", "where is my invoice", "refund my payment", "my card was billed wrongly"],
        "technical": ["the app crashes on start", "wifi keeps dropping", "screen stays black", "cannot install the update"],
        "general": ["what are your opening hours", "do you ship abroad", "who do I talk to", "tell me about your company"],
    }
    routes = "\n".join(f"    - name: {name}\n      model: m-{name}\n      examples: {json.dumps(texts)}" for name, texts in examples.items())
    (tmp_path / "router.yaml").write_text(f"router:\n  name: r\n  fallback: general\n  classifier: clf\n  routes:\n{routes}\n")
    result = CliRunner().invoke(app, ["route", "train", str(tmp_path / "router.yaml"), "--out", str(tmp_path / "clf"), "--json"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.output.strip().splitlines()[-1])["accuracy"] <= 1
    decision = Router.load(tmp_path / "router.yaml").route("my invoice shows a double charge")
    assert (decision.method, decision.route) == ("classifier", "billing")
