"""`tuneloop loop`: one round of the closed loop, chaining the stages through their artifacts on disk.

feedback -> data (old inputs + feedback, the production model's test split frozen) -> train (and a GRPO
round on the SFT model when the config has `rl:`) ->
evaluate the candidate (gates) and production on the same frozen test split -> register the candidate
-> point `challenger` at it -> move `production` to it only when its gates pass and no gated metric
is worse than production's (within `loop.tolerance`). Otherwise production stays and the round says why.
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneloop.artifacts import read_manifest
from tuneloop.config import MixConfig, ModelConfig, ObjectiveConfig, PipelineConfig
from tuneloop.data.prepare import prepare
from tuneloop.db import Database
from tuneloop.db.requestlog import RequestStore
from tuneloop.eval.evaluate import evaluate
from tuneloop.layout import DataDir, PipelineDir
from tuneloop.models import trained_weights, weights_folder
from tuneloop.monitor.feedback import export_feedback
from tuneloop.pipelines.rl_round import grpo_round
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry
from tuneloop.train.trainer import train
from tuneloop.ui import console


def run_loop(cfg: PipelineConfig, run_dir: Path) -> dict:
    started = time.time()
    folders = PipelineDir(run_dir)
    database = Database(cfg.registry.url)
    registry = Registry(database)
    name = cfg.registry.name
    production = _alias(registry, name, "production")
    console.print(f"production: {production['ref'] if production else 'none yet (this round can set it)'}")

    console.rule("[bold]1/5 feedback")
    inputs = list(cfg.data.inputs)
    feedback = None
    if cfg.loop.feedback:
        feedback = export_feedback(RequestStore(database), folders.feedback, min_score=cfg.loop.min_score, pii=cfg.data.pii)
        console.print(f"{feedback['rows']} rows from feedback ({feedback['corrected']} corrected, {feedback['approved']} approved); "
                      f"skipped {feedback['skipped']}")
        if feedback["rows"]:
            inputs.append(Path(feedback["out"]))

    console.rule("[bold]2/5 data")
    frozen = _test_split_of(production) or cfg.data.frozen_test
    data_dir = folders.data.root
    data_cfg = cfg.data.model_copy(update={"frozen_test": frozen, **_replay(cfg, production)})
    report = prepare(inputs, data_dir, data_cfg, cfg.task, cfg.model)
    console.print(f"{report['splits']} (test split {'frozen from ' + str(frozen) if frozen else 'new'})")
    if "mix" in report:
        console.print(f"train mix drawn: {report['mix']['drawn']} (shares {report['mix']['ratios']})")

    console.rule("[bold]3/5 train")
    train_dir = folders.train.root
    summary = train(cfg.train, cfg.model, data_dir, train_dir, criteria=cfg.objective)
    console.print(f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}")
    model = cfg.model
    if cfg.rl is not None:
        console.rule("[bold]3/5 train: a GRPO round on the SFT model")
        model, train_dir = grpo_round(cfg, train_dir, data_dir, folders)

    console.rule("[bold]4/5 evaluate: candidate and production on the same test split")
    candidate = evaluate(cfg.eval, model, cfg.task, cfg.objective, data_dir, trained_weights(train_dir), folders.eval.root)
    current = None
    if production:
        only_model = cfg.eval.model_copy(update={"systems": ["finetuned"], "regression": False})
        # production's own base: a version from a GRPO round sits on its merged SFT model, not on cfg.model
        production_base = ModelConfig(name=production.get("base_model") or cfg.model.name)
        current = evaluate(only_model, production_base, cfg.task, ObjectiveConfig(), data_dir,
                           weights_folder(Path(production["artifact_path"])), folders.eval_production.root)

    console.rule("[bold]5/5 register and decide")
    version = register_run(registry, name, train_dir, folders.eval.root, note=f"loop round {run_dir.name}")
    registry.set_alias(name, "challenger", version["version"], reason="loop: newest candidate")
    promote, reasons = decide(candidate, current, cfg.objective, cfg.loop.tolerance)
    if promote:
        registry.set_alias(name, "production", version["version"], reason="loop: " + "; ".join(reasons))
        console.print(f"[green]promoted {version['ref']} to production[/]: " + "; ".join(reasons))
    else:
        console.print(f"[yellow]{version['ref']} is challenger only; production stays "
                      f"{production['ref'] if production else 'unset'}[/]: " + "; ".join(reasons))
    return {
        "candidate": version["ref"], "production_before": production["ref"] if production else None,
        "promoted": promote, "reasons": reasons, "gates": candidate["gates"],
        "candidate_metrics": candidate["systems"]["finetuned"],
        "production_metrics": current["systems"]["finetuned"] if current else None,
        "feedback": feedback, "data": report["splits"], "run_dir": str(run_dir.resolve()),
        "wall_s": round(time.time() - started, 1),
    }


def decide(candidate: dict, production: dict | None, objective: ObjectiveConfig, tolerance: float) -> tuple[bool, list[str]]:
    """Promote when every gate passes and no gated metric is worse than production's (beyond `tolerance`)."""
    failed = [f"gate {g['metric']} {g['gate']} failed ({g['value']:.3f})" for g in candidate["gates"] if not g["passed"]]
    if failed:
        return False, failed
    if production is None:
        return True, ["all gates pass and there is no production version yet"]
    mine, theirs = candidate["systems"]["finetuned"], production["systems"]["finetuned"]
    worse, compared = [], []
    for key, gate in objective.gates.items():
        metric = key.removesuffix("@finetuned")
        if metric not in mine or metric not in theirs:
            continue  # a gate on another system or a difference: not a production comparison
        higher_is_better = gate.op in (">=", ">")
        delta = (mine[metric] - theirs[metric]) * (1 if higher_is_better else -1)
        compared.append(f"{metric} {theirs[metric]:.3f} -> {mine[metric]:.3f}")
        if delta < -tolerance:
            worse.append(f"{metric} is worse than production ({mine[metric]:.3f} vs {theirs[metric]:.3f})")
    if worse:
        return False, worse
    return True, ["all gates pass and nothing is worse than production" + (f" ({', '.join(compared)})" if compared else "")]


def _alias(registry: Registry, name: str, alias: str) -> dict | None:
    return next((registry.resolve(f"{name}@{alias}") for a in registry.aliases(name) if a["alias"] == alias), None)


def _replay(cfg: PipelineConfig, production: dict | None) -> dict:
    """data settings that mix `loop.replay` of production's train split (its rounds so far) into this round's."""
    previous = _split_of(production, "train")
    if not cfg.loop.replay or previous is None:
        return {}
    mix = cfg.data.mix or MixConfig(seed=cfg.data.seed)
    return {"replay": [*cfg.data.replay, previous], "mix": mix.model_copy(update={"ratios": {**mix.ratios, previous: cfg.loop.replay}})}


def _test_split_of(version: dict | None) -> Path | None:
    return _split_of(version, "test")


def _split_of(version: dict | None, split: str) -> Path | None:
    """A split of the data the version was trained on (its train run's data directory): the test split it was
    evaluated on, or the train split it learnt from."""
    if version is None:
        return None
    train_dir = Path(version["artifact_path"])
    try:
        path = DataDir(Path(read_manifest(train_dir)["inputs"]["train"]["path"]).parent).split(split)
    except Exception:
        return None
    return path if path.is_file() else None
