"""Run folders: the one place that spells the names of the files inside a stage's output folder.

Stages hand off through these folders, so a name is part of a contract: the train stage reads what the
data stage wrote, the jobs worker follows a training run's metrics and checkpoints, serving loads a train
run's weights. Every reader and writer goes through the classes here (tests/test_layout.py checks that no
other module spells one of these names), so renaming a file is a change in one place.

    data/      train.jsonl val.jsonl test.jsonl rejected.jsonl report.json report.html (+ plots, review)
    train/     adapter/ | model/   metrics.jsonl loss.png tensorboard/ (tracking.json wandb/: MLflow and W&B runs)
               (a hosted fine-tune: remote.json upload/{train,val}.jsonl results/ metrics.jsonl loss.png)
               checkpoints/step-0000042/{weights/, state.json, state.safetensors}  checkpoints/best.json
               (under fsdp: checkpoints/step-0000042/{state.json, shards/rank-00000{.safetensors,.json,.state.json,...}})
    eval/      results.json samples.jsonl report.html (+ plots)   ab/{ab.csv, ab.html, ab_key.json}
               external/{system}.{eval,edge,bias}.jsonl (external systems' answers as they arrived)
    export/    model/ model.gguf
    monitor/   report.json report.html timeseries.png
    a router classifier: classifier.safetensors classifier.json
    a job:     data/ validation/ train/ config.yaml train.log   (under TUNELOOP_HOME/jobs/ID; uploads in files/ID/)
    a pipeline run: data/ train/ eval/ monitor/ (and for the loop: feedback.jsonl, eval-production/)
    import/    source/{train,validation}.jsonl data/ golden.jsonl config.yaml import.json (`tuneloop import`)
    sweep/     sweep.json trials.csv importance.{png,html} parallel.{png,html} trials/trial-0003/ (a train run) eval/

Each folder also holds the stage's `manifest.json` (artifacts.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


def _at(name: str, doc: str = "") -> property:
    """A file or folder of the run folder (`self.root`), by name."""
    return property(lambda self: self.root / name, doc=doc or None)


def _in(name: str, doc: str = "") -> property:
    """A file or folder of one checkpoint (`self.path`), by name."""
    return property(lambda self: self.path / name, doc=doc or None)


@dataclass(frozen=True)
class DataDir:
    """What `tuneloop data prepare` writes."""

    root: Path

    def split(self, name: str) -> Path:
        """train, val, test or rejected."""
        return self.root / f"{name}.jsonl"

    train = _at("train.jsonl")
    val = _at("val.jsonl")
    test = _at("test.jsonl")
    rejected = _at("rejected.jsonl", "Every dropped row with its file, line, rule and reason.")
    unused = _at("unused.jsonl", "Kept train rows data.mix did not draw: not errors, kept for the next round.")
    spool = _at(".kept.jsonl.tmp", "Kept rows while the stage runs, before they are split (removed at the end).")
    report = _at("report.json")
    report_html = _at("report.html")
    lengths_plot = _at("token_lengths.png")
    labels_plot = _at("labels.png")
    review_csv = _at("review.csv")
    review_html = _at("review.html")


@dataclass(frozen=True)
class DatasetsFolder:
    """An input folder written by Hugging Face datasets' `save_to_disk` (its names, not ours, read by data/readers.py)."""

    root: Path

    state = _at("state.json", "A Dataset: its Arrow shards (`_data_files`).")
    splits = _at("dataset_dict.json", "A DatasetDict: its split names, each a Dataset folder.")


@dataclass(frozen=True)
class SynthFile:
    """What `tuneloop data synth --out FILE` writes beside FILE (the synthetic rows themselves)."""

    out: Path

    def _beside(self, name: str) -> Path:
        return self.out.with_name(self.out.stem + name)

    requests = property(lambda self: self._beside(".requests.jsonl"), doc="One record per finished request: what resumes.")
    rejected = property(lambda self: self._beside(".rejected.jsonl"), doc="Rows dropped by too_short, off_topic, judge_score.")
    report = property(lambda self: self._beside(".report.json"), doc="The counts of the run.")


