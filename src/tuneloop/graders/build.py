"""A grader from its spec (`build_grader`), and the reward of an objective (`reward_spec`): its own
`reward`, or else its gates, each gated per-sample metric a `metric` grader, averaged.

    grader = build_grader(reward_spec(cfg.objective, cfg.task), cfg.task, base_dir=config_file.parent)
    grades = grader.grade(outputs, items)   # items: reference, input, messages and the row's fields
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.grades import Grader, Grades
from tuneloop.graders.json_schema import JsonSchema
from tuneloop.graders.metric import Metric, corpus_only, metric_names
from tuneloop.graders.multi import Multi
from tuneloop.graders.python import Python
from tuneloop.graders.score_model import ScoreModel
from tuneloop.graders.specs import (GraderSpec, JsonSchemaSpec, MetricSpec, MultiSpec, PythonSpec, ScoreModelSpec,
                                    StringCheckSpec, TextSimilaritySpec)
from tuneloop.graders.string_check import StringCheck
from tuneloop.graders.text_similarity import TextSimilarity

__all__ = ["Grader", "Grades", "build_grader", "reward_spec"]
LOWER_IS_BETTER = ("<", "<=")


def build_grader(spec: GraderSpec, task: TaskConfig, base_dir: Path | None = None) -> Grader:
    """base_dir: where a python grader's relative `file` is (the config file's folder; default: the
    current directory). Configs loaded with load_config already carry absolute paths."""
    if isinstance(spec, StringCheckSpec):
        return StringCheck(spec)
    if isinstance(spec, TextSimilaritySpec):
        return TextSimilarity(spec)
    if isinstance(spec, JsonSchemaSpec):
        return JsonSchema(spec, task)
    if isinstance(spec, MetricSpec):
        return Metric(spec, task)
    if isinstance(spec, PythonSpec):
        return Python(spec, base_dir)
    if isinstance(spec, ScoreModelSpec):
        return ScoreModel(spec)
    if isinstance(spec, MultiSpec):
        # In a multi, a grader left with its default name is called by its key: two string_checks
        # then keep apart in `parts`, `errors` and the training metrics.
        named = {key: sub.model_copy(update={"name": key}) if sub.name == sub.type else sub for key, sub in spec.graders.items()}
        return Multi(spec, {key: build_grader(sub, task, base_dir) for key, sub in named.items()})
    raise TypeError(f"not a grader spec: {spec!r}")


def reward_spec(objective: ObjectiveConfig, task: TaskConfig) -> GraderSpec:
    """`objective.reward`, or else the gates as a reward: the mean of a `metric` grader per gate on a
    per-sample metric of this task (1 - value where lower is better). Gates on another system
    (`metric@base`), on a comparison (`metric: finetuned - base`) or on a corpus metric are left out."""
    if objective.reward is not None:
        return objective.reward
    per_sample, corpus = metric_names(task)
    graders: dict[str, MetricSpec] = {}
    terms, skipped = [], []
    for key, gate in objective.gates.items():
        if "@" in key or ":" in key:
            skipped.append(f"{key} (compares systems)")
        elif key not in per_sample:
            why = "a corpus metric, no per-sample value" if corpus_only(key, corpus) else "not a per-sample metric of this task"
            skipped.append(f"{key} ({why})")
        else:
            graders[key] = MetricSpec(type="metric", name=key, metric=key)
            terms.append(f"(1 - {key})" if gate.op in LOWER_IS_BETTER else key)
    if not graders:
        why = f"none of the gates is a per-sample metric ({'; '.join(skipped)})" if skipped else "there are no gates"
        raise TuneloopError(f"objective.reward: {why}, so there is no reward to train on; "
                            "write objective.reward (see README)")
    if len(graders) > 16:
        raise TuneloopError(f"objective.reward: {len(graders)} gates qualify as a reward, a multi grader takes 16; "
                            "write objective.reward (see README)")
    formula = None if terms == list(graders) else f"({' + '.join(terms)}) / {len(terms)}"
    return MultiSpec(type="multi", name="gates", graders=graders, calculate_output=formula)
