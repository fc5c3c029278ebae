"""A/B traffic split: a route name maps to weighted variants, e.g. 90% support@production, 10% support@challenger.

A request that names a user is hashed onto [0, 1) with the route name, so the same user keeps the same
variant while weights stay put; when weights move (gradual rollout), users only ever move towards the
variant that grew. Requests without a user are assigned at random. Weights can change at run time.

routes.yaml:

    routes:
      support:
        - {model: support@production, weight: 90}
        - {model: support@challenger, weight: 10}
"""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tuneloop.errors import TuneloopError


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256)
    weight: float = Field(ge=0, le=1e9, allow_inf_nan=False)


class Route(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[Variant] = Field(min_length=1, max_length=64)

    @field_validator("variants")
    @classmethod
    def _some_weight(cls, variants: list[Variant]) -> list[Variant]:
        if sum(v.weight for v in variants) <= 0:
            raise ValueError("at least one variant needs a weight above 0")
        return variants


class Routes:
    def __init__(self, routes: dict[str, Route] | None = None):
        self._routes = dict(routes or {})
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> Routes:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
            return cls({name: Route(variants=variants) for name, variants in (raw.get("routes") or {}).items()})
        except (OSError, yaml.YAMLError, ValidationError, AttributeError) as err:
            raise TuneloopError(f"{path}: not a valid routes file ({err}); expected routes: NAME: [{{model, weight}}, ...]") from None

    def __contains__(self, name: str) -> bool:
        return name in self._routes

    def names(self) -> list[str]:
        return sorted(self._routes)

    def get(self, name: str) -> Route:
        return self._routes[name]

    def set(self, name: str, route: Route) -> None:
        with self._lock:
            self._routes[name] = route

    def remove(self, name: str) -> bool:
        with self._lock:
            return self._routes.pop(name, None) is not None

    def pick(self, name: str, user: str | None = None) -> str:
        """The variant's model reference for one request."""
        variants = self._routes[name].variants
        total = sum(v.weight for v in variants)
        point = _hash_unit(f"{name}\0{user}") if user else random.random()
        edge = 0.0
        for variant in variants:
            edge += variant.weight / total
            if point < edge and variant.weight > 0:
                return variant.model
        return next(v.model for v in reversed(variants) if v.weight > 0)

    def to_dict(self) -> dict:
        return {name: route.model_dump()["variants"] for name, route in sorted(self._routes.items())}


def _hash_unit(text: str) -> float:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64
