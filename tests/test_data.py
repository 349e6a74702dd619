"""Training data: readers, masking, templates, subsets, the token cache.

    python -m pytest tests/test_data.py -q
"""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.common import REPO, alpaca_records, write_jsonl

from lorafull.config import RunConfig
from lorafull.data.dataset import DataError, build_dataset, collate, encode_prompt, format_prompt, subset_indices

IGNORE = -100


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from lorafull.models.load import load_tokenizer

    return load_tokenizer(str(tiny_tokenizer_dir))


def make_run(train: Path, cache: Path, **data) -> RunConfig:
    run = RunConfig(name="t")
    run.data.train, run.data.cache_dir = str(train), str(cache)
    for k, v in data.items():
        setattr(run.data, k, v)
    return run


def trained_ids(item) -> list[int]:
    return item["input_ids"][item["labels"] != IGNORE].tolist()


def conversation(i: int, turns: int = 2) -> dict:
    msgs = []
    for t in range(turns):
        msgs += [{"from": "human", "value": f"What is {i} plus {t}?"}, {"from": "assistant", "value": f"{i + t}"}]
    return {"id": str(i), "conversations": msgs}


# ---------------------------------------------------------------------------------------------
# Masking
# ---------------------------------------------------------------------------------------------
def test_alpaca_prompt_tokens_masked_answer_and_eos_trained(tok, tmp_path):
    records = alpaca_records(20)
    ds = build_dataset(make_run(write_jsonl(tmp_path / "a.jsonl", records), tmp_path / "cache"), tok)
    assert len(ds) == 20 and ds.stats["samples"] == 20 and ds.stats["format"] == "alpaca"
    for rec, i in zip(records, range(len(ds))):
        item = ds[i]
        question = rec["instruction"] + (f"\n{rec['input']}" if rec["input"] else "")
        prompt = encode_prompt(question, tok, "belle")
        answer = tok(rec["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert item["input_ids"].dtype == np.int32 and item["labels"].dtype == np.int32
        assert item["input_ids"].tolist() == prompt + answer
        assert item["labels"].tolist() == [IGNORE] * len(prompt) + answer  # -100 exactly on the prompt
        assert item["labels"][-1] == tok.eos_token_id
        assert tok.decode(item["input_ids"]) == format_prompt(question, tok) + rec["output"] + tok.eos_token
    assert ds.stats["label_tokens"] == sum(len(trained_ids(ds[i])) for i in range(len(ds)))
    assert ds.stats["tokens"] == sum(len(ds[i]["input_ids"]) for i in range(len(ds)))


def test_multi_turn_trains_every_assistant_turn(tok, tmp_path):
    rec = conversation(3, turns=3)
    rec["conversations"].append({"from": "human", "value": "and a question nobody answers"})
    ds = build_dataset(make_run(write_jsonl(tmp_path / "c.jsonl", [rec]), tmp_path / "cache"), tok)
    assert ds.stats["format"] == "conversations"
    item = ds[0]
    expected_ids, expected_labels = [], []
    for t in range(3):
        prompt = tok(format_prompt(f"What is 3 plus {t}?", tok), add_special_tokens=False)["input_ids"]
        answer = tok(f"{3 + t}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        expected_ids += prompt + answer
        expected_labels += [IGNORE] * len(prompt) + answer
    assert item["input_ids"].tolist() == expected_ids  # the unanswered last question is dropped
    assert item["labels"].tolist() == expected_labels
    assert tok.decode(trained_ids(item)) == "3</s>4</s>5</s>"


def test_plain_text_trains_every_token(tok, tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"text": "The quick brown fox."}, {"text": "猫 and 狗"}])
    ds = build_dataset(make_run(f, tmp_path / "cache"), tok)
    assert ds.stats["format"] == "text"
    for i in range(2):
        assert ds[i]["labels"].tolist() == ds[i]["input_ids"].tolist()
        assert ds[i]["input_ids"][-1] == tok.eos_token_id


def test_bos_prefix_is_added_once_and_masked(tmp_path):
    from tokenizers.processors import TemplateProcessing

    from lorafull.models.tiny import SAMPLE_TEXTS, build_tokenizer

    bos_tok = build_tokenizer(SAMPLE_TEXTS * 3, tmp_path / "tok")
    bos_tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    ds = build_dataset(make_run(write_jsonl(tmp_path / "a.jsonl", alpaca_records(4)), tmp_path / "cache"), bos_tok)
    question = "Repeat the word.\n" + alpaca_records(4)[0]["input"]
    prompt = bos_tok(format_prompt(question, bos_tok))["input_ids"]  # what generation feeds the model
    assert prompt[0] == 1 and prompt.count(1) == 1
    assert ds[0]["input_ids"].tolist()[:len(prompt)] == prompt == encode_prompt(question, bos_tok)
    assert (ds[0]["labels"][:len(prompt)] == IGNORE).all()


def test_chat_template(tok, tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [conversation(1, turns=2)])
    with pytest.raises(DataError, match="data.template"):
        build_dataset(make_run(f, tmp_path / "cache", template="chat"), tok)
    with pytest.raises(DataError, match="data.template"):
        format_prompt("hi", tok, "chat")
    chat_tok = pickle.loads(pickle.dumps(tok))
    chat_tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                              "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    ds = build_dataset(make_run(f, tmp_path / "cache", template="chat"), chat_tok)
    item = ds[0]
    prompt = encode_prompt("What is 1 plus 0?", chat_tok, "chat")
    assert format_prompt("What is 1 plus 0?", chat_tok, "chat") == "<|user|>What is 1 plus 0?\n<|assistant|>"
    assert item["input_ids"].tolist()[:len(prompt)] == prompt and (item["labels"][:len(prompt)] == IGNORE).all()
    assert chat_tok.decode(trained_ids(item)) == "1\n</s>2\n</s>"


# ---------------------------------------------------------------------------------------------
# Formats and bad input
# ---------------------------------------------------------------------------------------------
def test_auto_detection_and_json_arrays(tok, tmp_path):
    records = alpaca_records(5)
    array = tmp_path / "arr.json"
    array.write_text("[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n]\n")
    lines_named_json = write_jsonl(tmp_path / "belle.json", [conversation(i) for i in range(4)])  # BELLE style
    a = build_dataset(make_run(array, tmp_path / "cache"), tok)
    b = build_dataset(make_run(lines_named_json, tmp_path / "cache"), tok)
    assert (a.stats["format"], len(a)) == ("alpaca", 5) and (b.stats["format"], len(b)) == ("conversations", 4)
    c = build_dataset(make_run(write_jsonl(tmp_path / "a.jsonl", records), tmp_path / "cache"), tok)
    assert [c[i]["input_ids"].tolist() for i in range(5)] == [a[i]["input_ids"].tolist() for i in range(5)]

    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "x", "completion": "y"}])
    with pytest.raises(DataError, match=rf"{odd}:1: cannot tell the data format.*completion, prompt.*data.format"):
        build_dataset(make_run(odd, tmp_path / "cache"), tok)


