"""What a trial varies: an Optuna suggestion for each `sweep.space` key, and the pipeline YAML with them set."""

from __future__ import annotations

import copy
from typing import Any

from tuneloop.config import SweepConfig, SweepRange, sweep_kind


def suggest(trial, space: dict[str, SweepRange | list[Any]]) -> dict[str, Any]:
    """The trial's value for each key: from the range (an int for an int setting) or from the list."""
    params = {}
    for key, choice in space.items():
        if isinstance(choice, list):
            params[key] = trial.suggest_categorical(key, choice)
        elif sweep_kind(key) is int:
            params[key] = trial.suggest_int(key, int(choice.low), int(choice.high), step=int(choice.step or 1), log=choice.log)
        else:
            params[key] = trial.suggest_float(key, choice.low, choice.high, step=choice.step, log=choice.log)
    return params


def grid(space: dict[str, SweepRange | list[Any]]) -> dict[str, list[Any]]:
    """Every value of each key, for Optuna's grid sampler (config validation saw that ranges have a step)."""
    values = {}
    for key, choice in space.items():
        if isinstance(choice, list):
            values[key] = choice
        else:
            count = int(round((choice.high - choice.low) / choice.step)) + 1
            kind = sweep_kind(key) or float
            values[key] = [kind(choice.low + i * choice.step) for i in range(count) if choice.low + i * choice.step <= choice.high + 1e-12]
    return values


def defaults(train: dict, space: dict[str, SweepRange | list[Any]]) -> dict[str, Any] | None:
    """The config's own value of each swept setting (`train`: TrainConfig.model_dump()), or None when one lies outside
    the space (then no trial can run it as it is)."""
    values = {}
    for key, choice in space.items():
        value = train
        for part in key.split(".")[1:]:
            value = value[part]
        inside = value in choice if isinstance(choice, list) else (
            value is not None and choice.low <= value <= choice.high
            and (not choice.step or abs((value - choice.low) / choice.step - round((value - choice.low) / choice.step)) < 1e-9))
        if not inside:
            return None
        values[key] = value
    return values


def trial_config(raw: dict, params: dict[str, Any], sweep: SweepConfig) -> dict:
    """The pipeline YAML for one trial: the parameters set, and the sweep's objective as train.select_by (what the
    trainer scores at each evaluation, picks the best checkpoint by and reports to the pruner)."""
    raw = copy.deepcopy(raw)
    raw.pop("sweep", None)
    for key, value in params.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    if sweep.objective:
        raw.setdefault("train", {})["select_by"] = sweep.objective
    return raw
