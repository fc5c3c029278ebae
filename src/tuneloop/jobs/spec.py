"""From an OpenAI fine-tuning request to tuneloop's own configuration.

`hyperparameters` values may be "auto": n_epochs 3, batch_size 8, learning_rate_multiplier 1 (times
tuneloop's default learning rate for the method). `method` is `supervised` (SFT) or `dpo` (with
`beta`). The training method is LoRA; `model` is any model tuneloop can load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.config import DataConfig, DpoConfig, ModelConfig, PipelineConfig, TrainConfig

AUTO = {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}


ID = 64  # characters in a file id, a job id, a cursor


class Hyperparameters(BaseModel):
    """Each value "auto" or a number within explicit bounds (finite, and what one training job can use)."""

    model_config = ConfigDict(extra="forbid")

    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = "auto"
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=1024)] = "auto"
    learning_rate_multiplier: Literal["auto"] | Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = "auto"
    beta: Literal["auto"] | Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)] = "auto"  # DPO only

    def resolved(self) -> dict[str, Any]:
        return {k: (AUTO.get(k) if v == "auto" else v) for k, v in self.model_dump().items() if k != "beta"}


class MethodSection(BaseModel):
    model_config = ConfigDict(extra="ignore")

    hyperparameters: Hyperparameters | None = None


class Method(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["supervised", "dpo"] = "supervised"
    supervised: MethodSection | None = None
    dpo: MethodSection | None = None

    def hyperparameters(self) -> Hyperparameters:
        section = (self.dpo if self.type == "dpo" else self.supervised) or MethodSection()
        return section.hyperparameters or Hyperparameters()


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=ID)
    validation_file: str | None = Field(None, min_length=1, max_length=ID)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9._-]*$")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)  # OpenAI's range; also a valid torch and SQLite integer

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(resolved hyperparameters, method) as stored on the job."""
        method = self.method or Method()
        chosen = self.hyperparameters or method.hyperparameters()
        resolved = chosen.resolved()
        stored_method: dict[str, Any] = {"type": method.type}
        if method.type == "dpo":
            beta = chosen.beta if chosen.beta != "auto" else DpoConfig().beta
            stored_method["dpo"] = {"hyperparameters": {**resolved, "beta": beta}}
        else:
            stored_method["supervised"] = {"hyperparameters": resolved}
        return resolved, stored_method


def pipeline_for(job: dict, training: Path, has_validation: bool) -> PipelineConfig:
    hp = job["hyperparameters"]
    method = job["method"]
    train = TrainConfig(
        method="lora", objective="dpo" if method["type"] == "dpo" else "sft", epochs=hp["n_epochs"], batch_size=hp["batch_size"],
        learning_rate=TrainConfig().learning_rate * hp["learning_rate_multiplier"], seed=job["seed"],
        dpo=DpoConfig(beta=method.get("dpo", {}).get("hyperparameters", {}).get("beta", DpoConfig().beta)),
        save_every=1, keep_last=1000, eval_every=0,
    )
    data = DataConfig(inputs=[training], val_ratio=0.0 if has_validation else 0.1, test_ratio=0.0, seed=job["seed"])
    return PipelineConfig(name=job["id"], model=ModelConfig(name=job["model"]), data=data, train=train)