def test_malformed_json_line_names_file_and_line(tok, tmp_path):
    f = tmp_path / "bad.jsonl"
    good = [json.dumps(r) for r in alpaca_records(3)]
    f.write_text(f"{good[0]}\n\n{good[1]}\n{{\"instruction\": \"x\", \"output\": }}\n{good[2]}\n")
    with pytest.raises(DataError, match=rf"^{f}:4: malformed JSON line"):
        build_dataset(make_run(f, tmp_path / "cache"), tok)
    arr = tmp_path / "bad.json"
    arr.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "a",\n  "output": oops}\n]')
    with pytest.raises(DataError, match=rf"^{arr}:4: malformed JSON"):
        build_dataset(make_run(arr, tmp_path / "cache"), tok)
    assert not list((tmp_path / "cache").glob("*.tmp-*"))  # a failed build leaves no half-written cache


@pytest.mark.parametrize("record, field", [
    ({"instruction": "Say hi."}, "'output'"),
    ({"output": "hi"}, "'instruction'"),
    ({"instruction": "Say hi.", "output": ["hi"]}, "'output' must be a string"),
])
def test_missing_alpaca_field_names_file_line_and_field(tok, tmp_path, record, field):
    f = write_jsonl(tmp_path / "m.jsonl", alpaca_records(2) + [record])
    with pytest.raises(DataError, match=rf"^{f}:3: .*{field}"):
        build_dataset(make_run(f, tmp_path / "cache", format="alpaca"), tok)