CHECKPOINT = re.compile(r"step-(\d+)")


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint folder of a training run."""

    path: Path

    @property
    def step(self) -> int:
        return int(CHECKPOINT.fullmatch(self.path.name)[1])

    weights = _in("weights")
    state = _in("state.json", "Step, scheduler, RNG and metric records, and the optimizer's settings.")
    tensors = _in("state.safetensors", "The optimizer's moments and the RNG states.")
    legacy_state = _in("state.pt", "What tuneloop before 0.2 wrote instead: a pickle, never loaded.")
    shards = _in("shards", "Under train.distributed fsdp: one set of files per rank (no weights/ folder then).")

    def shard(self, rank: int) -> Shard:
        return Shard(self.shards, rank)


@dataclass(frozen=True)
class Shard:
    """One rank's part of a sharded (FSDP) checkpoint: its slices of the trainable weights, their index, and
    its own training state (its slices of the optimizer's moments, its random number generators)."""

    root: Path
    rank: int

    def _named(self, suffix: str) -> Path:
        return self.root / f"rank-{self.rank:05d}{suffix}"

    weights = property(lambda self: self._named(".safetensors"), doc="This rank's slice of every trainable tensor.")
    index = property(lambda self: self._named(".json"), doc="World size; each tensor's full shape and this slice's offset.")
    state = property(lambda self: self._named(".state.json"), doc="As Checkpoint.state, for this rank.")
    tensors = property(lambda self: self._named(".state.safetensors"), doc="As Checkpoint.tensors: this rank's moments and RNG.")


@dataclass(frozen=True)
class Checkpoints:
    """`train/checkpoints/`: one folder per saved step, and a marker naming the best one."""

    root: Path

    def at(self, step: int) -> Checkpoint:
        return Checkpoint(self.root / f"step-{step:07d}")

    def temporary(self, step: int) -> Checkpoint:
        """Where a checkpoint is written before it is renamed into place (never picked by resume)."""
        return Checkpoint(self.root / f".{self.at(step).path.name}.tmp")

    def all(self) -> list[Checkpoint]:
        """Checkpoint folders, oldest first (complete or not)."""
        if not self.root.is_dir():
            return []
        return [Checkpoint(p) for p in sorted(self.root.iterdir()) if p.is_dir() and CHECKPOINT.fullmatch(p.name)]

    def complete(self) -> list[Checkpoint]:
        return [c for c in self.all() if c.state.is_file()]

    best_marker = _at("best.json")


@dataclass(frozen=True)
class TrainDir:
    """What `tuneloop train` writes."""

    root: Path

    adapter = _at("adapter", "A PEFT adapter folder (LoRA, DoRA, QLoRA runs).")
    model = _at("model", "A full model folder (full fine-tuning runs).")

    def weights_for(self, adapter: bool) -> Path:
        return self.adapter if adapter else self.model

    def weights(self) -> Path | None:
        """What the run produced: its adapter folder, or its model folder; None before it finished."""
        return next((p for p in (self.adapter, self.model) if p.is_dir()), None)

    metrics = _at("metrics.jsonl", "One JSON line per optimizer step.")
    loss_plot = _at("loss.png")
    tensorboard = _at("tensorboard")
    trackers = _at("tracking.json", "The MLflow and W&B run ids this run logs to (a resumed run continues them).")
    wandb = _at("wandb", "W&B's offline run folder (`wandb sync` it later).")

    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.root / "checkpoints")

    lock = _at(".train.lock", "Held by the one trainer writing this folder (it names that trainer).")
    pause = _at(".pause", "Asks the trainer to checkpoint and stop after its current step (a paused fine-tuning job).")
    remote = _at("remote.json", "A hosted fine-tune (train.backend: openai-compatible): provider, files, job, model.")

    def uploaded(self, split: str) -> Path:
        """A split (train, val) as uploaded to the provider."""
        return self.root / "upload" / f"{split}.jsonl"

    result_files = _at("results", "The provider's result files (per-step metrics CSV).")


@dataclass(frozen=True)
class ImportDir:
    """What `tuneloop import` writes: a hosted fine-tune's data, its answers on the test split, and a config that
    retrains an open model on the same data."""

    root: Path

    def source(self, split: str) -> Path:
        """The job's file as the provider kept it: train or validation."""
        return self.root / "source" / f"{split}.jsonl"

    @property
    def data(self) -> DataDir:
        return DataDir(self.root / "data")

    golden = _at("golden.jsonl", "The hosted model's answers to the test split: {messages, answer} per row.")
    golden_cache = _at(".golden.cache.jsonl", "Answers as they arrived (a rerun asks only for the missing ones).")
    config = _at("config.yaml", "Retrains an open base on the same data, gated on parity with the golden answers.")
    record = _at("import.json", "Where it came from: provider, job, model, hyperparameters.")


@dataclass(frozen=True)
class EvalDir:
    """What `tuneloop eval` writes."""

    root: Path

    results = _at("results.json")
    samples = _at("samples.jsonl", "Every input, every system's output and scores.")
    report_html = _at("report.html")
    metrics_plot = _at("metrics.png")
    lengths_plot = _at("lengths.png")

    def answers_cache(self, system: str, tag: str) -> Path:
        """An external system's answers as they arrived (a rerun sends only what is missing)."""
        return self.root / "external" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', system)}.{tag}.jsonl"

    def confusion_plot(self, field: str) -> Path:
        return self.root / f"confusion_{re.sub(r'[^A-Za-z0-9_.-]', '_', field)}.png"

    @property
    def ab(self) -> AbDir:
        return AbDir(self.root / "ab")


