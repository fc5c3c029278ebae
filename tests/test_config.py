"""Typed config: defaults, YAML errors that name the path, gates, relative paths."""

from pathlib import Path

import pytest

from tuneloop.config import Gate, PipelineConfig, load_config, parse_config
from tuneloop.errors import TuneloopError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_defaults_are_valid():
    cfg = PipelineConfig()
    assert cfg.model.name == "smollm2-135m-instruct"
    assert cfg.train.lora.target_modules == "all-linear"


def test_bad_value_names_the_yaml_path(tmp_path):
    with pytest.raises(TuneloopError, match=r"p\.yaml: train\.lora\.r: must be > 0, got -4"):
        load_config(write(tmp_path, "train:\n  lora:\n    r: -4\n"))


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(TuneloopError, match=r"train\.learning_rat: unknown key"):
        load_config(write(tmp_path, "train:\n  learning_rat: 0.1\n"))


def test_wrong_type(tmp_path):
    with pytest.raises(TuneloopError, match=r"train\.batch_size: .*integer.*got 'eight'"):
        load_config(write(tmp_path, "train:\n  batch_size: eight\n"))


def test_invalid_yaml_names_the_line(tmp_path):
    with pytest.raises(TuneloopError, match=r"p\.yaml: line 2 is not valid YAML"):
        load_config(write(tmp_path, "train:\n  lora: [r: 4\n"))


def test_missing_file():
    with pytest.raises(TuneloopError, match="config file not found"):
        load_config("/no/such/pipeline.yaml")


def test_gates_parse_and_decide():
    cfg = parse_config({"objective": {"gates": {"json_valid": ">= 0.95", "latency": "< 2"}}})
    gate = cfg.objective.gates["json_valid"]
    assert (gate.op, gate.value) == (">=", 0.95)
    assert gate.passes(0.95) and not gate.passes(0.9)
    assert cfg.objective.gates["latency"].passes(1.5)
    assert str(Gate(op=">=", value=0.8)) == ">= 0.8"


def test_bad_gate_string():
    with pytest.raises(TuneloopError, match="gate for 'json_valid' must look like '>= 0.95'"):
        parse_config({"objective": {"gates": {"json_valid": "at least 95%"}}})


def test_inputs_are_relative_to_the_config_file(tmp_path):
    cfg = load_config(write(tmp_path, "data:\n  inputs: [a.jsonl, /abs/b.jsonl]\n"))
    assert cfg.data.inputs == [tmp_path / "a.jsonl", Path("/abs/b.jsonl")]


def test_overrides_apply_dotted_paths(tmp_path):
    cfg = load_config(write(tmp_path, "train:\n  batch_size: 4\n"), {"train.max_steps": 7, "eval.limit": 3})
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.eval.limit) == (4, 7, 3)
