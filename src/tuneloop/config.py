"""Typed, validated configuration: one small pydantic model per stage, one YAML pipeline file.

The pipeline YAML has one section per stage (`data`, `train`, `eval`, ...). Each section is the
typed config of that stage's entry function, so the YAML, the CLI and the Python API share one
definition. Unknown keys, wrong types and bad values fail with the YAML path of the offending
value, e.g. `pipeline.yaml: train.lora.r: must be > 0, got -4`.
"""

from __future__ import annotations

import difflib
import operator
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tuneloop.errors import TuneloopError
from tuneloop.graders.specs import GraderSpec

DEFAULT_MODEL = "smollm2-135m-instruct"


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Strict):
    # A Hugging Face id, a local model folder, a .gguf file, or an embedded name.
    name: str = DEFAULT_MODEL
    # The base's public id (org/name on the Hugging Face hub), written into adapters as base_model_name_or_path
    # so peft, vLLM and providers find the base on any machine. Known already for a hub id, the embedded model
    # and a folder in the Hugging Face cache; set it for a local folder or .gguf that has a public original.
    hub_id: str | None = Field(default=None, max_length=200)

    @field_validator("hub_id")
    @classmethod
    def _hub_id_shape(cls, value: str | None) -> str | None:
        if value is not None and not _HUB_ID.match(value):
            raise ValueError(f"must be a Hugging Face id like org/name, got '{value}'")
        return value


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


class TaskConfig(Strict):
    """What the model is asked to do; shared by data, eval and serve."""

    # Added as the system message to rows that have none, at training, evaluation and serving.
    system_prompt: str | None = None
    # JSON schema the assistant's answer must satisfy (structured-output tasks).
    output_schema: dict[str, Any] | None = None
    # Fields of the JSON answer that are labels: accuracy is reported for each, splits stratify on the first.
    label_fields: list[str] = []


