"""From an OpenAI fine-tuning request to tuneloop's own configuration.

`hyperparameters` values may be "auto": n_epochs 3, batch_size 8, learning_rate_multiplier 1 (times
tuneloop's default learning rate for the method). `method` is `supervised` (SFT), `dpo` (with `beta`)
or `reinforcement` (GRPO with a `grader` in the shape of OpenAI's grader objects: graders/specs.py;
`compute_multiplier` scales the answers sampled per prompt, 8 at 1.0; `eval_interval` and `eval_samples`
set the validation reward's cadence and size). The training method is LoRA; `model` is any model
tuneloop can load. A `python` grader runs code on the server, so the jobs API takes one only when the
server was started with TUNELOOP_ALLOW_PYTHON_GRADERS=1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from tuneloop.config import DataConfig, DpoConfig, GrpoConfig, ModelConfig, ObjectiveConfig, PipelineConfig, TrainConfig, WandbConfig
from tuneloop.graders.specs import GraderSpec

AUTO = {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}


ID = 64  # characters in a file id, a job id, a cursor


class Hyperparameters(BaseModel):
    """Each value "auto" or a number within explicit bounds (finite, and what one training job can use)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = "auto"
    beta: Literal["auto"] | Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = "auto"  # DPO only
    # reinforcement only (OpenAI's names): answers per prompt = 8 x compute_multiplier; validation cadence and size
    compute_multiplier: Literal["auto"] | Annotated[float, Field(ge=0.25, le=8, allow_inf_nan=False)] = "auto"
    eval_interval: Literal["auto"] | Annotated[int, Field(ge=1, le=100_000)] = "auto"
    eval_samples: Literal["auto"] | Annotated[int, Field(ge=1, le=10_000)] = "auto"
    reasoning_effort: Literal["auto", "low", "medium", "high"] = "auto"  # accepted for compatibility; no effect here

    def resolved(self) -> dict[str, Any]:
        return {k: (AUTO.get(k) if v == "auto" else v) for k, v in self.model_dump().items() if k in AUTO}

    def reinforcement(self) -> dict[str, Any]:
        """GRPO's settings from OpenAI's reinforcement hyperparameters."""
        multiplier = 1.0 if self.compute_multiplier == "auto" else self.compute_multiplier
        return {"group_size": max(2, min(64, round(GrpoConfig().group_size * multiplier))),
                "eval_every": 0 if self.eval_interval == "auto" else self.eval_interval,
                "val_answers": TrainConfig().val_answers if self.eval_samples == "auto" else self.eval_samples}


class MethodSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: Hyperparameters | None = None


class ReinforcementSection(MethodSection):
    grader: GraderSpec | None = None  # required: a job has no objective gates to fall back on

    @model_validator(mode="after")
    def _grader_given(self) -> "ReinforcementSection":
        if self.grader is None:
            raise ValueError("method.reinforcement.grader is required (e.g. {type: string_check, operation: eq, "
                             "input: '{{sample.output_text}}', reference: '{{item.reference}}'})")
        if _runs_code(self.grader.model_dump()) and os.environ.get("TUNELOOP_ALLOW_PYTHON_GRADERS") != "1":
            raise ValueError("python graders run code on this server; it accepts them only when started with "
                             "TUNELOOP_ALLOW_PYTHON_GRADERS=1 (or run `tuneloop train` with the grader in the config)")
        return self


