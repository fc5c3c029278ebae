"""General-capability regression: did fine-tuning cost the model what it knew before?

Two checks, base vs fine-tuned, with no download: perplexity on a held-out sample of general English
text shipped in `general/general_text.txt`, and lm-evaluation-harness (`lm-eval`) on a small local
multiple-choice task of general knowledge (`general/general_mc.jsonl`, 40 questions), loaded from the
package folder through a task YAML written at run time. The drop is fine-tuned minus base.
"""

from __future__ import annotations

import logging
import math
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch

GENERAL = Path(__file__).parent / "general"
TASK_YAML = """task: tuneloop_general
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


def general_capability(models: dict[str, object], tokenizer, adapter_switch) -> dict:
    """`models` maps 'base' / 'finetuned' to a loaded model; `adapter_switch(system)` is the context that
    switches a shared model's adapter off for 'base'. Returns per-system scores and the drops."""
    scores: dict[str, dict[str, float]] = {}
    for system, model in models.items():
        with adapter_switch(system):
            scores[system] = {"perplexity": perplexity(model, tokenizer), "general_mc_acc": general_mc_accuracy(model, tokenizer)}
    result: dict = {"systems": scores}
    if {"base", "finetuned"} <= scores.keys():
        result["perplexity_change"] = scores["finetuned"]["perplexity"] / scores["base"]["perplexity"] - 1
        result["general_mc_drop"] = scores["base"]["general_mc_acc"] - scores["finetuned"]["general_mc_acc"]
    return result


@torch.inference_mode()
def perplexity(model, tokenizer, text: str | None = None) -> float:
    """exp(mean next-token loss) over the paragraphs of the general text, each scored on its own."""
    text = text if text is not None else (GENERAL / "general_text.txt").read_text()
    total, count = 0.0, 0
    for paragraph in (p.strip() for p in text.split("\n\n")):
        if not paragraph:
            continue
        ids = tokenizer(paragraph, return_tensors="pt").input_ids.to(model.device)
        loss = model(input_ids=ids, labels=ids).loss
        total, count = total + loss.item() * (ids.shape[1] - 1), count + ids.shape[1] - 1
    return math.exp(total / count)


def general_mc_accuracy(model, tokenizer) -> float:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    for name in ("lm-eval", "lm_eval"):  # its per-task INFO lines would bury our progress output
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "tuneloop_general.yaml").write_text(TASK_YAML.format(data=GENERAL / "general_mc.jsonl"))
        results = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8), tasks=["tuneloop_general"],
            task_manager=TaskManager(include_path=folder), log_samples=False, verbosity="ERROR",
        )
    return float(results["results"]["tuneloop_general"]["acc,none"])


def switch_for(attached: bool, model):
    """Context factory: the shared model with its adapter off for 'base', untouched otherwise."""
    return lambda system: model.disable_adapter() if attached and system == "base" else nullcontext()
