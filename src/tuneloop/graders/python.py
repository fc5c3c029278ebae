"""python: the user's `def grade(sample: dict, item: dict) -> float` (OpenAI's convention) as a reward.

The code runs in a child process (python_child.py, started with `sys.executable -P`), one per
grade() call, fed one JSON line per sample, so nothing it does can take the calling process down: an
exception, printed junk, a non-number, NaN or inf costs that sample (0.0, counted in `errors`, message
kept); a sample that runs past timeout_s gets the child killed and a fresh one for the rest; code
that does not compile or defines no `grade` errors every sample with the reason.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import PythonSpec
from tuneloop.graders.templates import scope

CHILD = Path(__file__).with_name("python_child.py")
STARTUP_S = 10.0  # on top of timeout_s for the child to start and run the code's imports


class _Fatal(Exception):
    """The code cannot grade anything (it does not compile, has no `grade`, or its child does not start)."""


class _Died(Exception):
    """The child exited or garbled a reply mid-sample; the next sample gets a fresh one."""


class Python:
    def __init__(self, spec: PythonSpec, base_dir: Path | None = None):
        self.name, self.timeout_s = spec.name, spec.timeout_s
        if spec.source is not None:
            self.source, self.filename = spec.source, f"<python grader '{spec.name}'>"
        else:
            path = spec.file if spec.file.is_absolute() else (base_dir or Path.cwd()) / spec.file
            if not path.is_file():
                raise TuneloopError(f"python grader '{spec.name}': {path}: file not found")
            self.source, self.filename = path.read_text(), str(path)

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        outcomes: list[float | str] = []
        child: _Child | None = None
        try:
            for output, item in zip(outputs, items):
                try:
                    child = child or _Child(self.source, self.filename, self.timeout_s + STARTUP_S)
                except _Fatal as err:
                    outcomes += [str(err)] * (len(outputs) - len(outcomes))
                    break
                names = scope(output, item)
                try:
                    outcomes.append(child.ask({"sample": names["sample"], "item": item}, self.timeout_s))
                except _Died as err:
                    outcomes.append(str(err))
                    child.close()
                    child = None
        finally:
            if child is not None:
                child.close()
        return collect("python", self.name, outcomes)


class _Child:
    def __init__(self, source: str, filename: str, startup_s: float):
        # -P: the graders folder is not put on sys.path, so its module names cannot shadow the user's imports.
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-P", "-u", str(CHILD)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr)
        self.buffer = b""
        try:
            self._send({"source": source, "filename": filename})
            reply = self._receive(startup_s)
        except _Died as err:
            self.close()
            raise _Fatal(f"the grader's process did not start: {err}") from None
        if reply is None:
            self.close()
            raise _Fatal(f"the code did not load within {startup_s:g} s")
        if "fatal" in reply:
            self.close()
            raise _Fatal(f"the code cannot grade: {reply['fatal']}")

    def ask(self, request: dict, timeout_s: float) -> float | str:
        """The score of one sample, or why there is none; _Died when the child is no use any more."""
        self._send(request)
        reply = self._receive(timeout_s)
        if reply is None:
            raise _Died(f"no result within timeout_s={timeout_s:g} s (the process was stopped)")
        if isinstance(reply.get("error"), str):
            return reply["error"]
        score = reply.get("score")
        if type(score) is float:
            return score
        raise _Died(f"unreadable reply {reply!r}")

    def _send(self, message: dict) -> None:
        try:
            # default=str: a row field JSON cannot carry (a date) reaches the code as text
            self.proc.stdin.write(json.dumps(message, default=str).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _Died(self._exited()) from None

    def _receive(self, timeout_s: float) -> dict | None:
        """The next reply line, or None when none came within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                raise _Died(self._exited())
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise _Died(f"unreadable reply {line[:200]!r}") from None
        if not isinstance(reply, dict):
            raise _Died(f"unreadable reply {line[:200]!r}")
        return reply

    def _exited(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # it closed its stdout but lives on
            self.proc.kill()
            code = self.proc.wait()
        self.stderr.seek(0)
        last = [line for line in self.stderr.read()[-4000:].decode(errors="replace").splitlines() if line.strip()]
        return f"the grader's process exited (code {code})" + (f": {last[-1].strip()}" if last else "")

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.kill()  # a child stuck in the user's code never reads the closed stdin
        self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()
