"""Helpers every test may use: paths, tiny data, run folders by hand, skips for what a bare clone lacks."""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"  # the BELLE eval files and the local Slurm scripts live beside the repository in CI
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


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


def job_env(**extra) -> dict:
    """Environment for a `python -m lorafull.<stage>` subprocess: the package importable, and no rank
    variables inherited from the test process (they would make a job think torchrun started it)."""
    rank_vars = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "TORCHELASTIC_RUN_ID"}
    env = {k: v for k, v in os.environ.items() if k not in rank_vars}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def need_shared(*names: str) -> Path:
    """../shared/<names> (BELLE's eval files): a user's clone has no ../shared, so skip there with the reason;
    under CI=true its absence is a failure."""
    path = SHARED.joinpath(*names)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"CI=true but {path} is missing")
        pytest.skip(f"needs ../shared/{'/'.join(names)} (BELLE's files beside the clone; CI has them)")
    return path


@functools.lru_cache(maxsize=1)
def slurm_controller_answers() -> bool:
    """True when `sbatch` is installed and a controller answers `scontrol ping` (an installed but stopped
    Slurm must not count: its tests would wait minutes and fail)."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    try:
        out = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "UP" in out.stdout


def need_slurm() -> None:
    """Skip without a running Slurm on a laptop; in CI (CI=true) a missing Slurm is a failure, never a skip."""
    if not slurm_controller_answers():
        if IN_CI:
            pytest.fail("CI=true but no Slurm controller answers: the local Slurm did not start")
        pytest.skip("needs a running Slurm controller (scontrol ping); .ci/run starts a local one")