@dataclass(frozen=True)
class AbDir:
    """A blind A/B review (`tuneloop eval ab-export`): the form, and the key that unblinds it."""

    root: Path

    csv = _at("ab.csv")
    html = _at("ab.html")
    key = _at("ab_key.json")
    judgments = _at("ab_judgments.csv", "The dashboard's judgments: ab.csv's rows with judgment and comment filled in.")


@dataclass(frozen=True)
class ExportDir:
    """What `tuneloop export` writes."""

    root: Path

    model = _at("model")
    gguf = _at("model.gguf")
    modelfile = _at("Modelfile")  # Ollama's, beside the GGUF


@dataclass(frozen=True)
class MonitorDir:
    """What `tuneloop monitor report` writes."""

    root: Path

    report = _at("report.json")
    report_html = _at("report.html")
    timeseries_plot = _at("timeseries.png")


@dataclass(frozen=True)
class ClassifierDir:
    """What `tuneloop route train` writes: a router's classifier as arrays and JSON."""

    root: Path
    weights = _at("classifier.safetensors", "The logistic regression's coefficients and intercepts.")
    labels = _at("classifier.json", "The labels (rows of the coefficients) and the embedder.")
    legacy = _at("classifier.joblib", "What tuneloop before 0.2 wrote instead: a pickle, never loaded.")


@dataclass(frozen=True)
class JobDir:
    """One fine-tuning job's folder: its prepared data, its training run, its config and log."""

    root: Path

    @property
    def data(self) -> DataDir:
        return DataDir(self.root / "data")

    @property
    def validation(self) -> DataDir:
        """The job's validation file, prepared on its own."""
        return DataDir(self.root / "validation")

    @property
    def train(self) -> TrainDir:
        return TrainDir(self.root / "train")

    config = _at("config.yaml")
    log = _at("train.log")


@dataclass(frozen=True)
class ProjectDir:
    """A project as `tuneloop init` makes it (and as the shipped examples are laid out)."""

    root: Path
    config = _at("pipeline.yaml", "The pipeline: one section per stage.")
    data = _at("data/examples.jsonl", "The sample rows `tuneloop init` writes.")


@dataclass(frozen=True)
class HomeDir:
    """What the server keeps under TUNELOOP_HOME for the jobs API: uploaded files and jobs, each by its id."""

    root: Path

    def file(self, file_id: str, jsonl: bool) -> Path:
        """An upload's bytes (training data is always stored as JSONL); its folder holds nothing else."""
        return self.root / "files" / file_id / ("data.jsonl" if jsonl else "content")

    def job(self, job_id: str) -> JobDir:
        return JobDir(self.root / "jobs" / job_id)


@dataclass(frozen=True)
class SweepDir:
    """`tuneloop sweep`: one train run folder per trial, the table of trials, the study's plots."""

    root: Path
    summary = _at("sweep.json", "every trial's parameters, state, objective and wall time; the best trial")
    table = _at("trials.csv")
    importance_png = _at("importance.png")
    importance_html = _at("importance.html")
    parallel_png = _at("parallel.png")
    parallel_html = _at("parallel.html")

    trials = _at("trials", "one train run folder per trial")

    def trial(self, number: int) -> TrainDir:
        return TrainDir(self.trials / f"trial-{number:04d}")

    @property
    def eval(self) -> EvalDir:
        """With --register: the best trial evaluated on the test split."""
        return EvalDir(self.root / "eval")


@dataclass(frozen=True)
class PipelineDir:
    """`tuneloop run`, `loop` and `demo`: one folder per stage."""

    root: Path

    @property
    def data(self) -> DataDir:
        return DataDir(self.root / "data")

    @property
    def train(self) -> TrainDir:
        return TrainDir(self.root / "train")

    @property
    def sft_export(self) -> ExportDir:
        """With an `rl` round: the SFT run merged into its base, the round's starting policy and reference."""
        return ExportDir(self.root / "sft-export")

    @property
    def train_rl(self) -> TrainDir:
        """With an `rl` round: the GRPO run on top of the merged SFT model."""
        return TrainDir(self.root / "train-grpo")

    @property
    def eval(self) -> EvalDir:
        return EvalDir(self.root / "eval")

    @property
    def eval_production(self) -> EvalDir:
        """The loop's evaluation of the production version on the same test split."""
        return EvalDir(self.root / "eval-production")

    @property
    def monitor(self) -> MonitorDir:
        return MonitorDir(self.root / "monitor")

    feedback = _at("feedback.jsonl", "The loop's feedback export, the round's extra training data.")
