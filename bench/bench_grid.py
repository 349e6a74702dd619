"""How long launch.grid takes to plan and submit a 100-run grid, and to re-run it as a no-op.

    python bench/bench_grid.py [--runs 100] [--keep DIR]

Needs a Slurm cluster (sbatch on PATH; .ci/run or the local Slurm scripts start one). It writes a tiny
100-run LoRA grid (learning rate x rank x data scale on a 2-layer scratch model), then times, as a
user types them:
  0. python -m launch.grid STUDY --dry-run   the plan with lorafull.plan's estimates (cached)
  1. python -m launch.grid STUDY         plan + submit (target < 10 s; sbatch calls counted through a
                                         shim on PATH: one per array, not one per run)
  2. python -m launch.grid STUDY         again while the jobs are queued: submits nothing (target < 5 s)
  3. python -m launch.grid STUDY --status
  4. plan + submit of the same grid in a new folder, without a dry run before: the estimates are
     computed during the launch (importing torch, transformers and peft dominates that time)
and cancels every job at the end (--cancel). The training array is held right after
submission so that the machine does not train 100 runs while the re-runs are timed.
Timings on a shared machine vary by +-30%: read them against the targets printed beside them.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # run from a checkout without installing
TARGETS_S = {"plan+submit": 10.0, "no-op re-run": 5.0}


def make_study(root: Path, runs: int) -> Path:
    from conftest import alpaca_records, write_jsonl  # the tests' tiny data, built offline
    from lorafull.models.tiny import SAMPLE_TEXTS, build_tokenizer

    tok = root / "tokenizer"
    build_tokenizer(SAMPLE_TEXTS * 5, tok, vocab_size=300)
    write_jsonl(root / "train.jsonl", alpaca_records(512))
    write_jsonl(root / "eval.jsonl", [{"question": "What is 1 plus 1?", "class": "math", "std_answer": "2"}])
    lrs = [1e-4, 2e-4, 5e-4, 1e-3, 2e-3]
    ranks = [2, 4, 8, 16, 32]
    scales = [64, 128, 256, 512]
    n_scales = max(1, runs // (len(lrs) * len(ranks)))
    study = {
        "study": {"name": "bench-grid", "output_dir": str(root / "study")},
        "base": {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(tok), "dtype": "fp32"},
                 "method": {"kind": "lora"},
                 "data": {"train": str(root / "train.jsonl"), "format": "alpaca", "max_length": 48},
                 "train": {"max_steps": 4, "global_batch_size": 4, "micro_batch_size": 2, "deepspeed": False},
                 "eval": {"eval_set": str(root / "eval.jsonl"), "max_new_tokens": 4, "judge": {"kind": "reference"}}},
        "grid": {"train.lr": lrs, "method.r": ranks, "data.num_samples": scales[:n_scales]},
        "slurm": {"partition": "debug", "gres": None, "gpus_per_node": 1, "cpus_per_gpu": 1, "mem_per_gpu_gb": 1,
                  "timeout_min": 30, "array_parallelism": 4, "eval_timeout_min": 30},
    }
    path = root / "bench.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def sbatch_shim(root: Path) -> tuple[Path, Path]:
    """A directory whose `sbatch` counts its calls and runs the real one."""
    real = shutil.which("sbatch")
    if real is None:
        raise SystemExit("bench_grid needs Slurm: sbatch is not on PATH (start the local Slurm first)")
    shim_dir, counter = root / "shim", root / "sbatch_calls"
    shim_dir.mkdir()
    (shim_dir / "sbatch").write_text(f'#!/bin/bash\necho "$*" >> {counter}\nexec {real} "$@"\n')
    (shim_dir / "sbatch").chmod(0o755)
    counter.write_text("")
    return shim_dir, counter


def timed(args: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "launch.grid", *args], capture_output=True, text=True, env=env,
                         cwd=REPO)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"launch.grid {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return elapsed, out.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=100, help="grid size (multiple of 25)")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_grid_"))
    root.mkdir(parents=True, exist_ok=True)
    cfg = make_study(root, args.runs)
    shim_dir, counter = sbatch_shim(root)
    env = {**os.environ, "PATH": f"{shim_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    results: dict[str, float] = {}
    cold_cfg = root / "bench_cold.yaml"  # the same grid in another folder: launched without a dry run first
    cold = yaml.safe_load(cfg.read_text())
    cold["study"]["output_dir"] = str(root / "study_cold")
    cold_cfg.write_text(yaml.safe_dump(cold, sort_keys=False))
    try:
        results["--dry-run"], _ = timed([str(cfg), "--dry-run"], env)
        results["plan+submit"], out = timed([str(cfg)], env)
        calls = counter.read_text().splitlines()
        ledger = yaml.safe_load((root / "study" / "launch" / "jobs.json").read_text())
        train_array = next(s["job_id"] for s in ledger["submissions"] if s["kind"] == "train")
        subprocess.run(["scontrol", "hold", train_array], capture_output=True)  # keep the cores free for timing
        summary = next(line for line in out.splitlines() if "jobs submitted" in line)
        results["no-op re-run"], again = timed([str(cfg)], env)
        assert "0 jobs submitted" in again, again
        assert len(counter.read_text().splitlines()) == len(calls), "the no-op re-run called sbatch"
        results["--status"], _ = timed([str(cfg), "--status"], env)
        results["plan+submit, no dry run before"], cold_out = timed([str(cold_cfg)], env)
        cold_summary = next(line for line in cold_out.splitlines() if "jobs submitted" in line)
    finally:
        cancel_s, cancelled = timed([str(cfg), "--cancel"], env)
        timed([str(cold_cfg), "--cancel"], env)
    runs = len(ledger["runs"])
    print(f"grid of {runs} runs: {summary.strip()}")
    print(f"the same grid launched without a dry run first: {cold_summary.strip()}")
    print(f"sbatch calls: {len(calls)} for {runs} runs (one per array: training, evaluation, report)")
    for name, seconds in results.items():
        target = TARGETS_S.get(name.split(",")[0])
        verdict = (f"target < {target:.0f} s: {'ok' if seconds < target else 'MISSED'} "
                   f"({seconds / target:.2f} x target)") if target else ""
        print(f"{name:>31}: {seconds:6.2f} s   {verdict}")
    print(f"{'--cancel':>31}: {cancel_s:6.2f} s   ({cancelled.strip()})")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
