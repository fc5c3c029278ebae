"""The batching engine: batched and continuous generation equal one-at-a-time, adapters mix in a batch."""

from __future__ import annotations

import threading

import pytest
import torch

from tuneloop.serve.engine import Engine, Overloaded
from tuneloop.serve.generation import AdapterRef, Generation, Sampling

PROMPTS = ["My parcel is late", "Refund my order please, it arrived broken and I want my money back", "hi", "Where is my invoice?"]


def run(engine: Engine, jobs: list[Generation], timeout: float = 60) -> list[Generation]:
    ended = threading.Semaphore(0)
    for job in jobs:
        job.emit = lambda kind, payload: ended.release() if kind in ("done", "error") else None
    for job in jobs:
        engine.submit(job)
    for job in jobs:
        assert ended.acquire(timeout=timeout), "a job did not finish"
    assert all(job.finish_reason in ("stop", "length") for job in jobs), [j.text for j in jobs]
    return jobs


def job(engine: Engine, prompt: str, max_tokens: int = 12, adapter: AdapterRef | None = None, **sampling) -> Generation:
    return Generation(engine.encode(prompt), max_tokens, lambda *_: None, Sampling(**({"temperature": 0} | sampling)), adapter=adapter)


def reference(engine: Engine, prompt: str, max_tokens: int, adapter: AdapterRef | None = None) -> list[int]:
    """Plain transformers generate, one prompt, no padding: what every batched row must equal."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(engine.ref)
    if adapter:
        model = PeftModel.from_pretrained(model, adapter.path)
    ids = torch.tensor([engine.encode(prompt)])
    out = model.eval().generate(ids, max_new_tokens=max_tokens, do_sample=False, eos_token_id=sorted(engine.end_ids),
                                pad_token_id=engine.tokenizer.pad_token_id)
    return [t for t in out[0, ids.shape[1]:].tolist() if t not in engine.end_ids]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    engine = Engine(tiny_model_dir, max_batch=8, max_queue=16)
    yield engine
    engine.stop()


def test_a_batch_of_different_lengths_equals_one_at_a_time(engine):
    batched = run(engine, [job(engine, p, max_tokens=4 + 3 * i) for i, p in enumerate(PROMPTS)])
    for i, (prompt, result) in enumerate(zip(PROMPTS, batched)):
        assert result.tokens == reference(engine, prompt, 4 + 3 * i), prompt
        assert result.finish_reason == ("length" if len(result.tokens) == 4 + 3 * i else "stop")


def test_jobs_joining_a_running_batch_get_the_same_tokens(engine):
    long = job(engine, PROMPTS[1], max_tokens=40)
    started = threading.Event()
    long.emit = lambda kind, payload: started.set()
    engine.submit(long)
    assert started.wait(30)
    late = run(engine, [job(engine, p, max_tokens=10) for p in PROMPTS[2:]])
    for prompt, result in zip(PROMPTS[2:], late):
        assert result.tokens == reference(engine, prompt, 10)


def test_mixed_adapters_in_one_batch(engine, adapters):
    a, b, dora = (AdapterRef(k, str(adapters[k]), k == "dora") for k in ("a", "b", "dora"))
    results = run(engine, [job(engine, PROMPTS[0], 8, a), job(engine, PROMPTS[0], 8, b), job(engine, PROMPTS[0], 8),
                           job(engine, PROMPTS[0], 8, dora)])
    expected = [reference(engine, PROMPTS[0], 8, x) for x in (a, b, None, dora)]
    assert [r.tokens for r in results] == expected
    assert len({tuple(e) for e in expected}) == 4, "the adapters should change the output"
    assert engine.unload_adapter("b") and "b" not in engine.adapters


def test_seeded_sampling_repeats_and_stop_strings_cut(engine):
    first, second = run(engine, [job(engine, "hello", 10, temperature=1.0, seed=3) for _ in range(2)])
    assert first.tokens == second.tokens and first.text
    stop = first.text[len(first.text) // 2:][:3]
    cut = run(engine, [Generation(engine.encode("hello"), 10, None, Sampling(1.0, seed=3), stop=[stop])])[0]
    assert cut.finish_reason == "stop" and cut.text == first.text[: first.text.find(stop)]


def test_a_full_queue_refuses(tiny_model_dir):
    engine = Engine(tiny_model_dir, max_batch=1, max_queue=2)
    try:
        jobs = [job(engine, "hello", 200) for _ in range(6)]
        with pytest.raises(Overloaded, match="queue limit 2"):
            for j in jobs:
                engine.submit(j)
    finally:
        for j in jobs:
            j.cancelled = True
        engine.stop()


def _finish_all(engine: Engine, jobs: list[Generation], timeout: float = 60) -> None:
    ended = threading.Semaphore(0)
    for j in jobs:
        previous = j.emit
        j.emit = (lambda prev: lambda kind, payload: (prev(kind, payload), ended.release() if kind in ("done", "error") else None))(previous)
        engine.submit(j)
    for _ in jobs:
        assert ended.acquire(timeout=timeout), "a request did not finish"


def test_one_request_failing_to_sample_or_decode_fails_alone(engine):
    good = [job(engine, p, max_tokens=6) for p in PROMPTS[:2]]
    nan_sampling = job(engine, PROMPTS[2], max_tokens=6, temperature=1.0, seed=1)
    nan_sampling.sampling.temperature = float("nan")  # past validation: softmax gives NaN, multinomial refuses

    def explode(kind, payload):
        if kind == "delta":
            raise RuntimeError("client handler broke")

    broken_emit = job(engine, PROMPTS[3], max_tokens=6)
    broken_emit.emit = explode
    _finish_all(engine, [*good, nan_sampling, broken_emit])
    assert all(g.finish_reason in ("stop", "length") for g in good)
    assert nan_sampling.finish_reason == "error" and broken_emit.finish_reason == "error"
    for g, prompt in zip(good, PROMPTS[:2]):
        assert g.tokens == reference(engine, prompt, 6)
    assert run(engine, [job(engine, "after the failures")])[0].finish_reason in ("stop", "length")  # the engine goes on


def test_a_seed_the_generator_refuses_fails_at_submission():
    with pytest.raises((RuntimeError, OverflowError, ValueError)):
        Generation([1, 2], 4, lambda *_: None, Sampling(temperature=1.0, seed=2**70))