_GATE = re.compile(r"^\s*(>=|<=|>|<|==)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


class Gate(Strict):
    """A pass/fail criterion on one metric, written in YAML as a string like '>= 0.95'."""

    op: Literal[">=", "<=", ">", "<", "=="]
    value: float

    def passes(self, measured: float) -> bool:
        return _OPS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


class ObjectiveConfig(Strict):
    description: str = ""
    # metric name -> gate, e.g. {"json_valid": ">= 0.95", "category_accuracy": ">= 0.8"}
    gates: dict[str, Gate] = {}
    # The reward of reinforcement learning (GRPO), as a grader (graders/specs.py: string_check, python,
    # score_model, multi, ...); None = the gates above, as a mean of their per-sample metrics.
    reward: GraderSpec | None = None

    @field_validator("gates", mode="before")
    @classmethod
    def _parse_gates(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        parsed = {}
        for metric, gate in value.items():
            if isinstance(gate, str):
                match = _GATE.match(gate)
                if not match:
                    raise ValueError(f"gate for '{metric}' must look like '>= 0.95', got {gate!r}")
                gate = {"op": match[1], "value": float(match[2])}
            parsed[metric] = gate
        return parsed


class FieldNames(Strict):
    """Where each part of a row lives, for files whose columns are named differently."""

    messages: str = "messages"
    prompt: str = "prompt"
    completion: str = "completion"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    chosen: str = "chosen"
    rejected: str = "rejected"
    system: str = "system"
    conversations: str = "conversations"  # ShareGPT rows


class CleanConfig(Strict):
    unicode_nfc: bool = True
    # Control characters other than newline and tab (zero-width and bidi marks included).
    strip_control: bool = True
    # Trailing spaces, runs of spaces and of blank lines; leading/trailing whitespace of each text.
    whitespace: bool = True
    # Tags like <b> or <br/>, and entities like &amp;, in text that is otherwise plain.
    strip_html: bool = True


class PiiConfig(Strict):
    enabled: bool = True
    types: list[str] | None = None  # None = every type tuneloop detects
    placeholders: dict[str, str] = {}


class RagDataConfig(Strict):
    """Retrieval-augmented fine-tuning: put the top-k passages of a knowledge base into each prompt,
    with the same template the server uses, so the model learns to answer from context."""

    index: Path  # a directory written by `tuneloop rag index`
    k: int = Field(3, gt=0)


class DedupConfig(Strict):
    exact: bool = True
    near: bool = True
    # Estimated Jaccard similarity of word 3-shingles at or above which two rows are near-duplicates.
    threshold: float = Field(0.8, gt=0, lt=1)


class TeacherConfig(Strict):
    """An OpenAI-compatible endpoint that writes synthetic rows (`tuneloop serve` is one)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "default"
    api_key_env: str | None = None  # the environment variable holding the key; None = no key sent
    # Ask for JSON under a schema (`response_format`): needed for small teachers; off for endpoints without it.
    structured: bool = True
    temperature: float = Field(0.9, ge=0, le=2)
    max_tokens: int = Field(512, gt=0, le=32768)  # per request
    timeout_s: float = Field(120, gt=0, le=3600)
    concurrency: int = Field(4, ge=1, le=64)
    retries: int = Field(4, ge=0, le=20)  # per request, with exponential back-off on 429, 5xx and timeouts


class SynthConfig(Strict):
    """`data.synth`: what `tuneloop data synth` asks the teacher for."""

    teacher: TeacherConfig = TeacherConfig()
    # Seed rows (any form the data stage reads), cleaned and PII-redacted before they are sent; [] = data.inputs.
    seeds: list[Path] = []
    # Inputs without answers (JSONL rows with a user message or a `prompt`, or a text per line): the teacher answers each.
    unlabeled: list[Path] = []
    rows: int = Field(200, gt=0, le=1_000_000)  # rows requested in all (paraphrase + balance; unlabeled come on top)
    # Share of `rows` per kind: paraphrases of seed inputs (the seed's answer kept), and new inputs per label,
    # more for the rarer labels until the label mix is even (needs task.label_fields).
    paraphrase: float = Field(0.5, ge=0, le=1)
    per_request: int = Field(5, ge=1, le=50)  # rows asked for in one request
    shots: int = Field(3, ge=0, le=20)  # seed examples shown with each request for new inputs
    max_chars: int = Field(2000, gt=0, le=100_000)  # longest input the teacher may write (a schema bound)
    min_words: int = Field(3, ge=1, le=1000)  # shorter inputs are dropped (rule too_short): a small teacher's fragments
    # Cosine similarity (the embedded MiniLM) a paraphrase must keep to its seed, and a new input to the closest
    # seed it was shown with; under it the row is dropped (rule off_topic). None = no check.
    min_similarity: float | None = Field(0.4, ge=-1, le=1)
    max_requests: int | None = Field(None, gt=0)  # budget: requests (earlier runs of a resumed file included)
    max_total_tokens: int | None = Field(None, gt=0)  # budget: prompt + completion tokens the teacher reports
    # A judge (the same endpoint) scores every row 0-10; rows under threshold * 10 are dropped. None = no judge.
    judge_threshold: float | None = Field(None, ge=0, le=1)
    seed: int = 0

    @field_validator("seeds", "unlabeled", mode="after")
    @classmethod
    def _relative_to_config(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        return [_relative(p, info) for p in paths]


class SafetyConfig(Strict):
    """`data.safety`: the harmful-content screen of every row's input and answer (tuneloop/safety).

    In YAML either a mode (`safety: warn`) or the full section."""

    # reject: flagged rows go to rejected.jsonl (rule harmful_content); warn: kept, and counted in the report.
    mode: Literal["reject", "warn", "off"] = "reject"
    # The classifier's P(offensive) at or above which a text is flagged; None = blocklists only. 0.8, not the
    # package's 0.5: at 0.5 it flagged ordinary text naming identities ("black ink", "my son is gay").
    threshold: float | None = Field(0.8, gt=0, le=1)
    default_blocklist: bool = True  # the shipped list (tuneloop/safety/data/blocklist.txt)
    blocklists: list[Path] = []  # more list files: one term or phrase per line, '#' comments
    terms: list[str] = []  # more terms, inline
    # Terms blanked out before screening, so they never flag (a product or a place name that trips the classifier).
    allow: list[str] = []

    @model_validator(mode="before")
    @classmethod
    def _mode_only(cls, value: Any) -> Any:
        return {"mode": value} if isinstance(value, str) else value

    @field_validator("blocklists", mode="after")
    @classmethod
    def _lists_relative(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        return [_relative(p, info) for p in paths]


class MixConfig(Strict):
    """`data.mix`: the train split drawn from its source files in these shares (see data/mix.py)."""

    # Share of the train split per source file (relative to the config); sources not named share the rest.
    ratios: dict[Path, float] = {}
    rows: int | None = Field(None, gt=0, le=100_000_000)  # train rows drawn; None = the most the shares allow
    replace: bool = False  # with replacement: a source repeats rows to reach its share of `rows`
    seed: int = 0

    @field_validator("ratios", mode="after")
    @classmethod
    def _shares(cls, ratios: dict[Path, float], info: ValidationInfo) -> dict[Path, float]:
        if any(not 0 < share <= 1 for share in ratios.values()):
            raise ValueError("each share must be in (0, 1]")
        if sum(ratios.values()) > 1 + 1e-9:
            raise ValueError(f"the shares add up to {sum(ratios.values()):g}, more than 1")
        return {_relative(path, info): share for path, share in ratios.items()}


class DataConfig(Strict):
    inputs: list[Path] = []
    # Train splits of earlier rounds (`tuneloop loop` with loop.replay fills this): train split only, deduplicated
    # against the other inputs (which win), and mixed in by data.mix.
    replay: list[Path] = []
    mix: MixConfig | None = None
    # Files written by `tuneloop data synth`: read after `inputs`, train split only, and rejected when they
    # duplicate (exactly or nearly) any real row or paraphrase a val/test row.
    synthetic: list[Path] = []
    synth: SynthConfig = SynthConfig()
    form: Literal["auto", "messages", "prompt_completion", "alpaca", "preference", "sharegpt"] = "auto"
    fields: FieldNames = FieldNames()
    clean: CleanConfig = CleanConfig()
    pii: PiiConfig = PiiConfig()
    dedup: DedupConfig = DedupConfig()
    safety: SafetyConfig = SafetyConfig()
    # Longest example in tokens (model's tokenizer and chat template); None = no limit.
    max_tokens: int | None = Field(None, gt=0)
    over_length: Literal["drop", "truncate"] = "drop"
    # Allowed values per label field of the answer; by default taken from output_schema enums.
    allowed_labels: dict[str, list[str]] = {}
    val_ratio: float = Field(0.1, ge=0, lt=1)
    test_ratio: float = Field(0.1, ge=0, lt=1)
    seed: int = 0
    # A test.jsonl from an earlier round: reused as the test split, and rows leaking into it are rejected.
    frozen_test: Path | None = None
    # Retrieval-augmented training data (see RagDataConfig); None = prompts as they are.
    rag: RagDataConfig | None = None
    # Rows sampled into review.csv / review.html for a domain expert (0 = none).
    review_sample: int = Field(0, ge=0)
    # A review.csv with a reviewer's verdicts (in the CSV, or from the dashboard): rows marked `drop` are
    # rejected (rule reviewer_drop, with the reviewer's comment) when the data is prepared again.
    reviewed: Path | None = None
    # Processes for the per-row work; None = one per core for inputs over a few MB, else in-process.
    workers: int | None = Field(None, ge=1)

    @field_validator("inputs", "synthetic", "replay", mode="after")
    @classmethod
    def _relative_to_config(cls, paths: list[Path], info: ValidationInfo) -> list[Path]:
        return [_relative(p, info) for p in paths]

    @field_validator("frozen_test", "reviewed", mode="after")
    @classmethod
    def _frozen_relative(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _relative(path, info)

    @field_validator("rag", mode="after")
    @classmethod
    def _index_relative(cls, rag: RagDataConfig | None, info: ValidationInfo) -> RagDataConfig | None:
        return None if rag is None else rag.model_copy(update={"index": _relative(rag.index, info)})


def _relative(path: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    return path if path.is_absolute() or base is None else Path(base) / path


class LoraConfig(Strict):
    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    # "all-linear" adapts every linear layer except the output head (peft's meaning).
    target_modules: str | list[str] = "all-linear"


class EarlyStopping(Strict):
    # Validation evaluations without an improvement of at least min_delta before stopping; None = off.
    patience: int | None = Field(None, gt=0)
    min_delta: float = Field(0.0, ge=0)


class DpoConfig(Strict):
    # Strength of the pull towards the reference model (the base with adapters off); TRL's default.
    beta: float = Field(0.1, gt=0)


class GrpoConfig(Strict):
    """Group-relative policy optimisation (Shao et al. 2024): `group_size` sampled answers per prompt, each
    scored by the reward graders (objective.reward, by default the gates), advantages relative to the group."""

    group_size: int = Field(8, ge=2, le=64)
    temperature: float = Field(1.0, gt=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, gt=0, le=4096)
    # Pull towards the reference (the starting model: adapters off, or a frozen copy for full fine-tuning).
    beta: float = Field(0.04, ge=0)
    # PPO-style clip range of the probability ratio; it bites when a rollout serves more than one update.
    epsilon: float = Field(0.2, gt=0, lt=1)
    # Optimizer steps per rollout (TRL's num_iterations, the paper's mu): a step's prompts are sampled and
    # graded once, then the same answers serve `iterations` updates, the ratio taken to the sampling policy.
    iterations: int = Field(1, ge=1, le=16)
    # Divide each group's advantages by its reward standard deviation (off: Dr. GRPO's unscaled advantages).
    scale_rewards: bool = True


class MlflowConfig(Strict):
    # Tracking URI: a folder (it holds an sqlite store, mlflow.db, with artifacts/ beside it), an http(s) server or a
    # database URL; None = MLFLOW_TRACKING_URI, else ./mlruns. Relative folders are relative to where tuneloop runs.
    uri: str | None = None
    experiment: str = Field("tuneloop", min_length=1, max_length=200)


class WandbConfig(Strict):
    project: str = Field("tuneloop", min_length=1, max_length=128)
    entity: str | None = None
    # offline: the run is written under the train run folder (wandb/), for `wandb sync` later; online needs a key.
    mode: Literal["offline", "online"] = "offline"
    name: str | None = Field(None, max_length=128)  # the W&B run's display name; None = the run folder's name
    tags: list[str] = Field([], max_length=50)


class Endpoint(Strict):
    """An OpenAI-compatible API run by someone else: a hosted provider, or another `tuneloop serve`."""

    base_url: str = Field(pattern=r"^https?://\S+$")  # up to /v1, e.g. https://api.example.com/v1
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the variable holding the key; None = none sent
    timeout_s: float = Field(120, gt=0, le=3600)
    retries: int = Field(4, ge=0, le=20)  # with exponential back-off where a retry is safe (providers/client.py)


class HostedConfig(Endpoint):
    """`train.backend: openai-compatible`: the same config trained by a provider's fine-tuning API (its files and
    jobs endpoints, as OpenAI's): tuneloop uploads the prepared splits, creates the job, follows its events and
    records the hosted model as a run of kind remote."""

    model: str = Field(min_length=1, max_length=256)  # the provider's base model to fine-tune
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")  # None = the config's name, cut to fit
    poll_s: float = Field(10, gt=0, le=600)  # how often the job's status and events are read
    # The learning rate is sent as a multiplier of the provider's default: train.learning_rate / this.
    default_learning_rate: float = Field(1e-3, gt=0)


class TrainConfig(Strict):
    # lora: adapters on a frozen base; dora: weight-decomposed LoRA; qlora: LoRA on a 4-bit NF4 base
    # (CUDA only); full: every weight trained (use a learning rate around 1e-5..1e-4).
    method: Literal["lora", "dora", "qlora", "full"] = "lora"
    # sft: next-token loss on answers; dpo: direct preference optimisation on chosen/rejected pairs;
    # grpo: reinforcement learning with the objective's reward graders (objective.reward, default the gates).
    objective: Literal["sft", "dpo", "grpo"] = "sft"
    dpo: DpoConfig = DpoConfig()
    grpo: GrpoConfig = GrpoConfig()
    lora: LoraConfig = LoraConfig()
    # Which tokens carry the SFT loss: the assistant answers (default) or every token of the conversation.
    loss_on: Literal["answers", "all"] = "answers"
    # Multi-turn SFT rows: the loss on every assistant turn (all) or on the final one only (last; the earlier
    # answers stay in the context, untrained). Turns marked `"weight": 0` are never trained.
    assistant_turns: Literal["all", "last"] = "all"
    # auto: bf16 mixed precision on a GPU that supports it, fp32 otherwise.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Recompute activations in the backward pass to save memory; None = only when the pre-flight
    # estimate says the run would not fit otherwise (it costs ~20% speed).
    gradient_checkpointing: bool | None = None
    # Refuse to start when the estimated peak exceeds this many GiB; None = the memory available now.
    memory_limit_gb: float | None = Field(None, gt=0)
    tensorboard: bool = True
    # Where the metrics go besides metrics.jsonl: tensorboard, mlflow, wandb (mlflow and wandb are optional
    # extras); None = tensorboard when `tensorboard` is on. Params, per-step metrics and, at the end, the loss
    # plot and the weights; the evaluation's results and the registry version join the same run.
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] | None = None
    mlflow: MlflowConfig = MlflowConfig()
    wandb: WandbConfig = WandbConfig()
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_seq_len: int = Field(512, gt=8)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    # Validation loss every N optimizer steps; 0 = only at the end.
    eval_every: int = Field(0, ge=0)
    # Checkpoint every N optimizer steps (0 = none); an improved validation loss also checkpoints.
    save_every: int = Field(0, ge=0)
    keep_last: int = Field(2, ge=1)
    early_stopping: EarlyStopping = EarlyStopping()
    # The validation number that picks the best checkpoint and drives early stopping: val_loss (SFT, DPO),
    # val_reward (GRPO), or a metric of the task scored on greedy answers to the validation split, e.g.
    # category_accuracy or category.f1_macro (SFT then also generates at each evaluation). None = by objective.
    select_by: str | None = Field(None, pattern=r"^[A-Za-z0-9_.]+$")
    # Validation prompts answered greedily at each evaluation when answers are scored (select_by a task
    # metric, or GRPO's validation reward).
    val_answers: int = Field(64, gt=0)
    seed: int = 0
    # tuneloop's own training paths (fused LoRA layers, chunked loss on answer tokens, no attention mask
    # for right-padded batches); off = the plain peft/transformers computation, for comparison or if a
    # model misbehaves with them.
    fast_kernels: bool = True
    # Batches of similar-length examples: far less padding where batches are padded (DPO, or SFT with
    # padding_free off: ~1.6x tokens/s on mixed lengths), but not random samples, which cost validation
    # loss in our one-epoch comparison; off = shuffled batches.
    group_by_length: bool = False
    # SFT micro-batches without padding: each batch's examples end to end in one row, attention within
    # each example only (train/packing.py); the same batches and loss as padded ones. Models it cannot
    # be exact for (sliding windows shorter than the examples, soft-capped attention) stay padded.
    padding_free: bool = True
    # Under torchrun / accelerate launch with several processes: ddp keeps a whole copy of the model, its
    # gradients and AdamW state on every rank; fsdp shards all three across the ranks (torch FSDP2: each
    # rank holds 1/N of them, and gathers one decoder layer at a time to compute), for models whose
    # training state does not fit one device. Same results either way; one process ignores it.
    distributed: Literal["ddp", "fsdp"] = "ddp"
    # fsdp only: keep the sharded weights, gradients and optimizer state in host memory and run AdamW there
    # (FSDP2's CPUOffloadPolicy; slower, for when even the shards do not fit the GPU); None = the
    # pre-flight estimate decides. Nothing to move on CPU-only runs.
    fsdp_cpu_offload: bool | None = None
    # local: tuneloop trains here; openai-compatible: a provider's fine-tuning API trains it (train.hosted).
    backend: Literal["local", "openai-compatible"] = "local"
    hosted: HostedConfig | None = None

    @model_validator(mode="after")
    def _hosted_needs_endpoint(self) -> "TrainConfig":
        if self.backend == "openai-compatible":
            if self.hosted is None:
                raise ValueError("backend: openai-compatible needs train.hosted: {base_url, model, api_key_env}")
            if self.objective != "sft":
                raise ValueError(f"backend: openai-compatible trains objective: sft here (supervised jobs); got {self.objective}")
        elif self.hosted is not None:
            raise ValueError("train.hosted applies to backend: openai-compatible only")
        return self

    @model_validator(mode="after")
    def _fsdp_combinations(self) -> "TrainConfig":
        if self.fsdp_cpu_offload is not None and self.distributed != "fsdp":
            raise ValueError("fsdp_cpu_offload applies to distributed: fsdp only")
        if self.distributed == "fsdp" and self.method == "qlora":
            raise ValueError("distributed: fsdp cannot shard QLoRA's 4-bit base here; use distributed: ddp (the adapters are small)")
        if self.distributed == "fsdp" and self.objective == "grpo":
            raise ValueError("distributed: fsdp does not support objective: grpo yet (every rank samples answers of its own "
                             "length inside the step, and sharded weights would need the ranks in lockstep); use ddp")
        return self

    @model_validator(mode="after")
    def _early_stopping_needs_validation(self) -> "TrainConfig":
        if self.early_stopping.patience and not self.eval_every:
            raise ValueError("early_stopping.patience needs eval_every > 0 (validation loss is what it watches)")
        if self.objective == "dpo" and self.select_by not in (None, "val_loss"):
            raise ValueError(f"select_by {self.select_by!r}: DPO validation measures val_loss only")
        return self

    @property
    def trackers(self) -> list[str]:
        return list(dict.fromkeys(self.tracking if self.tracking is not None else (["tensorboard"] if self.tensorboard else [])))

    @property
    def selection(self) -> tuple[str, str]:
        """(record key, 'min' or 'max') of the number that picks the best checkpoint."""
        name = self.select_by or ("val_reward" if self.objective == "grpo" else "val_loss")
        key = name if name.startswith("val_") else f"val_{name}"
        return key, "min" if key == "val_loss" or "loss" in key else "max"


class BiasConfig(Strict):
    """`eval.bias`: the counterfactual bias probe. Each test input that holds a listed demographic term (a
    name, a gendered word, a nationality) is answered again with the term swapped for others of its group;
    the report gives how often the labels (or, without label fields, the answer text) change, per attribute,
    as the metrics bias.flip_rate and bias.<attribute>.flip_rate that objective.gates can judge."""

    # YAML attribute -> groups of terms; None = the shipped list (tuneloop/eval/bias_terms.yaml, a template).
    terms: Path | None = None
    # Extra inputs to probe besides the test split (same row forms as the data; their answers are not scored),
    # e.g. tickets that mention people: data.pii redacts most names of the test split.
    inputs: Path | None = None
    # Systems probed; None = the one the gates judge (finetuned when evaluated).
    systems: list[Literal["base", "prompted", "rag", "finetuned", "constrained"]] | None = None
    max_variants: int = Field(3, gt=0)  # per input and attribute
    limit: int | None = Field(None, gt=0)  # probe at most the first N inputs that hold a term
    examples: int = Field(5, ge=0)  # flips shown per attribute in the report

    @field_validator("terms", "inputs")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _relative(path, info)


class Price(Strict):
    """US dollars per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


SYSTEMS = ("base", "prompted", "rag", "finetuned", "constrained")


class ExternalSystem(Strict):
    """An `eval.systems` entry answered elsewhere: a model behind an OpenAI-compatible endpoint (`base_url` +
    `model`), a hosted fine-tune made by `train.backend: openai-compatible` (`run`: its train folder), or
    answers recorded earlier (`answers`: a golden set written by `tuneloop import`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._]*(-[A-Za-z0-9._]+)*$", max_length=64)
    base_url: str | None = Field(None, pattern=r"^https?://\S+$")
    model: str | None = Field(None, min_length=1, max_length=256)
    run: Path | None = None
    answers: Path | None = None
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # What it is sent: prompted (the prompted baseline's instructions and few-shot examples, for a general model)
    # or base (the test conversation as it is, for a model fine-tuned on the task); None = base for a `run`, else prompted.
    framing: Literal["prompted", "base"] | None = None
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(120, gt=0, le=3600)
    retries: int = Field(4, ge=0, le=20)
    price: Price | None = None  # None = eval.prices[name] or eval.prices[model], when listed

    @field_validator("run", "answers")
    @classmethod
    def _relative_paths(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _relative(path, info)

    @model_validator(mode="after")
    def _one_source(self) -> "ExternalSystem":
        if self.name in SYSTEMS:
            raise ValueError(f"'{self.name}' is a built-in system; give the external one another name")
        given = [k for k, v in (("base_url", self.base_url), ("run", self.run), ("answers", self.answers)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"system '{self.name}': give exactly one of base_url (with model), run or answers (given: {', '.join(given) or 'none'})")
        if self.base_url is not None and self.model is None:
            raise ValueError(f"system '{self.name}': base_url needs model (the provider's model name)")
        return self

    @property
    def framed_as(self) -> str:
        return self.framing or ("prompted" if self.base_url else "base")


class EvalConfig(Strict):
    # base: the base model zero-shot; prompted: the base model with engineered instructions and
    # `few_shot` examples from the train split; rag: the base model with the `rag_k` train examples
    # most similar to the input (MiniLM embeddings); finetuned: the trained model; constrained (opt-in): the
    # trained model decoding under task.output_schema (or the rows' tool-call grammar), as `response_format` serves it.
    # Also external systems (ExternalSystem): {name: gpt-4o, base_url: ..., model: ..., api_key_env: ...}, compared
    # on the same test rows and gated alike ("exact_match: finetuned - gpt-4o": ">= -0.02").
    systems: list[Literal["base", "prompted", "rag", "finetuned", "constrained"] | ExternalSystem] = ["base", "prompted", "rag", "finetuned"]
    # Price table for the external systems' cost estimate, by system name or model: {gpt-4o: {input: 2.5, output: 10}}.
    prices: dict[str, Price] = {}
    few_shot: int = Field(3, ge=0)
    rag_k: int = Field(3, gt=0)
    # A knowledge base (`tuneloop rag index`): the rag system then answers from its passages instead
    # of from similar train examples, and retrieval is scored (recall@k, MRR, groundedness).
    rag_index: Path | None = None
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(16, gt=0)
    # Evaluate only the first N test rows (quick checks); None = the whole test split.
    limit: int | None = Field(None, gt=0)
    # Bootstrap resamples for the 95% intervals and paired differences.
    bootstrap: int = Field(1000, ge=100)
    # Extra test file of edge and adversarial cases (empty, very long, prompt injection, other
    # languages), same row forms as the data; scored and reported separately from the test split.
    edge_cases: Path | None = None
    # General-capability regression, base vs fine-tuned: perplexity on shipped general text and a
    # local lm-evaluation-harness multiple-choice task (about a minute on a CPU for a 135M model).
    regression: bool = True
    # The counterfactual bias probe (BiasConfig; `bias: {}` for its defaults); None = off.
    bias: BiasConfig | None = None
    seed: int = 0

    @field_validator("edge_cases", "rag_index")
    @classmethod
    def _edge_relative(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _relative(path, info)

    @model_validator(mode="after")
    def _names_once(self) -> "EvalConfig":
        names = self.system_names
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"eval.systems names {', '.join(twice)} more than once")
        return self

    @property
    def system_names(self) -> list[str]:
        return [s if isinstance(s, str) else s.name for s in self.systems]

    @property
    def external(self) -> list[ExternalSystem]:
        return [s for s in self.systems if not isinstance(s, str)]

    def price_of(self, system: ExternalSystem) -> Price | None:
        return system.price or self.prices.get(system.name) or (self.prices.get(system.model) if system.model else None)


class RegistryConfig(Strict):
    # SQLAlchemy URL; None = sqlite file under TUNELOOP_HOME.
    url: str | None = None
    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ServeConfig(Strict):
    """`tuneloop serve --config FILE`: defaults for the flags not given."""

    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    # What makes the tokens: tuneloop's own engine, or vLLM child processes (names, routes, logs stay ours).
    engine: Literal["tuneloop", "vllm"] = "tuneloop"


class DriftConfig(Strict):
    """When `tuneloop monitor drift` calls production traffic different from the training data."""

    ks_p_value: float = Field(0.01, gt=0, lt=1)  # input lengths: drift when the KS test's p-value is below
    domain_auc: float = Field(0.75, gt=0.5, le=1)  # embeddings: drift when a classifier separates the samples this well
    mean_distance: float = Field(0.05, gt=0, le=2)  # embeddings: cosine distance between the two mean embeddings
    label_psi: float = Field(0.2, gt=0)  # output labels: population stability index above this is drift
    min_samples: int = Field(30, gt=1)  # fewer requests than this: no verdict


class MonitorConfig(Strict):
    drift: DriftConfig = DriftConfig()
    # Alert rules, e.g. "error_rate > 0.02 over 5m", "json_valid < 0.95", "p95_latency_ms > 2000", "drift".
    alerts: list[str] = []
    webhook: str | None = None  # alerts are POSTed here as JSON (and always written to the alert log)


class LoopConfig(Strict):
    """`tuneloop loop`: retrain with feedback, then promote only a model that is better."""

    feedback: bool = True  # add feedback exported from the registry to the training data
    min_score: float = Field(0.8, ge=0, le=1)  # feedback score at or above which a response counts as approved
    # A gated metric may fall this much below production's and still count as "not worse".
    tolerance: float = Field(0.0, ge=0)
    # Share of the new round's train split drawn from the production model's train split (its earlier rounds),
    # so the loop does not forget what they taught; 0 = the round trains on its inputs (and feedback) alone.
    replay: float = Field(0.0, ge=0, lt=1)


class RlRound(Strict):
    """`rl:` a GRPO round after the SFT training of `tuneloop run` and `tuneloop loop`. The SFT run is merged
    into its base, which becomes the round's starting policy and KL reference; the round's other settings
    are `train`'s (its `grpo` section included) with these on top. The reward is objective.reward (by
    default the gates). Evaluation then compares SFT + GRPO (`finetuned`) with the SFT model (`base`)."""

    # LoRA (default) or DoRA keep the merged SFT model as the reference with adapters off; full keeps a frozen copy.
    method: Literal["lora", "dora", "full"] = "lora"
    max_steps: int = Field(30, gt=0)
    learning_rate: float = Field(1e-4, gt=0)
    batch_size: int = Field(2, gt=0)  # prompts per micro-batch, each with train.grpo.group_size answers
    eval_every: int = Field(10, ge=0)
    lora: LoraConfig = LoraConfig(dropout=0.0)

    def train_config(self, sft: "TrainConfig") -> "TrainConfig":
        """The round's TrainConfig: the SFT run's, as GRPO, with this round's settings."""
        return sft.model_copy(update={"objective": "grpo", "epochs": 1.0, "warmup_ratio": 0.0, "scheduler": "constant",
                                      "early_stopping": EarlyStopping(), "select_by": None, **self.model_dump(exclude={"lora"}),
                                      "lora": self.lora})


class SweepRange(Strict):
    """A number between `low` and `high` (inclusive); `log`: sampled on a log scale; `step`: on a grid of it."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "SweepRange":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0, got {self.low}")
        if self.log and self.step:
            raise ValueError("log and step cannot both be set")
        return self


class SweepConfig(Strict):
    """`tuneloop sweep`: an Optuna study over train settings, chosen on the validation split."""

    # Dotted train settings -> a range ({low, high, log, step}) or a list of values to choose from.
    space: dict[str, SweepRange | list[Any]] = Field(min_length=1)
    # What a trial scores: val_loss, or a task metric on greedy validation answers (as train.select_by names them:
    # category_accuracy, category.f1_macro, json_valid, ...); None = train.select_by, else val_loss. Its best value
    # over the trial's evaluations counts; the direction is minimise for losses, maximise otherwise.
    objective: str | None = Field(None, pattern=r"^[A-Za-z0-9_.]+$")
    trials: int = Field(6, ge=1, le=10_000)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    # median: stop a trial whose validation curve is below the median of earlier trials at the same step
    # (needs train.eval_every > 0); none: every trial runs to its end.
    pruner: Literal["median", "none"] = "median"
    startup_trials: int = Field(2, ge=0)  # trials run whole before pruning starts (and TPE stops sampling at random)
    # The first trial runs the config's own settings (where they lie in the space), so the sweep's best is never
    # worse on validation than not sweeping; off = every trial sampled.
    include_default: bool = True
    warmup_evaluations: int = Field(1, ge=0)  # evaluations of each trial never pruned on
    seed: int = 0
    # The study's SQLAlchemy URL; None = sweeps.db beside the registry's sqlite file. (Not the registry database
    # itself: Optuna's schema versions live in the same alembic table name as the registry's.) A server URL lets
    # several machines work on one study.
    storage: str | None = None
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the study; None = <config name>-sweep

    @field_validator("space")
    @classmethod
    def _train_settings(cls, space: dict) -> dict:
        for key, choice in space.items():
            _train_field(key)  # raises, naming the key, unless it is a train setting
            if isinstance(choice, list) and not choice:
                raise ValueError(f"{key}: the list of values is empty")
            if isinstance(choice, SweepRange) and sweep_kind(key) is None:
                raise ValueError(f"{key}: a range needs a numeric setting; give a list of values to choose from")
        return space

    @model_validator(mode="after")
    def _grid_needs_values(self) -> "SweepConfig":
        if self.sampler == "grid":
            ranged = [k for k, v in self.space.items() if isinstance(v, SweepRange) and not v.step]
            if ranged:
                raise ValueError(f"sampler: grid needs a list or a range with step for every setting ({', '.join(ranged)} has neither)")
        return self


def sweep_kind(key: str) -> type | None:
    """int or float: the number type of the train setting a sweep key names (None: not a number)."""
    annotation = _train_field(key).annotation
    return next((t for t in (int, float) if annotation is t or t in get_args(annotation)), None)


def _train_field(key: str):
    """The TrainConfig field that a dotted sweep key (train.lora.r) names, or a ValueError saying what is wrong."""
    head, _, rest = key.partition(".")
    if head != "train" or not rest:
        raise ValueError(f"{key}: only train.* settings can be swept (the data is prepared once for every trial)")
    model, field, walked = TrainConfig, None, "train"
    for part in rest.split("."):
        if model is None or part not in model.model_fields:
            known = list(model.model_fields) if model else []
            close = difflib.get_close_matches(part, known, n=1, cutoff=0.6)
            hint = f"; did you mean '{walked}.{close[0]}'?" if close else ""
            raise ValueError(f"{key}: '{walked}' has no setting '{part}'{hint}")
        field = model.model_fields[part]
        inner = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and issubclass(t, BaseModel)]
        model, walked = (inner[0] if inner else None), f"{walked}.{part}"
    if model is not None:
        raise ValueError(f"{key}: is a section; name one of its settings ({', '.join(model.model_fields)})")
    return field


class PipelineConfig(Strict):
    name: str = "run"
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    rl: RlRound | None = None  # a GRPO round after train (run, loop)
    eval: EvalConfig = EvalConfig()
    registry: RegistryConfig = RegistryConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    loop: LoopConfig = LoopConfig()
    sweep: SweepConfig | None = None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read a pipeline YAML file; relative paths in it are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise TuneloopError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        # The context mark is where the broken construct starts (an unclosed bracket): where to look.
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        what = " ".join(filter(None, [getattr(err, "context", None), getattr(err, "problem", None)])) or str(err)
        raise TuneloopError(f"{path}:{where} is not valid YAML ({what})") from None
    if not isinstance(raw, dict):
        raise TuneloopError(f"{path}: the top level must be a mapping of stage sections")
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return parse_config(raw, source=str(path), base_dir=path.parent)


def parse_config(raw: dict[str, Any], source: str = "config", base_dir: Path | None = None) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw, context={"base_dir": base_dir})
    except ValidationError as err:
        raise TuneloopError(f"{source}: {describe_validation_error(err, PipelineConfig)}") from None


def describe_validation_error(err: ValidationError, root: type[BaseModel] | None = None) -> str:
    """First error as 'yaml.path: what is wrong, got VALUE' (plus a count of the others); an unknown key
    under `root` gets the closest known key as a suggestion."""
    errors = err.errors()
    first = errors[0]
    # (union members and validators show in the location as 'function-after[...]' or 'list[any]': not YAML keys)
    where = ".".join(str(part) for part in first["loc"] if not re.search(r"[\[\]]", str(part))) or "(top level)"
    ctx = first.get("ctx") or {}
    kind = first["type"]
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        what = f"must be {bounds[kind]} {limit}, got {first['input']!r}"
    elif kind == "extra_forbidden":
        known = _keys_at(root, first["loc"][:-1]) if root else []
        close = difflib.get_close_matches(str(first["loc"][-1]), known, n=1, cutoff=0.6)
        what = f"unknown key; did you mean '{close[0]}'?" if close else (
            f"unknown key (known here: {', '.join(known)})" if known else "unknown key (check the spelling against the documented config)")
    elif kind == "missing":
        what = "is required"
    else:
        message = first["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        what = f"{message}, got {first['input']!r}"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {what}{more}"


def _keys_at(model: type[BaseModel], path: tuple) -> list[str]:
    """The keys a config section accepts, found by walking `path` down from `model`."""
    for part in path:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = [t for t in (field.annotation, *get_args(field.annotation)) if isinstance(t, type) and issubclass(t, BaseModel)] if field else []
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
