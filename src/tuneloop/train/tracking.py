"""Training metrics as they happen: the run's metrics file (one JSON line per optimizer step), TensorBoard, and,
where `train.tracking` names them, an MLflow run and a W&B run (offline by default) with the same numbers.

A resumed run rewrites the metrics file to the checkpoint's history, so steps that were lost with the killed
process never appear twice; TensorBoard is told to purge them the same way, and the MLflow and W&B runs whose ids
`tracking.json` keeps are continued (MLflow keeps the lost steps' values beside the new ones; W&B drops steps
below its last). The evaluation's results and the registry version are added to the same runs afterwards
(`log_evaluation`, `log_registration`, called by the compositions that chain the stages).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from tuneloop.config import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import TrainDir


class MetricsLog:
    def __init__(self, run: TrainDir, history: list[dict], cfg: TrainConfig, params: dict | None = None):
        self.path = run.metrics
        self.path.write_text("".join(json.dumps(r) + "\n" for r in history))
        trackers = cfg.trackers
        self.writer = None
        if "tensorboard" in trackers:
            from torch.utils.tensorboard import SummaryWriter

            resumed_at = history[-1]["step"] + 1 if history else None
            self.writer = SummaryWriter(str(run.tensorboard), purge_step=resumed_at)
        ids = _read_ids(run)
        self.sinks = []
        if "mlflow" in trackers:
            self.sinks.append(_Mlflow(run, cfg, params or {}, ids.get("mlflow")))
        if "wandb" in trackers:
            self.sinks.append(_Wandb(run, cfg, params or {}, ids.get("wandb")))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        numbers = _numbers({k: v for k, v in record.items() if k != "step"})
        if self.writer is not None:
            for key, value in numbers.items():
                group = "val" if key.startswith("val_") else "train"
                self.writer.add_scalar(f"{group}/{key.removeprefix('val_').removeprefix('train_')}", value, record["step"])
        for sink in self.sinks:
            sink.log(numbers, record["step"])

    def finish(self, files: list[Path], weights: Path | None, summary: dict) -> None:
        """The run is done: its files and weights, and the summary's numbers, go to the trackers, which close."""
        numbers = _numbers(summary)
        for sink in self.sinks:
            sink.finish([f for f in files if f.is_file()], weights if weights and weights.is_dir() else None, numbers)
        self.sinks = []

    def abort(self) -> None:
        """The run stopped on an error (or a sweep's pruner): the trackers' runs close, marked so."""
        for sink in self.sinks:
            sink.abort()
        self.sinks = []

    @contextmanager
    def closing_on_error(self):
        try:
            yield self
        except BaseException:
            self.abort()
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def log_evaluation(train_dir: Path, results: dict) -> None:
    """An evaluation of this train run's weights: each system's metrics (eval/<system>/<metric>) and the gates."""
    numbers = _numbers({f"eval/{system}/{metric}": value for system, scores in (results.get("systems") or {}).items()
                        for metric, value in scores.items()})
    numbers["eval/gates_passed"] = float(bool(results.get("objective_passed")))
    _after(TrainDir(train_dir), numbers, {})


def _numbers(values: dict) -> dict[str, float]:
    """The plain numbers of a record (no flags, texts or lists), as trackers take them."""
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_registration(train_dir: Path, version: dict) -> None:
    """The registry version made from this train run, as a tag."""
    _after(TrainDir(train_dir), {}, {"tuneloop.registry_version": str(version.get("ref"))})


