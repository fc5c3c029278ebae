"""The router's YAML: named routes, each a served model with rules and examples, a fallback and thresholds
(see router.py for how a request is routed, and the file format).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from tuneloop.config import Strict, describe_validation_error
from tuneloop.errors import TuneloopError

MetaValue = str | int | float | bool


class Rule(Strict):
    """Exactly one of: a regex, a list of keywords, or metadata key/values that must all match."""

    regex: str | None = None
    keywords: list[str] | None = Field(None, min_length=1)
    metadata: dict[str, MetaValue] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> Rule:
        given = [key for key in ("regex", "keywords", "metadata") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"a rule needs exactly one of regex, keywords, metadata; got {given or 'none'}")
        if self.keywords is not None and not all(word.strip() for word in self.keywords):
            raise ValueError("keywords must not be empty strings")
        return self


class RouteConfig(Strict):
    name: str = Field(min_length=1)
    model: str = Field(min_length=1)  # any served model name, e.g. billing-model@production
    rules: list[Rule] = []
    examples: list[str] = []

    @model_validator(mode="after")
    def _regexes_compile(self) -> RouteConfig:
        for number, rule in enumerate(self.rules, start=1):
            if rule.regex is not None:
                try:
                    re.compile(rule.regex)
                except re.error as err:
                    raise ValueError(f"route '{self.name}': rule {number} has a bad regex {rule.regex!r} ({err}); fix the pattern") from None
        return self


class RouterConfig(Strict):
    name: str = Field(min_length=1)  # the model name clients send
    routes: list[RouteConfig] = Field(min_length=1)
    fallback: str
    min_confidence: float = Field(0.5, ge=0, le=1)
    # How a route's examples score a request: its best example, or the mean of its three best.
    similarity: Literal["max", "top3"] = "max"
    classifier: Path | None = None  # directory written by train_router; relative to the config file

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[RouteConfig]) -> list[RouteConfig]:
        seen: set[str] = set()
        for route in routes:
            if route.name in seen:
                raise ValueError(f"duplicate route name '{route.name}'; route names must be unique")
            seen.add(route.name)
        return routes

    @field_validator("fallback")
    @classmethod
    def _fallback_is_a_route(cls, fallback: str, info: ValidationInfo) -> str:
        names = [route.name for route in info.data.get("routes") or []]
        if names and fallback not in names:
            raise ValueError(f"fallback '{fallback}' is not a route; routes are: {', '.join(names)}")
        return fallback

    @model_validator(mode="after")
    def _routes_can_be_chosen(self) -> RouterConfig:
        if self.classifier is None:
            for route in self.routes:
                if route.name != self.fallback and not route.rules and not route.examples:
                    raise ValueError(f"route '{route.name}' has neither rules nor examples and no classifier is configured, "
                                     "so it can never be chosen; add rules or examples, or train a classifier")
        return self

    def route_named(self, name: str) -> RouteConfig:
        return next(route for route in self.routes if route.name == name)


def _describe(err: ValidationError) -> str:
    """Like the pipeline config's errors, with 'router.' paths; our own checks are already full sentences."""
    first = err.errors()[0]
    if first["type"] == "value_error":
        where = ".".join(["router", *map(str, first["loc"])])
        more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
        return f"{where}: {first['msg'].removeprefix('Value error, ')}{more}"
    return "router." + describe_validation_error(err)


def load_router_config(path: str | Path) -> RouterConfig:
    """The `router:` section of a YAML file (its classifier is not loaded)."""
    path = Path(path)
    if not path.is_file():
        raise TuneloopError(f"{path}: router config not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise TuneloopError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("router"), dict):
        raise TuneloopError(f"{path}: expected a top-level 'router:' section with name, fallback and routes")
    try:
        return RouterConfig.model_validate(raw["router"])
    except ValidationError as err:
        raise TuneloopError(f"{path}: {_describe(err)}") from None