def test_bad_conversation_names_field(tok, tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [conversation(0), {"id": "1", "conversations": [{"from": "human"}]}])
    with pytest.raises(DataError, match=rf"^{f}:2: conversations\[0\]: missing field 'value'"):
        build_dataset(make_run(f, tmp_path / "cache"), tok)
    g = write_jsonl(tmp_path / "r.jsonl", [{"conversations": [{"from": "robot", "value": "x"}]}])
    with pytest.raises(DataError, match=rf"^{g}:1: field 'conversations\[0\].from' is 'robot'"):
        build_dataset(make_run(g, tmp_path / "cache"), tok)


def test_empty_answers_skipped_and_counted(tok, tmp_path):
    records = alpaca_records(6)
    records[1]["output"] = ""
    records[4]["output"] = "  \n"
    empty_turn = conversation(9)
    empty_turn["conversations"][3]["value"] = ""
    ds = build_dataset(make_run(write_jsonl(tmp_path / "e.jsonl", records), tmp_path / "cache"), tok)
    assert ds.stats["samples"] == 4 and ds.stats["skipped_empty"] == 2
    conv = build_dataset(make_run(write_jsonl(tmp_path / "c.jsonl", [conversation(1), empty_turn]),
                                  tmp_path / "cache"), tok)
    assert conv.stats["samples"] == 1 and conv.stats["skipped_empty"] == 1

    nothing = write_jsonl(tmp_path / "none.jsonl", [{"instruction": "x", "output": ""}] * 3)
    with pytest.raises(DataError, match=rf"{nothing}: no usable samples \(3 with empty answers"):
        build_dataset(make_run(nothing, tmp_path / "cache"), tok)


def test_missing_file_and_bad_settings_name_the_key(tok, tmp_path):
    with pytest.raises(DataError, match="data.train"):
        build_dataset(make_run(tmp_path / "nope.jsonl", tmp_path / "cache"), tok)
    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(4))
    with pytest.raises(DataError, match="data.num_samples: asks for 5 samples but the file has 4"):
        build_dataset(make_run(f, tmp_path / "cache", num_samples=5), tok)


# ---------------------------------------------------------------------------------------------
# Truncation, subsets, packing
# ---------------------------------------------------------------------------------------------
def test_truncation_is_counted(tok, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(40))
    full = build_dataset(make_run(f, tmp_path / "cache", max_length=512), tok)
    lengths = full.lengths()
    limit = int(np.median(lengths))
    cut = build_dataset(make_run(f, tmp_path / "cache", max_length=limit), tok)
    assert full.stats["truncated"] == 0
    assert cut.stats["truncated"] == int((lengths > limit).sum()) > 0
    assert max(len(cut[i]["input_ids"]) for i in range(len(cut))) == limit
    for i in range(len(cut)):  # a truncated sample is the prefix of the full one
        n = len(cut[i]["input_ids"])
        assert cut[i]["labels"].tolist() == full[i]["labels"][:n].tolist()

    # a prompt that fills max_length leaves nothing to train: dropped and counted, not trained on
    longest_prompt = max(len(encode_prompt(r["instruction"] + f"\n{r['input']}", tok)) for r in alpaca_records(40))
    tiny = build_dataset(make_run(f, tmp_path / "cache", max_length=longest_prompt), tok)
    assert tiny.stats["skipped_too_long"] > 0
    assert tiny.stats["samples"] + tiny.stats["skipped_too_long"] == 40
    assert all((tiny[i]["labels"] != IGNORE).any() for i in range(len(tiny)))


