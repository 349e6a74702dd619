"""Tokenizing with several processes over byte ranges (lorafull.data.parallel) writes the cache one process
writes, byte for byte, and names a bad line by its number in the whole file."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers.common import alpaca_records, write_jsonl
from lorafull.data import cache, parallel
from lorafull.data.read import DataError


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from lorafull.models.load import load_tokenizer

    return load_tokenizer(str(tiny_tokenizer_dir))


def varied_records(n: int) -> list[dict]:
    """Alpaca records with the cases that change counts: empty answers (skipped), answers past
    max_length (truncated), prompts that fill max_length (dropped), blank lines between records."""
    out = alpaca_records(n, seed=3)
    for i in range(0, n, 97):
        out[i] = {**out[i], "output": ""}
    for i in range(5, n, 89):
        out[i] = {**out[i], "output": " ".join(["dog cat sun"] * 40)}
    for i in range(11, n, 151):
        out[i] = {**out[i], "instruction": " ".join(["repeat the word"] * 60)}
    return out


def build(path, tokenizer, out, num_proc, packing=False) -> dict:
    out.mkdir()
    return cache._tokenize_file(path, "alpaca", tokenizer, "belle", 64, packing, out, num_proc=num_proc)


@pytest.mark.parametrize("packing", [False, True])
def test_three_processes_write_the_serial_cache_byte_for_byte(tmp_path, tokenizer, monkeypatch, packing):
    path = write_jsonl(tmp_path / "train.jsonl", varied_records(3000))
    path.write_text(path.read_text().replace("\n", "\n\n", 7))  # blank lines: skipped, still counted as lines
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    serial = build(path, tokenizer, tmp_path / "serial", 1, packing)
    multi = build(path, tokenizer, tmp_path / "multi", 3, packing)
    assert serial["processes"] == 1 and multi["processes"] == 3
    for key in ("samples", "tokens", "label_tokens", "truncated", "skipped_empty", "skipped_too_long"):
        assert multi[key] == serial[key], key
    # every case happened (packing keeps long samples whole: nothing truncated or dropped there)
    assert serial["skipped_empty"] > 0 and (packing or (serial["truncated"] > 0 and serial["skipped_too_long"] > 0))
    for name, dtype in cache.ARRAYS.items():
        file = f"{name}.{np.dtype(dtype).name}"
        assert (tmp_path / "multi" / file).read_bytes() == (tmp_path / "serial" / file).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == sorted(p.name for p in (tmp_path / "serial").iterdir())


def test_ranges_start_at_line_starts_and_know_their_line_numbers(tmp_path):
    lines = [json.dumps({"i": i, "pad": "x" * (i % 50)}) for i in range(1000)]
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    data = path.read_bytes()
    ranges = parallel.split_ranges(path, 7)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (start, end, first_line), nxt in zip(ranges, ranges[1:] + [None]):
        assert start == 0 or data[start - 1:start] == b"\n"
        assert first_line == data[:start].count(b"\n") + 1
        assert json.loads(data[start:].split(b"\n", 1)[0])["i"] == first_line - 1
        if nxt:
            assert nxt[0] == end


def test_a_bad_line_in_a_later_range_is_named_by_its_line_in_the_file(tmp_path, tokenizer, monkeypatch):
    lines = [json.dumps(r, ensure_ascii=False) for r in alpaca_records(2000)]
    lines[1733] = '{"instruction": "broken",'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    with pytest.raises(DataError, match=r"bad.jsonl:1734: malformed JSON line"):
        build(path, tokenizer, tmp_path / "out", 3)


def test_small_files_and_json_arrays_stay_in_one_process(tmp_path):
    small = write_jsonl(tmp_path / "s.jsonl", alpaca_records(10))
    array = tmp_path / "a.json"
    array.write_text(json.dumps(alpaca_records(10)))
    assert not parallel.use_parallel(small, 8)
    assert parallel.use_parallel(small, 8, min_bytes=0) and not parallel.use_parallel(small, 1, min_bytes=0)
    assert not parallel.use_parallel(array, 8, min_bytes=0)
