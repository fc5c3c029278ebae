"""Extension points stay in step with the typed config and the declared dependencies: every data form,
training method and objective found in its package is a value the config accepts, and the other way
round; the library bounds in pyproject.toml are the ones tuneloop/compat.py declares."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path
from typing import get_args

from packaging.requirements import Requirement
from packaging.version import Version

from tuneloop import compat
from tuneloop.config import DataConfig, TrainConfig
from tuneloop.data.forms import forms
from tuneloop.train.methods import methods
from tuneloop.train.objectives import OBJECTIVES

ROOT = Path(__file__).resolve().parents[1]


def choices(model, field: str) -> set[str]:
    return set(get_args(model.model_fields[field].annotation))


def test_every_data_form_file_is_a_config_choice():
    assert set(forms()) | {"auto"} == choices(DataConfig, "form")
    assert list(forms()) == ["messages", "preference", "alpaca", "prompt_completion", "sharegpt"]  # detection order


def test_every_method_file_is_a_config_choice():
    assert set(methods()) == choices(TrainConfig, "method")
    assert {name for name, method in methods().items() if method.adapter} == {"lora", "dora", "qlora"}


def test_every_objective_is_a_config_choice():
    assert set(OBJECTIVES) == choices(TrainConfig, "objective")


def test_library_bounds_agree_with_compat_and_hold_for_what_is_installed():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(line).name: Requirement(line) for line in project["dependencies"]}
    for library, (low, high) in compat.SUPPORTED.items():
        assert str(requirements[library].specifier) in (f"<{high},>={low}", f">={low},<{high}"), library
        installed = Version(metadata.version(library))
        assert installed in requirements[library].specifier, f"{library} {installed} is outside {requirements[library].specifier}"


def test_extras_name_packages_that_pyproject_declares_in_that_extra():
    from tuneloop.extras import EXTRAS

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    assert set(optional["all"][0].partition("[")[2].rstrip("]").split(",")) == set(EXTRAS)


def _members(protocol) -> set[str]:
    return {name for name in vars(protocol) if not name.startswith("_")} | set(getattr(protocol, "__annotations__", {}))


def test_registered_forms_and_methods_have_every_member_of_their_protocol():
    from tuneloop.data.forms.base import Form
    from tuneloop.train.methods.base import Method

    for protocol, found in ((Form, forms()), (Method, methods())):
        for name, plugin in found.items():
            missing = [m for m in _members(protocol) if not hasattr(plugin, m)]
            assert not missing, f"{name} lacks {missing}"


def test_objectives_have_every_method_of_the_protocol():
    from tuneloop.train.objectives import Objective

    methods_of = {name for name in vars(Objective) if not name.startswith("_") and callable(vars(Objective)[name])}
    assert {"attach", "stats", "batches", "collate", "step", "validate"} <= methods_of
    for name, cls in OBJECTIVES.items():
        missing = [m for m in methods_of | {"rows_per_example"} if not hasattr(cls, m)]
        assert not missing, f"{name} lacks {missing}"
