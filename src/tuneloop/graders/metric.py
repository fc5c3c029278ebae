"""metric (tuneloop's): one per-sample metric of the metric registry (metrics/: json_valid, schema_valid,
<label>_accuracy, exact_match, rouge1, refusal, tool_name_accuracy, ...) as a reward, the same number per
answer that the evaluation averages. Corpus metrics (macro F1, BLEU, chrF) have no per-sample value.

Which names exist depends on the task (schema_valid needs an output schema, <label>_accuracy a label
field), so they are found by running each sample metric on one probe answer, except the ones that
need a model to say anything (MODEL_BACKED), which are named here instead of loading the model.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tuneloop import metrics
from tuneloop.config import TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import MetricSpec
from tuneloop.metrics import CORPUS, SAMPLE, Context

# Registry function -> the metrics it gives, for the ones a probe would make load a model (~10 s for MiniLM).
MODEL_BACKED = {"semantic_similarity": ("semantic_similarity",)}
PROBE = "{}"


def metric_names(task: TaskConfig) -> tuple[dict[str, Callable], set[str]]:
    """(per-sample metric name -> the registry function computing it, corpus metric names) for `task`."""
    metrics._load_all()  # every metric module registers itself on import
    ctx = Context(task, tools=[None])  # tool metrics then name themselves too (rows without tools expect no call)
    per_sample: dict[str, Callable] = {}
    for function_name, function in SAMPLE.items():
        names = MODEL_BACKED.get(function_name) or function([PROBE], [PROBE], ctx)[0]
        per_sample.update({name: function for name in names})
    # A reference with every label field set, so the classification metrics name themselves.
    reference = json.dumps({field: "x" for field in task.label_fields})
    corpus = {name for function in CORPUS.values() for name in function([reference], [reference], ctx)}
    return per_sample, corpus


def corpus_only(name: str, corpus: set[str]) -> bool:
    """`name` is a corpus metric, written in full (category.f1_macro, bleu) or by its last part (f1_macro)."""
    return name in corpus or any(c.endswith(f".{name}") for c in corpus)


def resolve(name: str, task: TaskConfig) -> Callable:
    per_sample, corpus = metric_names(task)
    if name in per_sample:
        return per_sample[name]
    if corpus_only(name, corpus):
        raise TuneloopError(f"metric grader: '{name}' is a corpus metric, computed on the whole set, with no "
                            f"per-sample value to reward; per-sample metrics here: {', '.join(sorted(per_sample))}")
    raise TuneloopError(f"metric grader: unknown metric '{name}'; per-sample metrics for this task: {', '.join(sorted(per_sample))}")


class Metric:
    def __init__(self, spec: MetricSpec, task: TaskConfig):
        self.name, self.metric, self.task = spec.name, spec.metric, task
        self.function = resolve(spec.metric, task)

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        references = [_text(item.get("reference")) for item in items]
        tools = [item.get("tools") for item in items]
        ctx = Context(self.task, tools if any(tools) else None)  # as the evaluation scores them
        try:
            scores = _scored(self.function, outputs, references, ctx)
        except Exception as err:  # the registry scores the batch at once: every sample shares the failure
            return collect("metric", self.name, [f"{self.metric}: {type(err).__name__}: {err}"] * len(outputs))
        missing = f"{self.metric} has no value for this sample"
        return collect("metric", self.name, [s.get(self.metric, missing) for s in scores])


# The last batch each registry function scored: the gates' reward is a multi of metric graders that
# mostly share one function (json_valid, schema_valid and <label>_accuracy all come from `structure`).
_LAST: dict[Callable, tuple[tuple, list[dict[str, float]]]] = {}


def _scored(function: Callable, outputs: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    key = (tuple(outputs), tuple(references), ctx.task.model_dump_json(), repr(ctx.tools))
    last = _LAST.get(function)
    if last is None or last[0] != key:
        last = _LAST[function] = (key, function(outputs, references, ctx))
    return last[1]


def _text(value: object) -> str:
    # A reference that is not text (a row's JSON object) is compared as the JSON the model would write.
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
