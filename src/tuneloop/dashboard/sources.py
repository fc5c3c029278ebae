"""What the dashboard reads and changes, handed to it by the HTTP process (server.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.access import Access
from tuneloop.config import MonitorConfig
from tuneloop.db.requestlog import RequestStore
from tuneloop.jobs.store import JobStore
from tuneloop.registry.store import Registry
from tuneloop.serve.catalog import Catalog


@dataclass
class Sources:
    registry: Registry
    requests: RequestStore
    runs_root: Path  # where `tuneloop run / demo / train / eval` write their folders
    access: Access = field(default_factory=Access)
    jobs: JobStore | None = None
    catalog: Catalog | None = None  # the served models (the playground, A/B routes); None: nothing served
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # alert rules and drift settings of the traffic page
    runs_jobs: bool = True  # whether this process runs queued jobs (else another server on the database does)
