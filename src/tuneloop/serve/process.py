"""The server process under uvicorn, with a shutdown that is orderly and bounded by `--drain-timeout`.

On SIGTERM (or SIGINT): the door closes first (the app answers new requests with 503 and uvicorn stops
accepting connections), the requests in flight finish, then background work and the engines stop with
whatever time is left; past the limit, what remains is cancelled and a last-resort timer ends the
process, so an orchestrator's kill grace period is never the thing that stops it.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import uvicorn
from fastapi import FastAPI

HARD_STOP_MARGIN_S = 5.0  # after the drain limit, this long for the last steps before the process is ended


class DrainingServer(uvicorn.Server):
    def __init__(self, app: FastAPI, *, host: str, port: int, drain_timeout: float):
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=drain_timeout))
        self.app, self.drain_timeout, self._deadline = app, drain_timeout, None
        app.state.stop_within = self.time_left

    def handle_exit(self, sig, frame) -> None:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.drain_timeout
            self.app.state.draining.set()  # new requests get 503 from now on (guards.py)
            threading.Thread(target=self._hard_stop, name="hard-stop", daemon=True).start()
        super().handle_exit(sig, frame)

    def time_left(self) -> float:
        return self.drain_timeout if self._deadline is None else self._deadline - time.monotonic()

    def _hard_stop(self) -> None:
        time.sleep(self.drain_timeout + HARD_STOP_MARGIN_S)
        print(f"tuneloop: shutdown took longer than --drain-timeout {self.drain_timeout:g} s; exiting now", file=sys.stderr, flush=True)
        for kill in getattr(self.app.state, "on_hard_stop", []):
            kill()  # child processes (vLLM) must not outlive the server
        os._exit(1)