def test_subsets_are_deterministic_and_nested(tok, tmp_path):
    assert subset_indices(1000, 60, seed=1).tolist() == subset_indices(1000, 60, seed=1).tolist()
    small, mid, big = (set(subset_indices(1000, k, seed=7).tolist()) for k in (60, 200, 400))
    assert len(small) == 60 and small < mid < big
    assert set(subset_indices(1000, 60, seed=8).tolist()) != small

    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(100))
    runs = {k: make_run(f, tmp_path / "cache", num_samples=k) for k in (10, 30)}
    for r in runs.values():
        r.train.seed = 3
    a, b = build_dataset(runs[10], tok), build_dataset(runs[30], tok)
    items_a = {tuple(a[i]["input_ids"].tolist()) for i in range(len(a))}
    items_b = {tuple(b[i]["input_ids"].tolist()) for i in range(len(b))}
    assert (len(a), len(b)) == (10, 30) and a.stats["samples"] == 10
    assert set(a.indices.tolist()) < set(b.indices.tolist()) and items_a <= items_b
    assert a.folder == b.folder  # both subsets index into one tokenized file


def test_packing_concatenates_samples_into_blocks(tok, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(50))
    plain = build_dataset(make_run(f, tmp_path / "cache", max_length=64), tok)
    packed = build_dataset(make_run(f, tmp_path / "cache", max_length=64, packing=True), tok)
    assert packed.folder != plain.folder
    blocks = [packed[i] for i in range(len(packed))]
    assert all(len(b["input_ids"]) == 64 for b in blocks[:-1]) and 0 < len(blocks[-1]["input_ids"]) <= 64
    assert packed.stats["blocks"] == len(packed) < len(plain) and packed.lengths().sum() == plain.stats["tokens"]
    for key in ("input_ids", "labels"):  # labels keep their masks across block boundaries
        assert np.concatenate([b[key] for b in blocks]).tolist() == \
            np.concatenate([plain[i][key] for i in range(len(plain))]).tolist()


def test_collate_pads_right(tok, tmp_path):
    ds = build_dataset(make_run(write_jsonl(tmp_path / "a.jsonl", alpaca_records(4)), tmp_path / "cache"), tok)
    items = [ds[0], ds[1]]
    batch = collate(items, tok.pad_token_id)
    longest = max(len(i["input_ids"]) for i in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, longest)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        assert batch["input_ids"][row, :n].tolist() == item["input_ids"].tolist()
        assert batch["labels"][row, :n].tolist() == item["labels"].tolist()
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (longest - n)
        assert (batch["labels"][row, n:] == IGNORE).all() and (batch["input_ids"][row, n:] == tok.pad_token_id).all()
    assert collate(items, tok.pad_token_id, pad_to_multiple_of=8)["input_ids"].shape[1] % 8 == 0


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------
def test_cache_is_reused_and_keyed_by_settings(tok, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(30))
    cache = tmp_path / "cache"
    first = build_dataset(make_run(f, cache, max_length=64), tok)
    again = build_dataset(make_run(f, cache, max_length=64, num_samples=10), tok)
    assert again.folder == first.folder and again.meta["build_id"] == first.meta["build_id"]  # not re-tokenized
    other_length = build_dataset(make_run(f, cache, max_length=48), tok)
    packed = build_dataset(make_run(f, cache, max_length=64, packing=True), tok)
    folders = {first.folder, other_length.folder, packed.folder}
    assert len(folders) == 3 and {p for p in cache.iterdir() if p.is_dir() and p.name != "file-hashes"} == folders

    write_jsonl(f, alpaca_records(30, seed=1))  # new content, same path: a new cache
    changed = build_dataset(make_run(f, cache, max_length=64), tok)
    assert changed.folder != first.folder

    copy = pickle.loads(pickle.dumps(first))  # DataLoader workers get the maps re-opened, not copied
    assert len(pickle.dumps(first)) < 10_000 and copy[3]["labels"].tolist() == first[3]["labels"].tolist()


