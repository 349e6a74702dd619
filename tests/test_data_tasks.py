"""data.num_tasks: the records of k tasks, chosen by the seed, nested across k, before num_samples."""
from __future__ import annotations

import pytest

from helpers.common import alpaca_records, write_jsonl
from lorafull.config import RunConfig
from lorafull.data.dataset import DataError, build_dataset


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from lorafull.models.load import load_tokenizer

    return load_tokenizer(str(tiny_tokenizer_dir))


def tasks_file(path):
    records = alpaca_records(120)
    for i, r in enumerate(records):
        r["task"] = f"t{i % 6}"  # 6 tasks of 20 records, interleaved
        r["output"] = f"{r['output']} [t{i % 6}]"  # the task is visible in the tokens
    return write_jsonl(path, records), records


def run_of(train, cache, num_tasks, seed=1, **data):
    run = RunConfig(name="r")
    run.data.train, run.data.cache_dir, run.data.num_tasks, run.train.seed = str(train), str(cache), num_tasks, seed
    for k, v in data.items():
        setattr(run.data, k, v)
    return run


def tasks_in(ds, tok) -> set:
    texts = [tok.decode(ds[i]["input_ids"]) for i in range(len(ds))]
    return {f"t{k}" for k in range(6) if any(f"[t{k}]" in t.replace(" ", "") for t in texts)}


def test_num_tasks_keeps_whole_tasks_nested_and_seeded(tmp_path, tok):
    train, _ = tasks_file(tmp_path / "train.jsonl")
    two = build_dataset(run_of(train, tmp_path / "c", 2), tok)
    four = build_dataset(run_of(train, tmp_path / "c", 4), tok)
    assert len(two) == 40 and len(four) == 80  # every record of the chosen tasks
    t2, t4 = tasks_in(two, tok), tasks_in(four, tok)
    assert len(t2) == 2 and len(t4) == 4 and t2 <= t4
    again = build_dataset(run_of(train, tmp_path / "c2", 2), tok)
    assert tasks_in(again, tok) == t2  # the same seed chooses the same tasks
    others = {frozenset(tasks_in(build_dataset(run_of(train, tmp_path / "c", 2, seed=s), tok), tok)) for s in range(6)}
    assert len(others) > 1  # and the seed does choose
    sub = build_dataset(run_of(train, tmp_path / "c", 4, num_samples=10), tok)
    assert len(sub) == 10 and tasks_in(sub, tok) <= t4  # num_samples then samples inside the tasks


def test_num_tasks_errors_name_the_key_and_line(tmp_path, tok):
    train, records = tasks_file(tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="data.num_tasks: asks for 7 tasks but the file has 6"):
        build_dataset(run_of(train, tmp_path / "c", 7), tok)
    del records[3]["task"]
    bad = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(DataError, match=r"bad.jsonl:4: data.num_tasks: the record has no 'task' field"):
        build_dataset(run_of(bad, tmp_path / "c", 2), tok)
