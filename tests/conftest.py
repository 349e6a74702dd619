"""Shared fixtures: a tiny tokenizer and tiny instruction data, built offline in the test session."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # the BELLE eval files live beside the repository in CI


def alpaca_records(n: int, seed: int = 0) -> list[dict]:
    """Small arithmetic and copy tasks: learnable by a tiny model in a few dozen steps."""
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        if i % 2:
            out.append({"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a + b}"})
        else:
            w = rng.choice(["cat", "dog", "sun", "猫", "狗"])
            out.append({"instruction": "Repeat the word.", "input": w, "output": f"{w} {w}"})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from lorafull.tiny import SAMPLE_TEXTS, build_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = SAMPLE_TEXTS + [f"{r['instruction']} {r['input']} {r['output']}" for r in alpaca_records(200)]
    build_tokenizer(texts * 5, out, vocab_size=512)
    return out


@pytest.fixture()
def alpaca_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", alpaca_records(256))
