"""Input formats: ShareGPT rows, OpenAI `weight` per assistant message, Hugging Face `datasets` folders and
`--field-map`, each through the data stage and into the tokens SFT trains on."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tuneloop.artifacts import sha256_dir
from tuneloop.cli import app
from tuneloop.config import DataConfig, FieldNames, TaskConfig, TrainConfig
from tuneloop.data.forms import detect_form
from tuneloop.data.prepare import prepare
from tuneloop.data.readers import check_readable, read_rows
from tuneloop.errors import TuneloopError
from tuneloop.models.chat import IGNORE
from tuneloop.train.sft import Sft

CFG = DataConfig(val_ratio=0, test_ratio=0)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def trained(tokenizer, data_dir: Path, cfg: TrainConfig | None = None) -> list[str]:
    """The text of the tokens SFT computes its loss on, per training example."""
    examples = Sft(tokenizer, data_dir, cfg or TrainConfig()).train_set
    return [tokenizer.decode([t for t, label in zip(e.input_ids, e.labels) if label != IGNORE]) for e in examples]


def sharegpt(*turns, **extra) -> dict:
    return {"conversations": [{"from": who, "value": text} for who, text in turns], **extra}


GOOD = sharegpt(("human", "Where is my parcel?"), ("gpt", "It ships tomorrow."))


# --- ShareGPT ------------------------------------------------------------------------------------
def test_sharegpt_rows_become_chat_messages_that_train_every_assistant_turn(tmp_path, tokenizer):
    rows = [
        sharegpt(("human", "Hello there"), ("gpt", "Hi, how can I help?"), ("user", "My invoice is wrong"),
                 ("chatgpt", "I will fix the invoice."), system="You are a support agent."),
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "Human", "value": "Refund please"},
                           {"from": "model", "value": "Refund sent.", "weight": 1}]},
    ]
    report = prepare([write_jsonl(tmp_path / "in.jsonl", rows)], tmp_path / "out", CFG, TaskConfig())
    assert report["forms"] == {str(tmp_path / "in.jsonl"): {"sharegpt": 2}}
    first, second = lines(tmp_path / "out" / "train.jsonl")
    assert [(m["role"], m["content"]) for m in first["messages"]] == [
        ("system", "You are a support agent."), ("user", "Hello there"), ("assistant", "Hi, how can I help?"),
        ("user", "My invoice is wrong"), ("assistant", "I will fix the invoice.")]
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant"]
    assert trained(tokenizer, tmp_path / "out") == ["Hi, how can I help?<|im_end|>I will fix the invoice.<|im_end|>",
                                                   "Refund sent.<|im_end|>"]


def test_sharegpt_tool_turns_become_openai_tool_calls(tmp_path):
    row = sharegpt(("human", "Weather in Oslo?"), ("function_call", json.dumps({"name": "weather", "arguments": {"city": "Oslo"}})),
                   ("observation", '{"celsius": 3}'), ("gpt", "It is 3 degrees."),
                   tools=json.dumps([{"name": "weather", "parameters": {"type": "object"}}]))
    prepare([write_jsonl(tmp_path / "in.jsonl", [row])], tmp_path / "out", CFG, TaskConfig())
    [kept] = lines(tmp_path / "out" / "train.jsonl")
    call, result = kept["messages"][1], kept["messages"][2]
    assert call["tool_calls"][0]["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert result == {"role": "tool", "content": '{"celsius": 3}', "tool_call_id": call["tool_calls"][0]["id"]}
    assert kept["tools"] == [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("bad, rule, field, says", [
    (sharegpt(("human", "hi"), ("robot", "x")), "unknown_role", "conversations[1].from", "'gpt'"),
    ({"conversations": [{"from": "human"}, {"from": "gpt", "value": "x"}]}, "message_missing_key", "conversations[0].value", "value"),
    (sharegpt(("human", "hi"), ("gpt", "  ")), "empty_content", "conversations[1].value", "empty"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x", "weight": 2}]}, "bad_weight", "conversations[1].weight", "2"),
    ({"conversations": [{"from": "human", "value": "hi", "weight": 0}, {"from": "gpt", "value": "x"}]}, "bad_weight", "conversations[0].weight", "user"),
    ({"conversations": [{"from": "human", "value": "hi", "text": "?"}, {"from": "gpt", "value": "x"}]}, "unknown_keys", "conversations[0]", "text"),
    (sharegpt(("human", "hi")), "no_assistant", "conversations", "assistant"),
    (sharegpt(("human", "hi"), ("observation", "{}"), ("gpt", "x")), "unmatched_tool_message", "conversations[1]", "function_call"),
    (sharegpt(("human", "hi"), ("function_call", "call weather"), ("gpt", "x")), "bad_tool_calls", "conversations[1].value", "JSON"),
    (sharegpt(("system", "Be brief."), ("human", "hi"), ("gpt", "x"), system="Be long."), "conflicting_system", "system", "disagree"),
    ({"conversations": "not json"}, "wrong_type", "conversations", "JSON"),
    ({"conversations": [], "source": "sharegpt90k"}, "unknown_keys", None, "source"),
])
def test_bad_sharegpt_rows_are_rejected_with_line_rule_and_field_and_the_good_kept(tmp_path, bad, rule, field, says):
    source = write_jsonl(tmp_path / "in.jsonl", [GOOD, bad])
    prepare([source], tmp_path / "out", CFG, TaskConfig())
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert (rejected["rule"], rejected["line"], rejected["field"]) == (rule, 2, field)
    assert says in rejected["reason"]
    assert len(lines(tmp_path / "out" / "train.jsonl")) == 1


def test_sharegpt_detection_takes_no_row_another_form_recognises():
    fields = FieldNames()
    assert detect_form(GOOD, fields) == "sharegpt"
    others = {"messages": {"messages": []}, "preference": {"prompt": "q", "chosen": "a", "rejected": "b"},
              "alpaca": {"instruction": "i", "output": "o", "system": "s"}, "prompt_completion": {"prompt": "p", "completion": "c"}}
    for form, row in others.items():
        assert detect_form(row, fields) == form
        assert detect_form({**row, "conversations": []}, fields) == form
    assert detect_form({"dialog": []}, fields.model_copy(update={"conversations": "dialog"})) == "sharegpt"


# --- OpenAI chat with `weight` -------------------------------------------------------------------
def test_weight_zero_answers_are_kept_as_context_and_not_trained(tmp_path, tokenizer):
    row = {"messages": [{"role": "user", "content": "Say one"}, {"role": "assistant", "content": "one", "weight": 0},
                        {"role": "user", "content": "Say two"}, {"role": "assistant", "content": "two", "weight": 1}]}
    prepare([write_jsonl(tmp_path / "in.jsonl", [row])], tmp_path / "out", CFG, TaskConfig())
    [kept] = lines(tmp_path / "out" / "train.jsonl")
    assert [m.get("weight") for m in kept["messages"]] == [None, 0, None, 1]
    assert trained(tokenizer, tmp_path / "out") == ["two<|im_end|>"]


@pytest.mark.parametrize("message, says", [
    ({"role": "assistant", "content": "x", "weight": 0.5}, "0.5"),
    ({"role": "assistant", "content": "x", "weight": "1"}, "'1'"),
    ({"role": "assistant", "content": "x", "weight": True}, "True"),
    ({"role": "system", "content": "x", "weight": 0}, "system"),
    ({"role": "assistant", "content": None, "weight": 7,
      "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}, "7"),
])
def test_a_bad_weight_is_rejected_naming_the_message_and_value(tmp_path, message, says):
    bad = {"messages": [{"role": "user", "content": "hi"}, message, {"role": "assistant", "content": "fine"}]}
    if "tool_calls" in message:
        bad = {"messages": [*bad["messages"][:2], {"role": "tool", "content": "ok", "tool_call_id": "c1"}, bad["messages"][2]],
               "tools": [{"type": "function", "function": {"name": "f"}}]}
    prepare([write_jsonl(tmp_path / "in.jsonl", [GOOD, bad])], tmp_path / "out", CFG, TaskConfig())
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert (rejected["rule"], rejected["line"], rejected["field"]) == ("bad_weight", 2, "messages[1].weight")
    assert says in rejected["reason"]


# --- Hugging Face datasets folders ---------------------------------------------------------------
CHAT = [{"messages": [{"role": "user", "content": f"Question number {i} about {word}"},
                      {"role": "assistant", "content": f"Answer {i}: the {word} is fine", **({"weight": 1} if i % 2 else {})}]}
        for i, word in enumerate("parcel invoice screen cable jacket blender".split())]


def test_a_saved_dataset_is_read_with_row_numbers_and_hashed_in_the_manifest(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    bad = {"messages": [{"role": "user", "content": "no answer here"}]}
    datasets.Dataset.from_list([*CHAT[:3], bad, *CHAT[3:]]).save_to_disk(str(folder), num_shards=2)
    assert len(list(folder.glob("data-*.arrow"))) == 2
    report = prepare([folder], tmp_path / "out", CFG, TaskConfig())
    assert report["rows_in"] == 7 and report["kept"] == 6 and report["forms"] == {str(folder): {"messages": 6}}
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert (rejected["source"], rejected["line"], rejected["rule"]) == (str(folder), 4, "no_assistant")
    # Arrow gave the rows without a weight `weight: null`; they read back as written.
    assert [m.get("weight") for row in lines(tmp_path / "out" / "train.jsonl") for m in row["messages"] if m["role"] == "assistant"] == [None, 1, None, 1, None, 1]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["inputs"]["input0"] == {"path": str(folder), "sha256": sha256_dir(folder)}
    # pyarrow alone reads it: `datasets` is not imported at read time.
    script = f"import sys; from tuneloop.data.readers import read_rows; n = len(list(read_rows({str(folder)!r}))); print(n, 'datasets' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split() == ["7", "False"]


def test_every_split_of_a_saved_dataset_dict_is_read_as_its_own_source(tmp_path, tokenizer):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "dd"
    rows = [sharegpt(("human", row["messages"][0]["content"]), ("gpt", row["messages"][1]["content"])) for row in CHAT]
    datasets.DatasetDict(train=datasets.Dataset.from_list(rows[:4]), test=datasets.Dataset.from_list(rows[4:])).save_to_disk(str(folder))
    report = prepare([folder], tmp_path / "out", CFG, TaskConfig())
    assert report["forms"] == {str(folder / "train"): {"sharegpt": 4}, str(folder / "test"): {"sharegpt": 2}}
    sources = [(row["metadata"]["source"], row["metadata"]["line"]) for row in lines(tmp_path / "out" / "train.jsonl")]
    assert sorted(sources) == sorted([(str(folder / "train"), n) for n in (1, 2, 3, 4)] + [(str(folder / "test"), n) for n in (1, 2)])
    assert len(read_rows(folder / "test").__next__().value["conversations"]) == 2  # a split folder alone is a Dataset
    assert sorted(trained(tokenizer, tmp_path / "out"))[0] == "Answer 0: the parcel is fine<|im_end|>"


def test_a_folder_that_is_not_a_dataset_is_one_clear_error(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(TuneloopError, match="save_to_disk"):
        check_readable(tmp_path / "plain")
    result = CliRunner().invoke(app, ["data", "prepare", str(tmp_path / "plain"), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, TuneloopError) and "not a Hugging Face datasets folder" in str(result.exception)


# --- --field-map ---------------------------------------------------------------------------------
ODD = [{"question": f"Where is order {n}?", "answer": f"Order {n} ships on day {n}."} for n in (11, 22, 33)]


@pytest.mark.parametrize("flags", [["--field-map", "prompt=question", "--field-map", "completion=answer"],
                                   ["--field-map", "prompt=question, completion=answer"]])
def test_field_map_on_the_cli_reads_odd_column_names(tmp_path, flags):
    source = write_jsonl(tmp_path / "in.jsonl", ODD)
    result = CliRunner().invoke(app, ["data", "prepare", str(source), "--out", str(tmp_path / "out"), *flags, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["kept"] == 3 and report["forms"] == {str(source): {"prompt_completion": 3}}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["fields"]["prompt"] == "question"


@pytest.mark.parametrize("value, says", [("promt=question", "unknown part 'promt'"), ("prompt", "'prompt' is not PART=COLUMN"),
                                         ("prompt=", "is not PART=COLUMN")])
def test_a_bad_field_map_is_a_usage_error_listing_the_parts(tmp_path, value, says):
    source = write_jsonl(tmp_path / "in.jsonl", ODD)
    result = CliRunner().invoke(app, ["data", "prepare", str(source), "--out", str(tmp_path / "out"), "--field-map", value])
    assert result.exit_code == 2
    assert says in result.output and "--field-map" in result.output
    assert all(part in result.output for part in FieldNames.model_fields)
    assert not (tmp_path / "out").exists()