_BUILD_SCRIPT = """
import hashlib, json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from lorafull.config import RunConfig
from lorafull.data.dataset import build_dataset
from lorafull.models.load import load_tokenizer
run = RunConfig(name="t")
run.data.train, run.data.cache_dir, run.data.max_length = sys.argv[2], sys.argv[3], 64
tok = load_tokenizer(sys.argv[4])
Path(sys.argv[5] + ".ready-" + sys.argv[6]).touch()
while not Path(sys.argv[5]).exists():  # start line: both processes reach the cache at the same moment
    time.sleep(0.005)
ds = build_dataset(run, tok)
h = hashlib.sha256()
for i in range(len(ds)):
    h.update(ds[i]["input_ids"].tobytes() + ds[i]["labels"].tobytes())
print(json.dumps({"build_id": ds.meta["build_id"], "folder": str(ds.folder), "digest": h.hexdigest(),
                  "stats": ds.stats}))
"""


def test_two_processes_building_one_cache_tokenize_once(tok, tiny_tokenizer_dir, tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", alpaca_records(5000))
    cache, go = tmp_path / "cache", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, str(REPO), str(f), str(cache),
                               str(tiny_tokenizer_dir), str(go), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + 240
    while not all(Path(f"{go}.ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "builders did not start"
        time.sleep(0.05)
    go.touch()
    outs, errs = [], []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
        errs.append(err)
    assert sum(e.count("tokenized 5000 samples") for e in errs) == 1  # one process tokenized ...
    assert outs[0]["build_id"] == outs[1]["build_id"]  # ... and the other mapped its result
    assert outs[0]["digest"] == outs[1]["digest"] and outs[0]["stats"] == outs[1]["stats"]
    assert outs[0]["stats"]["samples"] == 5000
    assert [p.name for p in cache.iterdir() if p.is_dir() and p.name != "file-hashes"] == [Path(outs[0]["folder"]).name]
    here = build_dataset(make_run(f, cache, max_length=64), tok)
    assert here.meta["build_id"] == outs[0]["build_id"]


def test_json_array_streams_across_chunk_boundaries(monkeypatch, tmp_path):
    from lorafull.data import read as data_read

    records = alpaca_records(12) + [{"instruction": "多字节 UTF-8 跨越块边界", "input": "", "output": "好的"}]
    arr = tmp_path / "a.json"
    arr.write_text("[" + ",".join(("\n  " if i % 3 else "") + json.dumps(r, ensure_ascii=False, indent=1)
                                  for i, r in enumerate(records)) + "\n]")
    text = arr.read_text()  # records are flat, so every "{" opens one: its line is the record's line
    expected_lines = [text.count("\n", 0, pos) + 1 for pos, c in enumerate(text) if c == "{"]
    monkeypatch.setattr(data_read, "_CHUNK_BYTES", 7)  # objects and characters straddle many chunks
    got = list(data_read.iter_records(arr))
    assert [rec for _, rec, _ in got] == records
    assert [line for line, _, _ in got] == expected_lines
    arr.write_text(arr.read_text()[:-3])  # cut off the end: the last object and the array are unclosed
    with pytest.raises(DataError, match=rf"^{arr}:\d+: malformed JSON"):
        list(data_read.iter_records(arr))


def test_cli_prints_stats_and_masked_items(tok, tiny_tokenizer_dir, tmp_path, capsys):
    from lorafull.config import save_run_config
    from lorafull.data.dataset import main

    run = make_run(write_jsonl(tmp_path / "a.jsonl", alpaca_records(8)), tmp_path / "cache")
    run.model.name_or_path, run.model.tokenizer = "scratch:tiny-llama", str(tiny_tokenizer_dir)
    save_run_config(run, tmp_path / "run", "abc")
    assert main([str(tmp_path / "run"), "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "'samples': 8" in out and "trained: 'cat cat</s>'" in out
    run.data.train = str(tmp_path / "missing.jsonl")
    save_run_config(run, tmp_path / "run", "abc")
    assert main([str(tmp_path / "run")]) == 2
    assert "data.train" in capsys.readouterr().err
