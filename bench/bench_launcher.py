"""How long the launcher takes on studies of thousands of runs, and how much memory it holds.

    python bench/bench_launcher.py --runs 1000 10000 [--keep DIR]

For each size it writes a grid of tiny LoRA runs (learning rate x rank x data scale x seed on a 2-layer
scratch model, all reading one data file and one tokenizer), then times `python -m launch.grid` as a
user types it, each in a fresh process, and reads its peak resident memory (wait4's ru_maxrss):
  dry run, cold    --dry-run on a new study: also computes the plan's estimates (cached after)
  dry run          --dry-run again, estimates cached
  status           --status of the finished study (every run folder done, the report written)
  retry            --retry of the finished study: nothing to resubmit
  re-launch        the same command again on the finished study: nothing to submit
The finished study is written by this script (what training and evaluation leave in a run folder:
config.yaml, status.json, final/, the eval fingerprint) so that every folder is read, as on a real
study, without training 10,000 runs. The local executor runs the commands (no Slurm is needed, and
a shared cluster's load does not enter the timings); `--slurm` adds, where a cluster answers, a real
submission of the first wave under a submit limit (slurm.max_submit_jobs, held so nothing trains),
the second launch.grid while it waits, and --status; then cancels it.
Targets (issue #23): within 1.5 s for 1,000 runs and 5 s for 10,000 on a 2-core machine.
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
TARGET_S = {1000: 1.5, 10000: 5.0}
CPU_S: dict[float, float] = {}  # wall seconds of a timed call -> its CPU seconds


def grid_axes(runs: int) -> dict:
    """lr (10) x r (5) x num_samples (runs / 100): with 2 seeds, `runs` runs (a multiple of 100)."""
    if runs % 100:
        raise SystemExit("--runs: a multiple of 100")
    return {"train.lr": [1e-4 * (i + 1) for i in range(10)], "method.r": [2 * (i + 1) for i in range(5)],
            "data.num_samples": [16 * (i + 1) for i in range(runs // 100)]}


def make_study(root: Path, runs: int) -> Path:
    from helpers.common import alpaca_records, write_jsonl  # the tests' tiny data, built offline
    from lorafull.models.tiny import SAMPLE_TEXTS, build_tokenizer

    tok = root / "tokenizer"
    if not tok.exists():
        build_tokenizer(SAMPLE_TEXTS * 5, tok, vocab_size=300)
    write_jsonl(root / "train.jsonl", alpaca_records(512))
    write_jsonl(root / "eval.jsonl", [{"question": "What is 1 plus 1?", "class": "math", "std_answer": "2"}])
    study = {
        "study": {"name": f"bench-launcher-{runs}", "output_dir": str(root / f"study{runs}"), "seeds": [1, 2]},
        "base": {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(tok), "dtype": "fp32"},
                 "method": {"kind": "lora"},
                 "data": {"train": str(root / "train.jsonl"), "format": "alpaca", "max_length": 48},
                 "train": {"max_steps": 4, "global_batch_size": 4, "micro_batch_size": 2, "deepspeed": False},
                 "eval": {"eval_set": str(root / "eval.jsonl"), "max_new_tokens": 4, "judge": {"kind": "reference"}}},
        "grid": grid_axes(runs),  # x 2 seeds
        "slurm": {"partition": "debug", "gres": None, "gpus_per_node": 1, "cpus_per_gpu": 1, "mem_per_gpu_gb": 1,
                  "timeout_min": 30, "array_parallelism": 4, "eval_timeout_min": 30},
    }
    path = root / f"bench{runs}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def finish_every_run(cfg: Path) -> int:
    """Write each run folder as a finished training and evaluation leave it, and the report's table."""
    from launch.state import study_run_dir
    from lorafull.config import eval_fingerprint, load_study, save_run_config, save_study_settings, study_signatures
    from lorafull.runs import RunPaths, Stage, status as run_status, write_json_atomic

    study = load_study(cfg)
    save_study_settings(study)
    sigs = study_signatures(study)
    for run in study.runs:
        run_dir = study_run_dir(study, run)
        save_run_config(run, run_dir, sigs[run.name])
        paths = RunPaths.of(run_dir)
        paths.final.mkdir(parents=True, exist_ok=True)
        (paths.final / "adapter_config.json").write_text("{}")
        write_json_atomic(paths.eval_fingerprint, eval_fingerprint(run))
        paths.scores.write_text('{"id": "e0", "score": 1.0}\n')
        run_status.done(run_dir, Stage.TRAIN, signature=sigs[run.name])
        run_status.done(run_dir, Stage.EVALUATE)
    table = study.output_dir / "report" / "table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("| run |\n|---|\n")
    return len(study.runs)


