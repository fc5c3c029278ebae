"""The child process of the python grader (python.py starts it with `sys.executable`): it loads the
user's `grade(sample, item)` and answers one JSON line per sample. Standard library only, and nothing
of tuneloop: it runs the user's code, not ours.

Protocol, JSON lines (never pickle: nothing the child sends can run code in the parent):
    parent -> child, first: {"source": "...", "filename": "..."}
    child -> parent:         {"ready": true}, or {"fatal": "SyntaxError: ... (line 3)"} and exit
    then per sample:         {"sample": {...}, "item": {...}} -> {"score": 0.5} or {"error": "ZeroDivisionError: ..."}
"""

import json
import math
import numbers
import os
import sys
import traceback


def main() -> None:
    # The protocol keeps its own copies of stdin and stdout; fd 1 then points at stderr and fd 0 at
    # /dev/null, so whatever the user's code prints (Python or C level) or reads cannot touch the protocol.
    requests, replies = os.fdopen(os.dup(0), "r"), os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin, sys.stdout = open(os.devnull), sys.stderr

    def send(reply: dict) -> None:
        replies.write(json.dumps(reply) + "\n")
        replies.flush()

    setup = json.loads(requests.readline())
    grade = load(setup["source"], setup["filename"], send)
    if grade is None:
        return
    send({"ready": True})
    for line in requests:
        request = json.loads(line)
        try:
            send(checked(grade(request["sample"], request["item"])))
        except BaseException as err:  # sys.exit() and KeyboardInterrupt in the user's code are its errors too
            send({"error": describe(err, setup["filename"])})


def load(source: str, filename: str, send):
    if os.path.isfile(filename):  # as `python file.py` would: modules beside the file are importable
        sys.path.insert(0, os.path.dirname(os.path.abspath(filename)))
    namespace = {"__name__": "tuneloop_grader", "__file__": filename}
    try:
        exec(compile(source, filename, "exec"), namespace)
    except BaseException as err:
        send({"fatal": describe(err, filename)})
        return None
    grade = namespace.get("grade")
    if not callable(grade):
        send({"fatal": "the code defines no function `grade(sample, item)`"})
        return None
    return grade


def checked(score) -> dict:
    if not isinstance(score, numbers.Real):
        shown = repr(score)
        return {"error": f"grade returned {shown[:100]}{'...' if len(shown) > 100 else ''} "
                         f"({type(score).__name__}), not a number"}
    value = float(score)
    return {"score": value} if math.isfinite(value) else {"error": f"grade returned {value}, not a finite number"}


def describe(err: BaseException, filename: str) -> str:
    """'ZeroDivisionError: division by zero (line 3)': the line is the last one of the user's code."""
    if isinstance(err, SyntaxError):
        return f"SyntaxError: {err.msg} (line {err.lineno})"
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__) if frame.filename == filename]
    return f"{type(err).__name__}: {err}" + (f" (line {lines[-1]})" if lines else "")


if __name__ == "__main__":
    main()
