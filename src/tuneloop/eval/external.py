"""Systems answered elsewhere (config.ExternalSystem): a model behind an OpenAI-compatible endpoint, a hosted
fine-tune (its train folder's remote.json), or answers recorded earlier (a golden set).

Live answers come through providers/chat.py: greedy, `concurrency` at a time, retried with back-off, each
kept in the evaluation folder as it arrives (EvalDir.answers_cache), so a rerun after the provider failed
sends only what is missing. Cost: the provider's token counts times the system's price (eval.prices).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tuneloop.artifacts import read_jsonl
from tuneloop.config import EvalConfig, ExternalSystem
from tuneloop.errors import TuneloopError
from tuneloop.layout import EvalDir
from tuneloop.providers.chat import Usage, answer_all
from tuneloop.providers.client import Client, api_key
from tuneloop.providers.remote import remote_model
from tuneloop.ui import progress


def conversation_key(messages: list[dict]) -> str:
    """A test conversation's identity in a golden set (its messages, as the test split holds them)."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class External:
    def __init__(self, system: ExternalSystem, cfg: EvalConfig, folder: EvalDir):
        self.system, self.cfg, self.folder = system, cfg, folder
        self.usage = Usage()
        self.golden = _golden(system.answers) if system.answers is not None else None
        if self.golden is None:
            remote = remote_model(system.run) if system.run is not None else None
            self.base_url = remote.base_url if remote else system.base_url
            self.model = remote.model if remote else system.model
            self.key_env = system.api_key_env or (remote.api_key_env if remote else None)

    def answer(self, conversations: list[list[dict]], originals: list[list[dict]], tag: str) -> list[str]:
        """Answers to `conversations` (framed for this system); `originals` are the unframed test conversations
        a golden set is keyed by."""
        if self.golden is not None:
            missing = [i for i, c in enumerate(originals) if conversation_key(c) not in self.golden]
            if missing:
                raise TuneloopError(f"eval.systems.{self.system.name}: {self.system.answers} has no recorded answer for "
                                    f"{len(missing)} of {len(originals)} {tag} inputs (first: {originals[missing[0]][-1]['content'][:80]!r}); "
                                    "record it again (`tuneloop import`) for this test split")
            return [self.golden[conversation_key(c)] for c in originals]
        key = api_key(self.key_env, f"eval.systems.{self.system.name}")
        with Client(self.base_url, key=key, timeout_s=self.system.timeout_s, retries=self.system.retries) as client, \
                progress(transient=True) as bar:
            task = bar.add_task(f"{tag} {self.system.name}", total=len(conversations), info=self.model)
            answers, _ = answer_all(client, self.model, conversations, max_tokens=self.cfg.max_new_tokens,
                                    concurrency=self.system.concurrency, cache=self.folder.answers_cache(self.system.name, tag),
                                    on_answer=lambda: bar.update(task, advance=1), usage=self.usage)
        return answers

    def cost(self) -> dict:
        """Requests, tokens and the estimated price of this evaluation's answers (and per 1,000 requests)."""
        if self.golden is not None:
            return {"source": str(self.system.answers), "recorded": True}
        price = self.cfg.price_of(self.system)
        usd = None if price is None else (self.usage.prompt_tokens * price.input + self.usage.completion_tokens * price.output) / 1e6
        return {"model": self.model, "base_url": self.base_url, "requests": self.usage.requests, "cached": self.usage.cached,
                "prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens,
                "price_per_mtok": price.model_dump() if price else None, "usd": usd,
                "usd_per_1k_requests": None if usd is None or not self.usage.requests else usd * 1000 / self.usage.requests}


def _golden(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise TuneloopError(f"{path}: the recorded answers (eval.systems[].answers) are not there")
    golden = {}
    for line, row in enumerate(read_jsonl(path), 1):
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not isinstance(row.get("answer"), str):
            raise TuneloopError(f"{path}:{line}: a recorded answer is {{\"messages\": [...], \"answer\": \"...\"}}")
        golden[conversation_key(row["messages"])] = row["answer"]
    return golden