def timed(args: list[str], env: dict) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of python -m launch.grid ARGS; the child is reaped here with
    wait4, whose ru_maxrss is that one process's peak. Its CPU time goes to CPU_S (on a shared machine
    it moves less with the load than the wall time)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "launch.grid", *args], stdout=out, stderr=err, text=True,
                                env=env, cwd=env["PYTHONPATH"])
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if rc not in (0, 1):
        raise SystemExit(f"launch.grid {' '.join(args)} failed ({rc}):\n{stdout[-3000:]}\n{stderr[-3000:]}")
    CPU_S[elapsed] = usage.ru_utime + usage.ru_stime
    return elapsed, usage.ru_maxrss / 1024, stdout


def measure(root: Path, runs: int, env: dict, use_slurm: bool) -> dict[str, tuple[float, float]]:
    cfg = make_study(root, runs)
    local = ["--executor", "local"]
    out: dict[str, tuple[float, float]] = {}
    out["dry run, cold"] = timed([str(cfg), "--dry-run", *local], env)[:2]
    out["dry run"] = timed([str(cfg), "--dry-run", *local], env)[:2]
    if use_slurm:
        out.update(slurm_waves(cfg, env))
    finish_every_run(cfg)
    out["status"] = timed([str(cfg), "--status", *local], env)[:2]
    out["retry"] = timed([str(cfg), "--retry", *local], env)[:2]
    seconds, rss, text = timed([str(cfg), *local], env)
    assert "0 jobs submitted" in text, text[-2000:]
    out["re-launch"] = (seconds, rss)
    return out


def slurm_waves(cfg: Path, env: dict) -> dict[str, tuple[float, float]]:
    """The first wave submitted for real (limited to 100 jobs, held at once), the second call while it waits."""
    from launch.jobs import slurm_available

    if not slurm_available():
        print("note: --slurm: no Slurm controller answers; the submission timings are left out")
        return {}
    limit = ["slurm.max_submit_jobs=100"]
    out = {}
    try:
        seconds, rss, text = timed([str(cfg), *limit, "--executor", "slurm"], env)
        out["submit first wave (100 jobs)"] = (seconds, rss)
        hold_study_jobs(cfg)
        seconds, rss, text = timed([str(cfg), *limit, "--executor", "slurm"], env)
        assert "0 jobs submitted" in text, text[-2000:]
        out["re-launch, wave queued"] = (seconds, rss)
        out["status, wave queued"] = timed([str(cfg), *limit, "--status", "--executor", "slurm"], env)[:2]
    finally:
        timed([str(cfg), "--cancel", "--executor", "slurm"], env)
    shutil.rmtree(yaml.safe_load(cfg.read_text())["study"]["output_dir"])  # start the folder walk afresh
    return out


def hold_study_jobs(cfg: Path) -> None:
    from helpers.grid import ledger

    led = ledger(Path(yaml.safe_load(cfg.read_text())["study"]["output_dir"]))
    arrays = sorted({s["job_id"] for s in led["submissions"]})
    subprocess.run(["scontrol", "hold", *arrays], capture_output=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, nargs="+", default=[1000, 10000], help="study sizes (multiples of 100)")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    p.add_argument("--slurm", action="store_true", help="also time a real first wave on the Slurm cluster")
    p.add_argument("--code", type=Path, default=REPO,
                   help="the checkout whose launch.grid is timed (default: this one; another, to compare)")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_launcher_"))
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(args.code.resolve())}
    print(f"timing launch.grid of {args.code.resolve()}")
    print(f"load: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    try:
        for runs in args.runs:
            results = measure(root, runs, env, args.slurm)
            target = TARGET_S.get(runs)
            for name, (seconds, rss) in results.items():
                verdict = "" if target is None or "cold" in name or "wave" in name else (
                    f"  target < {target:g} s: {'ok' if seconds < target else 'MISSED'}")
                print(f"{runs:>6} runs  {name:<30} {seconds:7.2f} s (CPU {CPU_S.get(seconds, 0):6.2f} s)  "
                      f"peak RSS {rss:6.0f} MB  load {os.getloadavg()[0]:.1f}{verdict}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
