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


# Training runs on the tiny llama: small enough for ~40 optimizer steps in seconds on the CPU.
TINY_TRAIN = {"train.max_steps": 40, "train.global_batch_size": 8, "train.micro_batch_size": 4,
              "train.warmup_steps": 2, "train.save_every_steps": 10, "train.log_every_steps": 1,
              "train.deepspeed": False, "train.nproc": 1, "model.dtype": "fp32", "data.max_length": 64}


def write_run_config(root: Path, name: str, tokenizer_dir: Path, **dotted) -> Path:
    """ROOT/study/runs/<name>/config.yaml for a scratch tiny llama on 256 alpaca records (ROOT/train.jsonl);
    dotted overrides, e.g. write_run_config(root, "r1", tok, **{"method.kind": "full"})."""
    from lorafull.config import RunConfig, save_run_config, signature

    data = root / "train.jsonl"
    if not data.exists():
        write_jsonl(data, alpaca_records(256))
    run = RunConfig(name=name)
    settings = {"model.name_or_path": "scratch:tiny-llama", "model.tokenizer": str(tokenizer_dir),
                "data.train": str(data), "data.cache_dir": str(root / "cache"), **TINY_TRAIN}
    settings["train.lr"] = 3e-3 if dotted.get("method.kind") == "full" else 1e-2
    settings.update(dotted)
    for key, value in settings.items():
        section, attr = key.split(".")
        setattr(getattr(run, section), attr, value)
    run_dir = root / "study" / "runs" / name
    save_run_config(run, run_dir, signature(run))
    return run_dir


@pytest.fixture()
def make_run(tmp_path, tiny_tokenizer_dir):
    """Factory of run folders under tmp_path: make_run("r1", **{"method.kind": "full"}) (see write_run_config)."""
    return lambda name, **dotted: write_run_config(tmp_path, name, tiny_tokenizer_dir, **dotted)


def job_env(**extra) -> dict:
    """Environment for a `python -m lorafull.<stage>` subprocess: the package importable, and no rank
    variables inherited from the test process (they would make a job think torchrun started it)."""
    rank_vars = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in rank_vars}
    return {**env, "PYTHONPATH": str(REPO), **extra}
