"""Console output shared by every stage: one rich console, and progress that works with or without a terminal.

In a terminal, progress is a rich bar. Anywhere else (a log file, `| cat`, CI) it is plain lines: one when a
task starts, ends or has moved on for `every` seconds, and a heartbeat line while a long step runs, so that
a reader always sees within 30 s that work goes on, and how far it has got. TUNELOOP_PROGRESS_SECONDS sets how
often a moving task prints (15 s by default).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# stderr, so `--json` output on stdout stays machine-readable. Without a terminal, lines are not cut at
# 80 columns (a log keeps whole table rows).
console = Console(stderr=True, width=None if sys.stderr.isatty() else int(os.environ.get("COLUMNS", 160)))


def progress(transient: bool = False):
    if sys.stderr.isatty() and not console.is_dumb_terminal:
        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=transient,
        )
    return LineProgress(every=_seconds("TUNELOOP_PROGRESS_SECONDS", 15.0))


class LineProgress:
    """The subset of rich's Progress the stages use (add_task, update), as throttled plain lines."""

    def __init__(self, every: float = 15.0, heartbeat: float = 25.0):
        self.every, self.heartbeat = every, heartbeat
        self._tasks: dict[int, dict] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="progress-lines", daemon=True)

    def __enter__(self) -> LineProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join(2)
        with self._lock:
            for task in self._tasks.values():
                if task["visible"] and task["printed_at"] < task["changed_at"]:
                    self._print(task)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, visible: bool = True, **fields) -> int:
        with self._lock:
            task_id = len(self._tasks)
            now = time.monotonic()
            self._tasks[task_id] = {"description": description, "total": total, "completed": completed, "visible": visible,
                                    "info": fields.get("info", ""), "started": now, "start_done": completed,
                                    "changed_at": now, "printed_at": now}
            if visible:
                self._print(self._tasks[task_id], note="started")
        return task_id

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None, total: float | None = None,
               visible: bool | None = None, **fields) -> None:
        with self._lock:
            task = self._tasks[task_id]
            if completed is not None:
                task["completed"] = completed
            if advance:
                task["completed"] += advance
            for key, value in (("total", total), ("visible", visible), ("info", fields.get("info"))):
                if value is not None:
                    task[key] = value
            now = task["changed_at"] = time.monotonic()
            finished = task["total"] is not None and task["completed"] >= task["total"]
            if task["visible"] and (finished or now - task["printed_at"] >= self.every):
                self._print(task)

    def _beat(self) -> None:
        while not self._done.wait(1.0):
            with self._lock:
                for task in self._tasks.values():
                    if task["visible"] and time.monotonic() - task["printed_at"] >= self.heartbeat:
                        self._print(task, note="still working")

    def _print(self, task: dict, note: str = "") -> None:
        now = time.monotonic()
        task["printed_at"] = now
        elapsed = now - task["started"]
        parts = [task["description"]]
        if task["total"]:
            parts.append(f"{task['completed']:g}/{task['total']:g} ({task['completed'] / task['total']:.0%})")
        elif task["completed"]:
            parts.append(f"{task['completed']:g}")
        if task["info"]:
            parts.append(str(task["info"]))
        timing = f"{_clock(elapsed)} elapsed"
        moved = task["completed"] - task["start_done"]
        if task["total"] and moved > 0 and task["completed"] < task["total"]:
            timing += f", ~{_clock(elapsed / moved * (task['total'] - task['completed']))} left"
        parts.append(timing + (f" ({note})" if note else ""))
        print(f"[{time.strftime('%H:%M:%S')}] " + " · ".join(parts), file=sys.stderr, flush=True)


def _seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return min(max(value, 0.1), 3600.0)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"
