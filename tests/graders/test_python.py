"""The python grader runs the user's code in a child process: whatever the code does to one sample (raise,
hang, print, return junk) costs that sample only, and never blocks the caller beyond timeout_s."""

import time

from pydantic import TypeAdapter

from tuneloop.config import TaskConfig
from tuneloop.graders.build import build_grader
from tuneloop.graders.specs import GraderSpec

SPEC = TypeAdapter(GraderSpec)

# One behaviour per answer: the answer text says what the code does with it.
MISCHIEF = '''
import math, sys, time

def grade(sample, item):
    what = sample["output_text"]
    print("junk on stdout {", flush=True)
    sys.stdout.write("more junk\\n")
    if what == "raise":
        return 1 / 0
    if what == "hang":
        time.sleep(60)
    if what == "abc":
        return "abc"
    if what == "nan":
        return math.nan
    if what == "inf":
        return float("inf")
    if what == "exit":
        sys.exit(3)
    if what == "read":
        return len(sys.stdin.read())  # the protocol is not on this stdin: nothing to read
    if what == "crash":
        import os
        os._exit(9)
    return len(what) / 10 + (0.5 if item["reference"] == what else 0.0) + (sample["output_json"] or {}).get("bonus", 0)
'''


def python_grader(source: str, timeout_s: float = 1.0, **extra):
    return build_grader(SPEC.validate_python({"type": "python", "name": "g", "source": source, "timeout_s": timeout_s, **extra}), TaskConfig())


def test_every_failure_is_reported_per_sample_and_good_samples_still_score():
    outputs = ["ok", "raise", "hang", "abc", "nan", "inf", "exit", "crash", "okay", '{"bonus": 2}']
    items = [{"reference": "okay"} for _ in outputs]
    start = time.monotonic()
    grades = python_grader(MISCHIEF).grade(outputs, items)
    assert time.monotonic() - start < 8  # the hang cost its 1 s timeout, not 60 s
    assert grades.total == [0.2, 0, 0, 0, 0, 0, 0, 0, 0.9, 3.2]
    assert grades.errors == {"g": 7} and grades.parts == {"g": grades.total}
    assert grades.messages == [  # the first five kept; all seven counted
        "python grader 'g': sample 1: ZeroDivisionError: division by zero (line 9)",
        "python grader 'g': sample 2: no result within timeout_s=1 s (the process was stopped)",
        "python grader 'g': sample 3: grade returned 'abc' (str), not a number",
        "python grader 'g': sample 4: grade returned nan, not a finite number",
        "python grader 'g': sample 5: grade returned inf, not a finite number",
    ]


def test_code_that_exits_kills_its_process_or_reads_stdin_costs_only_that_sample():
    grades = python_grader(MISCHIEF).grade(["exit", "crash", "read", "okay"], [{"reference": "okay"}] * 4)
    assert grades.total == [0.0, 0.0, 0.0, 0.9] and grades.errors == {"g": 2}
    assert "sample 0: SystemExit: 3" in grades.messages[0]
    assert "sample 1: the grader's process exited (code 9)" in grades.messages[1]


def test_code_that_cannot_grade_errors_every_sample_with_the_reason():
    broken = python_grader("def grade(sample, item)\n    return 1\n").grade(["a", "b"], [{}, {}])
    assert broken.total == [0.0, 0.0] and broken.errors == {"g": 2}
    assert broken.messages[0] == "python grader 'g': sample 0: the code cannot grade: SyntaxError: expected ':' (line 1)"
    missing = python_grader("def score(sample, item):\n    return 1\n").grade(["a"], [{}])
    assert "defines no function `grade(sample, item)`" in missing.messages[0] and missing.errors == {"g": 1}
    failing = python_grader("import no_such_module_here\ndef grade(s, i):\n    return 1\n").grade(["a"], [{}])
    assert "ModuleNotFoundError: No module named 'no_such_module_here' (line 1)" in failing.messages[0]


def test_a_grader_file_relative_to_the_config_and_its_neighbour_modules(tmp_path):
    (tmp_path / "helpers.py").write_text("def words(text):\n    return len(text.split())\n")
    (tmp_path / "reward.py").write_text("from helpers import words\n\ndef grade(sample, item):\n"
                                        "    return min(words(sample['output_text']) / words(item['reference']), 1.0)\n")
    spec = SPEC.validate_python({"type": "python", "file": "reward.py"})
    grades = build_grader(spec, TaskConfig(), base_dir=tmp_path).grade(["one two", "one two three four"], [{"reference": "a b c d"}] * 2)
    assert grades.total == [0.5, 1.0] and grades.errors == {"python": 0}


def test_many_samples_go_through_one_child_quickly():
    start = time.monotonic()
    grades = python_grader("def grade(sample, item):\n    return float(sample['output_text'] == item['answer'])\n").grade(
        [str(i % 3) for i in range(300)], [{"answer": "1"} for _ in range(300)])
    assert sum(grades.total) == 100 and grades.errors == {"g": 0}
    assert time.monotonic() - start < 5
