"""What the server records: Prometheus metrics for /metrics and a log of every request and response.

The request log goes to the registry database (table request_log) or to a JSONL file; a background
thread writes it in batches so a slow disk never holds up a response. The monitoring stage reads it.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tuneloop.db.requestlog import RequestStore

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ["model", "variant"]
        self.requests = Counter("tuneloop_requests", "Requests answered, by HTTP status.", [*labels, "endpoint", "status"], registry=self.registry)
        self.errors = Counter("tuneloop_request_errors", "Requests that ended in an error (status >= 400).", [*labels, "status"], registry=self.registry)
        self.latency = Histogram("tuneloop_request_latency_seconds", "Time from request to last token.", labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.ttft = Histogram("tuneloop_time_to_first_token_seconds", "Time from request to first generated token.", labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("tuneloop_prompt_tokens", "Prompt tokens processed.", labels, registry=self.registry)
        self.completion_tokens = Counter("tuneloop_completion_tokens", "Tokens generated.", labels, registry=self.registry)
        self.tokens_per_second = Gauge("tuneloop_decode_tokens_per_second", "Tokens per second of the last decode step.", ["engine"], registry=self.registry)
        self.batch_size = Gauge("tuneloop_batch_size", "Rows in the last decode step.", ["engine"], registry=self.registry)
        self.queue_depth = Gauge("tuneloop_queue_depth", "Requests waiting to join a batch.", ["engine"], registry=self.registry)

    def observe(self, record: dict[str, Any], endpoint: str) -> None:
        labels = {"model": record["model"], "variant": record.get("variant") or ""}
        self.requests.labels(**labels, endpoint=endpoint, status=str(record["status"])).inc()
        if record["status"] >= 400:
            self.errors.labels(**labels, status=str(record["status"])).inc()
            return
        self.latency.labels(**labels).observe(record["latency_ms"] / 1000)
        if record.get("ttft_ms") is not None:
            self.ttft.labels(**labels).observe(record["ttft_ms"] / 1000)
        self.prompt_tokens.labels(**labels).inc(record.get("prompt_tokens") or 0)
        self.completion_tokens.labels(**labels).inc(record.get("completion_tokens") or 0)

    def sample_engines(self, engines: dict) -> None:
        for key, engine in engines.items():
            name = Path(key).name
            self.queue_depth.labels(engine=name).set(engine.queue_depth)
            self.batch_size.labels(engine=name).set(engine.last_batch_size)
            self.tokens_per_second.labels(engine=name).set(engine.tokens_per_second)


class RequestLog:
    """Writes request records to the database's request log (`store`) or appends them to a JSONL file."""

    def __init__(self, store: RequestStore | None = None, path: Path | None = None, flush_every: float = 0.5):
        self.store, self.path, self.flush_every = store, path, flush_every
        self._queue: queue.Queue[dict | threading.Event | None] = queue.Queue()  # None: stop
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def add(self, record: dict[str, Any]) -> None:
        self._queue.put(record)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record added so far is written."""
        written = threading.Event()
        self._queue.put(written)
        written.wait(timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            deadline = time.monotonic() + self.flush_every
            while isinstance(items[-1], dict) and (left := deadline - time.monotonic()) > 0:
                try:
                    items.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            self._write([item for item in items if isinstance(item, dict)])
            if isinstance(items[-1], threading.Event):
                items[-1].set()
            if items[-1] is None:
                return

    def _write(self, records: list[dict]) -> None:
        if not records:
            return
        try:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as sink:
                    sink.writelines(json.dumps(r, default=str) + "\n" for r in records)
            elif self.store is not None:
                self.store.log_requests(records)
        except Exception as err:  # logging must never take the server down; say so and go on
            print(f"tuneloop: could not write {len(records)} request log records: {err}", flush=True)