def _after(run: TrainDir, numbers: dict, tags: dict) -> None:
    ids = _read_ids(run)
    if ids.get("mlflow"):
        client = _mlflow_client(ids.get("mlflow_uri"))
        from mlflow.entities import Metric, RunTag

        stamp = int(time.time() * 1000)
        client.log_batch(ids["mlflow"], metrics=[Metric(k, v, stamp, 0) for k, v in numbers.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
    if ids.get("wandb"):
        import wandb

        with _quiet_wandb():
            again = wandb.init(id=ids["wandb"], resume="allow", dir=str(run.root), reinit="create_new", **ids.get("wandb_settings", {}))
            again.summary.update({**numbers, **tags})
            again.finish()


# --- MLflow ---------------------------------------------------------------------------------------
def _mlflow_uri(cfg: TrainConfig) -> str:
    """A URI as given; a folder (default ./mlruns) holds an sqlite store, mlflow.db, beside the artifacts (MLflow 3
    refuses new plain-file stores)."""
    uri = cfg.mlflow.uri or os.environ.get("MLFLOW_TRACKING_URI") or "mlruns"
    if "://" in uri or uri.startswith("file:"):
        return uri
    folder = Path(uri).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def _need(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TuneloopError(f"train.tracking: {module} needs the 'tracking' extra ({module} not installed): "
                            f"pip install 'tuneloop[tracking]', or leave {module} out of train.tracking")


def _mlflow_client(uri: str | None):
    _need("mlflow")
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


class _Mlflow:
    name = "mlflow"

    def __init__(self, run: TrainDir, cfg: TrainConfig, params: dict, known: str | None):
        from mlflow.entities import Param

        uri = _mlflow_uri(cfg)
        self.client = _mlflow_client(uri)
        experiment = self.client.get_experiment_by_name(cfg.mlflow.experiment)
        # a folder store keeps the artifacts beside its database
        artifacts = Path(uri.removeprefix("sqlite:///")).with_name("artifacts").as_uri() if uri.endswith("/mlflow.db") else None
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(cfg.mlflow.experiment, artifacts)
        if known:
            self.id = known
            self.client.update_run(known, status="RUNNING")
        else:
            self.id = self.client.create_run(experiment_id, run_name=run.root.name, tags={"tuneloop.run_folder": str(run.root.resolve())}).info.run_id
            flat = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
            for start in range(0, len(flat), 100):  # log_batch takes at most 100 params a call
                self.client.log_batch(self.id, params=flat[start : start + 100])
        _write_ids(run, {"mlflow": self.id, "mlflow_uri": uri})

    def log(self, numbers: dict, step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.id, metrics=[Metric(k, v, stamp, step) for k, v in numbers.items()])

    def finish(self, files: list[Path], weights: Path | None, summary: dict) -> None:
        for file in files:
            self.client.log_artifact(self.id, str(file))
        if weights:
            self.client.log_artifacts(self.id, str(weights), artifact_path=weights.name)
        self.client.set_terminated(self.id, "FINISHED")

    def abort(self) -> None:
        self.client.set_terminated(self.id, "KILLED")


# --- Weights & Biases -----------------------------------------------------------------------------
@contextmanager
def _quiet_wandb():
    saved = os.environ.get("WANDB_SILENT")
    os.environ["WANDB_SILENT"] = "true"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("WANDB_SILENT", None)
        else:
            os.environ["WANDB_SILENT"] = saved


class _Wandb:
    name = "wandb"

    def __init__(self, run: TrainDir, cfg: TrainConfig, params: dict, known: str | None):
        _need("wandb")
        import wandb

        self.settings = {"project": cfg.wandb.project, "entity": cfg.wandb.entity, "mode": cfg.wandb.mode}
        with _quiet_wandb():
            self.run = wandb.init(**self.settings, dir=str(run.root), id=known or secrets.token_hex(4), resume="allow",
                                  name=cfg.wandb.name or run.root.name, tags=cfg.wandb.tags or None, config=params,
                                  reinit="create_new")
        self.id = self.run.id
        _write_ids(run, {"wandb": self.id, "wandb_settings": self.settings})

    def log(self, numbers: dict, step: int) -> None:
        self.run.log(numbers, step=step)

    def finish(self, files: list[Path], weights: Path | None, summary: dict) -> None:
        import wandb

        for file in files:
            self.run.save(str(file), base_path=str(file.parent), policy="now")
        if weights:
            artifact = wandb.Artifact(f"weights-{self.id}", type="model")
            artifact.add_dir(str(weights))
            self.run.log_artifact(artifact)
        self.run.summary.update(summary)
        with _quiet_wandb():
            self.run.finish()

    def abort(self) -> None:
        with _quiet_wandb():
            self.run.finish(exit_code=1)


def _read_ids(run: TrainDir) -> dict:
    try:
        return json.loads(run.trackers.read_text())
    except FileNotFoundError:
        return {}
    except (ValueError, OSError) as err:
        raise TuneloopError(f"{run.trackers}: unreadable ({err}); delete it to start new tracking runs") from None


def _write_ids(run: TrainDir, ids: dict) -> None:
    from tuneloop.artifacts import write_json

    write_json(run.trackers, {**_read_ids(run), **ids})
