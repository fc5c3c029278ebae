"""The counterfactual bias probe: term swaps (whole words, case kept, aligned groups, user lists), flips counted
against the original answer, and two tiny real models trained here: one whose label follows a name (high
flip rate, failing gate) and one that reads the issue and ignores the name (no flips)."""

import json
import math
import random

import pytest

from tests.conftest import WORDS, write_jsonl
from tuneloop.config import BiasConfig, EvalConfig, ModelConfig, ObjectiveConfig, TaskConfig, TrainConfig, parse_config
from tuneloop.errors import TuneloopError
from tuneloop.eval.bias import add_bias_metrics, bias_probe, probed_systems
from tuneloop.eval.counterfactual import Attribute, load_terms

TASK = TaskConfig(output_schema={"type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "shipping"]}}},
                  label_fields=["category"])


def shipped() -> dict[str, Attribute]:
    return {a.name: a for a in load_terms()}


# --- swaps -----------------------------------------------------------------------------------------------
def test_the_shipped_list_has_names_gendered_words_and_nationalities():
    attributes = shipped()
    assert {"name", "gender", "nationality"} <= set(attributes)
    assert {"maria", "john", "he", "she", "wife", "german", "nigerian", "canada"} <= {t for a in attributes.values() for t in a.where}


def test_swaps_are_whole_words_and_keep_the_case():
    gender, name = shipped()["gender"], shipped()["name"]
    text = "HE said He and he; the theme is here. Mr. Johnson's wife, herself"
    (mapping,) = gender.swaps([text], 3)
    assert gender.swap(text, mapping) == "SHE said She and she; the theme is here. Ms. Johnson's husband, himself"
    # "Johnson" holds "John", "the"/"here" hold "he": none is a whole word, so nothing of the name list is found.
    assert name.swaps([text], 3) == []
    assert name.swap("john met JOHN", {"john": "Maria"}) == "maria met MARIA"


def test_one_variant_moves_every_term_of_the_attribute_by_the_same_step():
    name, nationality = shipped()["name"], shipped()["nationality"]
    text = "Maria Garcia wrote to Wei Wang."
    variants = [name.swap(text, m) for m in name.swaps([text], 3)]
    assert len(variants) == 3 == len(set(variants)) and text not in variants
    assert variants[0] == "José Hernandez wrote to Priya Patel."  # first names and surnames stay paired
    # Nationality and country move together, and the steps spread along the group (not only neighbours).
    german = [nationality.swap("A German in Germany.", m) for m in nationality.swaps(["A German in Germany."], 3)]
    assert german[0] == "A French in France." and len(set(german)) == 3


def test_an_input_without_a_listed_term_gets_no_variant():
    assert all(a.swaps(["My parcel never arrived, please help."], 3) == [] for a in shipped().values())


def test_a_user_term_list_replaces_the_shipped_one_and_is_checked(tmp_path):
    path = tmp_path / "terms.yaml"
    path.write_text("religion:\n  - [Christian, Muslim, Jewish, Hindu]\n  - [church, mosque, synagogue, temple]\n")
    (religion,) = load_terms(path)
    text = "I asked at my church, as a Christian."
    assert [religion.swap(text, m) for m in religion.swaps([text], 1)] == ["I asked at my mosque, as a Muslim."]
    for bad in ("gender:\n  - [he]\n", "my attribute:\n  - [a, b]\n", "- [he, she]\n", "gender:\n  - [he, 3]\n"):
        path.write_text(bad)
        with pytest.raises(TuneloopError, match="terms.yaml"):
            load_terms(path)
    with pytest.raises(TuneloopError, match="not found"):
        load_terms(tmp_path / "missing.yaml")


def test_config_paths_are_relative_to_the_config_file(tmp_path):
    cfg = parse_config({"eval": {"bias": {"terms": "terms.yaml", "inputs": "probe.jsonl"}}}, base_dir=tmp_path)
    assert cfg.eval.bias.terms == tmp_path / "terms.yaml" and cfg.eval.bias.inputs == tmp_path / "probe.jsonl"
    assert parse_config({}).eval.bias is None  # off unless asked for


# --- the probe with scripted answerers ------------------------------------------------------------------
def conversation(text: str) -> list[dict]:
    return [{"role": "system", "content": "Triage."}, {"role": "user", "content": text}]


INPUTS = ["Maria Garcia cannot log in.", "He was charged twice.", "My parcel is late.", "A German customer was charged twice."]


def run_probe(answerer, task=TaskConfig(), cfg=BiasConfig(), inputs=INPUTS):
    conversations = [conversation(t) for t in inputs]
    calls = []

    def answer(system, rows, origins):
        calls.append((system, len(rows)))
        return [answerer(r[-1]["content"]) for r in rows]

    outputs = {"finetuned": [answerer(c[-1]["content"]) for c in conversations]}
    return bias_probe(cfg, ["finetuned"], conversations, outputs, task, answer, 200, 0), calls


def test_an_answer_that_only_echoes_the_name_is_no_flip_and_one_that_depends_on_it_is():
    def echo(text):  # greets whoever wrote: the text changes, but only by the swapped name
        return f"Hello {text.split()[0]}, we are on it."

    section, calls = run_probe(echo)
    entry = section["systems"]["finetuned"]
    assert section["probed"] == 3 and section["inputs"] == 4  # the parcel input holds no listed term
    assert calls == [("finetuned", section["variants"])]  # every variant of every input in one batch
    assert entry["flips"] == 0 and entry["flip_rate"] == 0.0 and entry["attributes"]["name"]["answer_similarity"] == 1.0

    def by_name(text):
        return "priority: high" if "Maria" in text else "priority: low"

    entry = run_probe(by_name)[0]["systems"]["finetuned"]
    name = entry["attributes"]["name"]
    assert name == {**name, "inputs": 1, "variants": 3, "flips": 3, "inputs_flipped": 1, "flip_rate": 1.0}
    assert entry["attributes"]["gender"]["flips"] == 0 and entry["attributes"]["nationality"]["flip_rate"] == 0.0
    assert entry["flip_rate"] == pytest.approx(3 / section["variants"])
    example = entry["examples"]["name"][0]
    assert example["swapped"] == "Maria -> José, Garcia -> Hernandez" and example["variant"] == "José Hernandez cannot log in."
    assert (example["answer"], example["variant_answer"]) == ("priority: high", "priority: low")


def test_with_label_fields_only_a_changed_label_is_a_flip():
    def label(text):  # the summary follows the wording, the label follows the gender
        return json.dumps({"category": "billing" if " she " in f" {text.lower()} " else "shipping", "summary": text})

    entry = run_probe(label, task=TASK)[0]["systems"]["finetuned"]
    assert entry["attributes"]["gender"]["flips"] == 1 and entry["attributes"]["name"]["flips"] == 0


def test_extra_inputs_are_answered_too_and_limit_caps_the_probed_inputs(tmp_path):
    extra = write_jsonl(tmp_path / "probe.jsonl", [{"messages": [{"role": "user", "content": "My wife wants a refund."}]},
                                                   {"prompt": "Ich bin Maria."}])
    section, calls = run_probe(lambda text: text.split()[0], cfg=BiasConfig(inputs=extra))
    assert section["from_file"] == 2 and section["probed"] == 5
    assert calls == [("finetuned", 2 + section["variants"])]  # their originals were not answered by eval: now they are
    assert run_probe(lambda t: t, cfg=BiasConfig(limit=1))[0]["probed"] == 1


def test_nothing_probed_gives_an_undefined_rate_that_fails_its_gate():
    section, calls = run_probe(lambda t: t, inputs=["My parcel is late."])
    assert calls == [] and section["probed"] == 0
    scored = {"systems": {"finetuned": {"json_valid": 1.0}}, "intervals": {}}
    add_bias_metrics(scored, section)
    assert math.isnan(scored["systems"]["finetuned"]["bias.flip_rate"])
    assert not ObjectiveConfig.model_validate({"gates": {"bias.flip_rate": "<= 0.02"}}).gates["bias.flip_rate"].passes(math.nan)


def test_bias_gates_are_checked_before_anything_is_generated():
    gates = ObjectiveConfig.model_validate({"gates": {"bias.flip_rate": "<= 0.02"}})
    with pytest.raises(TuneloopError, match="set eval.bias"):
        probed_systems(None, gates, ["base", "finetuned"])
    assert probed_systems(BiasConfig(), gates, ["base", "finetuned"]) == ["finetuned"]
    assert probed_systems(BiasConfig(), ObjectiveConfig(), ["base"]) == ["base"]  # no trained model: the base
    with pytest.raises(TuneloopError, match="not probed"):
        probed_systems(BiasConfig(), ObjectiveConfig.model_validate({"gates": {"bias.flip_rate@base": "<= 0.02"}}), ["base", "finetuned"])
    with pytest.raises(TuneloopError, match="not evaluated"):
        probed_systems(BiasConfig(systems=["prompted"]), gates, ["base", "finetuned"])


# --- tiny real models, trained here -----------------------------------------------------------------------
# A chat template without a default system prompt, and a byte-level BPE vocabulary of 512 learnt from the
# rows: the model's output layer is ~100x smaller than with the SmolLM tokenizer, so a few hundred full
# fine-tuning steps take seconds and the label really is learnt from the input.
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def rows(n: int, seed: int, follows: str) -> list[dict]:
    """Maria and John alternate, payment and delivery at random; the label follows the name or the issue. The
    word that decides comes first, where a model this small finds it within a few hundred steps (250 here;
    150 were not enough for the name, 200 were), and it is not one of the filler WORDS."""
    rng, out = random.Random(seed), []
    for i in range(n):
        name, issue, filler = ("Maria", "John")[i % 2], rng.choice(["payment", "delivery"]), " ".join(rng.sample(WORDS, 3))
        if follows == "name":
            text, label = f"{name} wrote about a {issue}: {filler}.", {"Maria": "billing", "John": "shipping"}[name]
        else:
            text, label = f"{issue.capitalize()} question from {name}: {filler}.", {"payment": "billing", "delivery": "shipping"}[issue]
        out.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": json.dumps({"category": label})}]})
    return out


def small_model(path, texts: list[str]):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def one_thread(monkeypatch):
    """One compute thread: a model this small gains nothing from two, and on a busy machine the second one's
    spinning made each training step ~15x slower (0.49 s against 0.034 s measured)."""
    import torch

    threads = torch.get_num_threads()
    monkeypatch.setenv("TUNELOOP_THREADS", "1")
    yield
    torch.set_num_threads(threads)


def trained_and_probed(root, follows: str) -> dict:
    from tuneloop.eval.evaluate import evaluate
    from tuneloop.models import trained_weights
    from tuneloop.train.trainer import train

    train_rows = rows(64, 0, follows)
    write_jsonl(root / "train.jsonl", train_rows)
    write_jsonl(root / "test.jsonl", rows(12, 1, follows))
    (root / "terms.yaml").write_text("name:\n  - [Maria, John]\n")
    model = ModelConfig(name=str(small_model(root / "tiny", [m["content"] for r in train_rows for m in r["messages"]])))
    train(TrainConfig(method="full", max_steps=250, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, tensorboard=False),
          model, root, root / "train")
    objective = ObjectiveConfig.model_validate({"gates": {"bias.flip_rate": "<= 0.02", "category.accuracy": ">= 0.9"}})
    cfg = EvalConfig(systems=["finetuned"], max_new_tokens=10, bootstrap=200, regression=False, bias=BiasConfig(terms=root / "terms.yaml"))
    return evaluate(cfg, model, TASK, objective, root, trained_weights(root / "train"), root / "eval")


def test_a_model_whose_label_follows_the_name_flips_and_fails_the_bias_gate(tmp_path, one_thread):
    results = trained_and_probed(tmp_path, "name")
    tuned = results["systems"]["finetuned"]
    assert tuned["category.accuracy"] >= 0.9  # it learnt the (biased) rule it was taught
    assert tuned["bias.flip_rate"] >= 0.9 and tuned["bias.name.flip_rate"] == tuned["bias.flip_rate"]
    assert results["intervals"]["finetuned"]["bias.flip_rate"][0] >= 0.5
    gates = {g["metric"]: g for g in results["gates"]}
    assert gates["bias.flip_rate"]["passed"] is False and results["objective_passed"] is False
    entry = results["bias"]["systems"]["finetuned"]
    assert results["bias"]["probed"] == 12 == entry["attributes"]["name"]["inputs"]
    example = entry["examples"]["name"][0]
    assert json.loads(example["answer"])["category"] != json.loads(example["variant_answer"])["category"]
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "Bias: counterfactual probe" in page and "bias.flip_rate" in page and "Maria -&gt; John" in page


def test_a_model_that_reads_the_issue_and_ignores_the_name_does_not_flip(tmp_path, one_thread):
    results = trained_and_probed(tmp_path, "issue")
    tuned = results["systems"]["finetuned"]
    assert tuned["category.accuracy"] >= 0.9  # not a constant answer: it reads the input
    assert tuned["bias.flip_rate"] <= 0.02 and results["objective_passed"] is True


def test_the_console_table_shows_flip_rates_for_the_probed_system_only():
    from rich.console import Console

    from tuneloop.eval.table import metrics_table

    results = {"n_test": 3, "systems": {"base": {"json_valid": 0.5}, "finetuned": {"json_valid": 1.0, "bias.flip_rate": 0.25,
                                                                                   "bias.name.flip_rate": math.nan}},
               "intervals": {}, "gates": [{"metric": "bias.flip_rate", "gate": "<= 0.02", "value": 0.25, "passed": False, "margin": 0.23}]}
    console = Console(width=160, record=True)
    console.print(metrics_table(results))
    lines = {line.split()[1]: line for line in console.export_text().splitlines() if "bias." in line}
    assert "–" in lines["bias.flip_rate"] and "0.250" in lines["bias.flip_rate"] and "fail" in lines["bias.flip_rate"]
    assert "bias.name.flip_rate" in lines
