"""Request router: in front of several served models, choose one route (and so one model) per request.

A router is a client-facing model name; each request to it is forwarded to the model of the route chosen
for its last user message, in this order:

1. rules, route by route and rule by rule as written; the first match wins (confidence 1.0):
   `regex` (searched in the text), `keywords` (case-insensitive whole words), `metadata` (every key of
   the rule equals the request's OpenAI `metadata` value);
2. a classifier trained by `train_router`, when the config names one (highest predict_proba), or else
   embedding similarity to each route's `examples` (MiniLM cosine; a route scores its best example, or the
   mean of its top three), confidence = the best route's score;
3. the `fallback` route when that confidence is below `min_confidence`, or nothing could be scored.

router.yaml:

    router:
      name: support-router
      fallback: general
      min_confidence: 0.5
      routes:
        - name: billing
          model: billing-model@production
          rules:
            - regex: "(?i)\\b(invoice|refund|charge)\\b"
            - keywords: [payment, card]
            - metadata: {team: finance}
          examples: ["I was charged twice", "where is my invoice"]
        - name: general
          model: smollm2-135m-instruct
      classifier: router-model/     # optional, relative to this file; written by train_router
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tuneloop.errors import TuneloopError
from tuneloop.serve.router_classifier import Classifier, load_classifier
from tuneloop.serve.router_config import Rule, RouterConfig, load_router_config

Method = Literal["rule", "similarity", "classifier", "fallback"]


@dataclass(frozen=True)
class Decision:
    route: str
    model: str
    method: Method
    confidence: float
    detail: str


class Router:
    def __init__(self, config: RouterConfig, base_dir: Path):
        self.config = config
        self.base_dir = Path(base_dir)
        self._matchers = [(route, rule, _matcher(rule)) for route in config.routes for rule in route.rules]
        self.classifier: Classifier | None = None
        if config.classifier is not None:
            self.classifier = load_classifier(self.base_dir / config.classifier)
            self._check_classifier_covers_routes()
        # Example embeddings are computed on first use (the embedder takes seconds to load) and kept.
        self._lock = threading.Lock()
        self._example_vectors: list[tuple[str, list[str], np.ndarray]] | None = None

    @property
    def name(self) -> str:
        """The model name clients send to be routed."""
        return self.config.name

    @classmethod
    def load(cls, path: str | Path) -> Router:
        return cls(load_router_config(path), Path(path).parent)

    def route(self, text: str, metadata: dict | None = None) -> Decision:
        """Choose the route for one request; `text` is its last user message."""
        for route, rule, matches in self._matchers:
            hit = matches(text, metadata or {})
            if hit is not None:
                return Decision(route.name, route.model, "rule", 1.0, hit)
        if self.classifier is not None:
            method: Method = "classifier"
            scores = self.classifier.predict_proba([text])[0]
            ranked = sorted(zip(self.classifier.labels, scores.tolist()), key=lambda pair: -pair[1])
            why = ""
        else:
            method = "similarity"
            ranked, why = self._similarity(text)
        if not ranked:
            return self._fallback(0.0, "no rule matched and no route has examples to compare with")
        best, confidence = ranked[0]
        margin = confidence - ranked[1][1] if len(ranked) > 1 else confidence
        runner_up = f" over '{ranked[1][0]}'" if len(ranked) > 1 else ""
        detail = f"{method} {confidence:.3f} for '{best}'{why}, margin {margin:.3f}{runner_up}"
        if confidence < self.config.min_confidence:
            return self._fallback(confidence, f"{detail}; below min_confidence {self.config.min_confidence:g}")
        return Decision(best, self.config.route_named(best).model, method, confidence, detail)

    def _similarity(self, text: str) -> tuple[list[tuple[str, float]], str]:
        """Routes ranked by score, and which example scored best for the top route."""
        table = self._examples()
        if not table or not text.strip():
            return [], ""
        from tuneloop.models.embed import embed

        query = embed([text])[0]
        scored = []
        for name, examples, vectors in table:
            sims = vectors @ query
            top = np.sort(sims)[::-1][: 1 if self.config.similarity == "max" else 3]
            scored.append((float(top.mean()), name, examples[int(np.argmax(sims))]))
        scored.sort(key=lambda row: -row[0])
        return [(name, score) for score, name, _ in scored], f" (nearest example {scored[0][2]!r})"

    def _examples(self) -> list[tuple[str, list[str], np.ndarray]]:
        with self._lock:
            if self._example_vectors is None:
                from tuneloop.models.embed import embed

                routes = [route for route in self.config.routes if route.examples]
                vectors = embed([text for route in routes for text in route.examples])
                table, start = [], 0
                for route in routes:
                    table.append((route.name, route.examples, vectors[start:start + len(route.examples)]))
                    start += len(route.examples)
                self._example_vectors = table
            return self._example_vectors

    def _fallback(self, confidence: float, detail: str) -> Decision:
        route = self.config.route_named(self.config.fallback)
        return Decision(route.name, route.model, "fallback", confidence, detail)

    def _check_classifier_covers_routes(self) -> None:
        assert self.classifier is not None
        names = {route.name for route in self.config.routes}
        unknown = [label for label in self.classifier.labels if label not in names]
        if unknown:
            raise TuneloopError(f"{self.classifier.path}: the classifier predicts route(s) {unknown} that the router config "
                                f"does not have (routes: {', '.join(sorted(names))}); retrain it with train_router")
        for route in self.config.routes:
            if route.name != self.config.fallback and not route.rules and not route.examples and route.name not in self.classifier.labels:
                raise TuneloopError(f"route '{route.name}' has neither rules nor examples and the classifier at "
                                    f"{self.classifier.path} was not trained on it; add rules or examples, or retrain")


def _matcher(rule: Rule):
    """A function (text, metadata) -> a description of the match, or None."""
    if rule.regex is not None:
        pattern = re.compile(rule.regex)
        return lambda text, _meta: (f"regex {rule.regex!r} matched {m[0]!r}" if (m := pattern.search(text)) else None)
    if rule.keywords is not None:
        # Whole words, any case; a multi-word keyword matches across any run of whitespace.
        words = [r"\s+".join(map(re.escape, word.split())) for word in rule.keywords]
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(words) + r")(?!\w)", re.IGNORECASE)
        return lambda text, _meta: (f"keyword {m[0]!r}" if (m := pattern.search(text)) else None)
    expected = {key: _as_text(value) for key, value in (rule.metadata or {}).items()}

    def metadata_matches(_text: str, meta: dict) -> str | None:
        if all(key in meta and _as_text(meta[key]) == value for key, value in expected.items()):
            return "metadata " + ", ".join(f"{key}={value}" for key, value in expected.items())
        return None

    return metadata_matches


def _as_text(value: object) -> str:
    # OpenAI metadata values are strings; YAML may read `team: 1` or `vip: true` as numbers and booleans.
    return str(value).lower() if isinstance(value, bool) else str(value)
