"""Helpers for the launcher's tests (no tests here): a tiny study on disk, Slurm waits, sacct times.

A study here trains a 2-layer scratch model for a few steps on the CPU and evaluates with the offline
reference judge, so that a whole Slurm pipeline (training array -> evaluations -> report) takes a
minute on two cores.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
import yaml

from helpers.common import IN_CI, REPO, alpaca_records, need_slurm, write_jsonl  # noqa: F401 (re-exported)
from launch.jobs import expand_job_id

EVAL_ITEMS = [{"id": f"e{i}", "question": q, "class": c, "std_answer": a} for i, (q, c, a) in enumerate([
    ("What is 2 plus 3?", "math", "5"), ("Repeat the word. cat", "rewrite", "cat cat"),
    ("What is 4 plus 4?", "math", "8"), ("Repeat the word. dog", "rewrite", "dog dog")])]


def make_data(root: Path, tokenizer_dir: Path) -> dict:
    """Train/eval files (and the tokenizer) of a tiny study under root/data."""
    data = root / "data"
    write_jsonl(data / "train.jsonl", alpaca_records(64))
    write_jsonl(data / "eval.jsonl", EVAL_ITEMS)
    tok = data / "tokenizer"
    if not tok.exists():
        shutil.copytree(tokenizer_dir, tok)
    return {"train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl"), "tokenizer": str(tok)}


def study_dict(root: Path, files: dict, name: str = "gridtest", **sections) -> dict:
    """A study: LoRA/full on a scratch 2-layer model, plain-torch loop, 1 CPU per process."""
    study = {
        "study": {"name": name, "output_dir": str(root / name)},
        "base": {
            "model": {"name_or_path": "scratch:tiny-llama", "tokenizer": files["tokenizer"], "dtype": "fp32"},
            "method": {"kind": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
            "data": {"train": files["train"], "format": "alpaca", "max_length": 48},
            "train": {"max_steps": 4, "epochs": 1, "global_batch_size": 4, "micro_batch_size": 2, "lr": 1.0e-3,
                      "warmup_steps": 0, "save_every_steps": 1000, "log_every_steps": 1, "seed": 3,
                      "deepspeed": False, "nproc": 1},
            "eval": {"eval_set": files["eval"], "max_new_tokens": 4, "batch_size": 4, "backend": "hf",
                     "judge": {"kind": "reference"}},
        },
        "slurm": {"partition": "debug", "nodes": 1, "gpus_per_node": 1, "cpus_per_gpu": 1, "mem_per_gpu_gb": 1,
                  "gres": None, "timeout_min": 30, "signal_delay_s": 30, "array_parallelism": 8,
                  "eval_timeout_min": 30, "report_timeout_min": 10},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            _merge(study[key], value)
        else:
            study[key] = value
    return study


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def write_study(path: Path, study: dict) -> Path:
    path.write_text("# python -m launch.grid " + path.name + "\n" + yaml.safe_dump(study, sort_keys=False))
    return path


def grid(*args: str, env: Optional[dict] = None, timeout_s: float = 300, cwd: Optional[Path] = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """python -m launch.grid ARGS, as a user types it."""
    out = subprocess.run([sys.executable, "-m", "launch.grid", *map(str, args)], capture_output=True, text=True,
                         timeout=timeout_s, env={**os.environ, **(env or {})}, cwd=cwd or REPO)
    if check and out.returncode != 0:
        raise AssertionError(f"launch.grid {' '.join(map(str, args))} exited {out.returncode}\n"
                             f"--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}")
    return out


def ledger(study_dir: Path) -> dict:
    return json.loads((study_dir / "launch" / "jobs.json").read_text())


def status(run_dir: Path) -> dict:
    p = run_dir / "status.json"
    return json.loads(p.read_text()) if p.exists() else {}


def squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout
    return set(out.split())


def wait_for_jobs(job_ids: list[str], timeout_s: float = 600) -> None:
    """Until none of the jobs (array ids cover their tasks) is queued or running."""
    bases = {j.split("_")[0] for j in job_ids}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        left = [j for j in squeue_ids() if j.split("_")[0] in bases]
        if not left:
            return
        time.sleep(2)
    raise AssertionError(f"jobs still queued/running after {timeout_s}s: {sorted(left)}\n"
                         + subprocess.run(["squeue", "-r"], capture_output=True, text=True).stdout)


def sacct_rows(job_ids: list[str], timeout_s: float = 60) -> dict[str, dict]:
    """JobID -> {state, start, end} (epoch seconds); waits until accounting has every job's end."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start,End", "-j", ",".join(bases)],
                             capture_output=True, text=True).stdout
        rows = {}
        for line in out.splitlines():
            jid, state, start, end = line.split("|")
            for one in expand_job_id(jid):  # "89_[0-1%2]": tasks that never started
                rows[one] = {"state": state.split()[0], "start": _epoch(start), "end": _epoch(end)}
        ended = all(jid in rows and rows[jid]["end"] is not None for jid in job_ids)
        if ended or time.monotonic() > deadline:
            return rows
        time.sleep(1)


def _epoch(text: str) -> Optional[float]:
    if not text or text in ("Unknown", "None"):
        return None
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def job_log_text(study_dir: Path) -> str:
    """Every submitit log of the study (for assertion messages)."""
    folder = study_dir / "launch" / "slurm"
    logs = sorted(folder.rglob("*.err")) + sorted(folder.rglob("*.out"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def final_state_dict(run_dir: Path) -> dict:
    """The trained weights of a run's final/ (full model or LoRA adapter) as tensors by name."""
    from safetensors.torch import load_file

    files = sorted((run_dir / "final").glob("*.safetensors"))
    assert files, f"{run_dir}/final holds no safetensors"
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def study_dir_files(study_dir: Path, tokenizer_dir: Path) -> dict:
    """make_data under STUDY_DIR/data, named in the study file by {study_dir}: a study that carries its
    inputs, as the demo does (moving or cloning it moves them along)."""
    made = make_data(study_dir, tokenizer_dir)
    return {k: "{study_dir}/" + str(Path(v).relative_to(study_dir)) for k, v in made.items()}


def dry_run_counts(stdout: str) -> tuple[int, int]:
    """(runs to train, runs to evaluate) from launch.grid --dry-run's last line."""
    import re

    m = re.search(r"would train (\d+) run\(s\).*evaluate (\d+)", stdout)
    assert m, stdout
    return int(m.group(1)), int(m.group(2))