class Method(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    supervised: MethodSection | None = None
    dpo: MethodSection | None = None
    reinforcement: ReinforcementSection | None = None

    @model_validator(mode="after")
    def _section_for_reinforcement(self) -> "Method":
        if self.type == "reinforcement" and self.reinforcement is None:
            raise ValueError("method.type 'reinforcement' needs method.reinforcement with a grader")
        return self

    def hyperparameters(self) -> Hyperparameters:
        section = {"dpo": self.dpo, "reinforcement": self.reinforcement}.get(self.type, self.supervised) or MethodSection()
        return section.hyperparameters or Hyperparameters()


class Wandb(BaseModel):
    model_config = ConfigDict(extra="ignore")

    project: str = Field(min_length=1, max_length=128)
    name: str | None = Field(None, max_length=128)
    entity: str | None = Field(None, max_length=128)
    tags: list[Annotated[str, Field(max_length=64)]] = Field([], max_length=50)


class Integration(BaseModel):
    """OpenAI's integration object; W&B is the one type: the job's run logs to it (train.tracking: wandb, online
    when the server has WANDB_API_KEY, else offline in the job's run folder for `wandb sync`)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["wandb"]
    wandb: Wandb


def _metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's bounds: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if value is not None and (len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())):
        raise ValueError("metadata holds at most 16 pairs, keys of at most 64 characters and values of at most 512")
    return value


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=ID)
    validation_file: str | None = Field(None, min_length=1, max_length=ID)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)  # OpenAI's range; also a valid torch and SQLite integer
    metadata: Annotated[dict[str, str] | None, AfterValidator(_metadata)] = None
    integrations: list[Integration] | None = Field(None, max_length=10)

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(resolved hyperparameters, method) as stored on the job."""
        method = self.method or Method()
        chosen = self.hyperparameters or method.hyperparameters()
        resolved = chosen.resolved()
        stored_method: dict[str, Any] = {"type": method.type}
        if method.type == "dpo":
            beta = chosen.beta if chosen.beta != "auto" else DpoConfig().beta
            stored_method["dpo"] = {"hyperparameters": {**resolved, "beta": beta}}
        elif method.type == "reinforcement":
            stored_method["reinforcement"] = {"hyperparameters": {**resolved, **chosen.reinforcement()},
                                              "grader": method.reinforcement.grader.model_dump(mode="json")}
        else:
            stored_method["supervised"] = {"hyperparameters": resolved}
        return resolved, stored_method


def pipeline_for(job: dict, training: Path, has_validation: bool) -> PipelineConfig:
    hp = job["hyperparameters"]
    method = job["method"]
    rl = method.get("reinforcement") or {}
    rl_hp = rl.get("hyperparameters", {})
    train = TrainConfig(
        method="lora", objective={"dpo": "dpo", "reinforcement": "grpo"}.get(method["type"], "sft"), epochs=hp["n_epochs"],
        batch_size=hp["batch_size"], learning_rate=_learning_rate(method["type"]) * hp["learning_rate_multiplier"], seed=job["seed"],
        dpo=DpoConfig(beta=method.get("dpo", {}).get("hyperparameters", {}).get("beta", DpoConfig().beta)),
        grpo=GrpoConfig(group_size=rl_hp.get("group_size", GrpoConfig().group_size)),
        save_every=1, keep_last=1000, eval_every=rl_hp.get("eval_every", 0), val_answers=rl_hp.get("val_answers", TrainConfig().val_answers),
        **_tracking(job.get("integrations") or []),
    )
    data = DataConfig(inputs=[training], val_ratio=0.0 if has_validation else 0.1, test_ratio=0.0, seed=job["seed"])
    objective = ObjectiveConfig(reward=rl["grader"]) if rl.get("grader") else ObjectiveConfig()
    return PipelineConfig(name=job["id"], model=ModelConfig(name=job["model"]), data=data, train=train, objective=objective)


def _tracking(integrations: list[dict]) -> dict[str, Any]:
    """A W&B integration as the run's tracking: online when this server holds a W&B key, else offline."""
    wandb = next((i["wandb"] for i in integrations if i.get("type") == "wandb"), None)
    if wandb is None:
        return {}
    mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return {"tracking": ["tensorboard", "wandb"],
            "wandb": WandbConfig(project=wandb["project"], entity=wandb.get("entity"), name=wandb.get("name"),
                                 tags=wandb.get("tags") or [], mode=mode)}


def _learning_rate(method_type: str) -> float:
    """tuneloop's base learning rate per method: RL updates are noisier, so they start 10x lower than SFT's."""
    return TrainConfig().learning_rate * (0.1 if method_type == "reinforcement" else 1.0)


def _runs_code(spec: Any) -> bool:
    """Whether a grader spec (a multi's sub-graders included) contains a python grader."""
    if isinstance(spec, dict):
        return spec.get("type") == "python" or any(_runs_code(v) for v in spec.values())
    return isinstance(spec, list) and any(_runs_code(v) for v in spec)
