"""A short burst of simulated production traffic, for the demo: the real server on 127.0.0.1 serving the
registered version, concurrent clients sending held-out test prompts (and a few bad requests), one
piece of feedback, then the monitoring report of exactly that burst."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tuneloop.artifacts import read_jsonl
from tuneloop.db import Database
from tuneloop.db.requestlog import RequestStore
from tuneloop.layout import DataDir
from tuneloop.monitor import checks
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app


def traffic_burst(database: Database, base: str, model_ref: str, data_dir: Path, out: Path, *, requests: int = 16,
                  concurrency: int = 8, max_tokens: int = 96) -> dict:
    import uvicorn

    rows = read_jsonl(DataDir(data_dir).test)[:requests]
    conversations = [[m for m in row["messages"] if m["role"] != "assistant"] for row in rows]
    started = dt.datetime.now(dt.UTC)
    app, _ = build_app(ServeOptions(models=[model_ref], base=base, registry=database.url, max_batch=concurrency))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    try:
        with httpx.Client(base_url=url, timeout=600) as http, ThreadPoolExecutor(concurrency) as pool:
            ask = lambda messages, model=model_ref, limit=max_tokens: http.post(  # noqa: E731
                "/v1/chat/completions", json={"model": model, "messages": messages, "max_tokens": limit, "temperature": 0})
            answers = list(pool.map(ask, conversations))
            bad = [ask(conversations[0], model="no-such-model"), ask(conversations[0], limit=10**6)]  # 404, 400
            first = answers[0].json()
            http.post("/v1/feedback", json={"request_id": first["id"], "rating": "up", "comment": "simulated user"})
    finally:
        server.should_exit = True
        thread.join(60)  # drains, then flushes the request log
    result = checks.report(RequestStore(database), Registry(database), out, since=started)
    result["statuses"] = sorted(r.status_code for r in answers + bad)
    return result


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
