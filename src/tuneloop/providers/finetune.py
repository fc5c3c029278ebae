"""The files and fine-tuning jobs API of an OpenAI-compatible provider, as a client: upload, create, follow,
download. Reads are retried; creates only where the provider cannot have acted (client.py).

Events come newest first (OpenAI's order); `new_events` pages back to the last one seen and returns the new
ones oldest first, so a follower that restarts reads each event once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from tuneloop.errors import TuneloopError
from tuneloop.providers.client import Client

FINAL = ("succeeded", "failed", "cancelled")


class HostedJobs:
    def __init__(self, client: Client):
        self.client = client

    def upload(self, path: Path, purpose: str = "fine-tune") -> dict:
        with path.open("rb") as handle:
            file = self.client.json("POST", "/files", safe=False, files={"file": (path.name, handle, "application/jsonl")},
                                    data={"purpose": purpose})
        if file.get("status") == "error":
            raise TuneloopError(f"the provider refused {path.name} ({file.get('id')}): {file.get('status_details')}")
        return file

    def create(self, **body: Any) -> dict:
        return self.client.json("POST", "/fine_tuning/jobs", safe=False, json={k: v for k, v in body.items() if v is not None})

    def get(self, job_id: str) -> dict:
        return self.client.json("GET", f"/fine_tuning/jobs/{job_id}")

    def jobs(self, **filters: Any) -> Iterator[dict]:
        """Every job the provider lists (newest first), page by page."""
        after = None
        while True:
            page = self.client.json("GET", "/fine_tuning/jobs", params={"limit": 100, **filters, **({"after": after} if after else {})})
            yield from page.get("data") or []
            if not page.get("has_more") or not page.get("data"):
                return
            after = page["data"][-1]["id"]

    def find_model(self, model: str) -> dict:
        """The finished job that made the fine-tuned model `model` (ft:...)."""
        for job in self.jobs():
            if job.get("fine_tuned_model") == model:
                return job
        raise TuneloopError(f"{self.client.base_url}: no fine-tuning job made the model '{model}' (or it is not listed "
                            "under this key); give --job JOB_ID instead")

    def new_events(self, job_id: str, seen: str | None) -> list[dict]:
        """Events after the one with id `seen` (all when None), oldest first."""
        found, after = [], None
        while True:
            params = {"limit": 100, **({"after": after} if after else {})}
            page = self.client.json("GET", f"/fine_tuning/jobs/{job_id}/events", params=params)
            data = page.get("data") or []
            for event in data:
                if event.get("id") == seen:
                    return found[::-1]
                found.append(event)
            if not page.get("has_more") or not data:
                return found[::-1]
            after = data[-1]["id"]

    def content(self, file_id: str) -> bytes:
        return self.client.send("GET", f"/files/{file_id}/content").content

    def file(self, file_id: str) -> dict:
        return self.client.json("GET", f"/files/{file_id}")


def job_error(job: dict) -> str:
    """What a failed job's error says, for a message."""
    error = job.get("error") or {}
    if isinstance(error, dict) and error.get("message"):
        return f"{error.get('code') or 'error'}: {error['message']}"
    return f"status {job.get('status')}"

