"""How well the plan predicts: the BELLE paper's Table 4, and the demo study trained on this machine.

    python bench/bench_plan.py [--skip-demo] [--skip-belle] [--out DIR]

BELLE: configs/belle_comparative.yaml planned on its hardware (8 x A100-40GB) beside the paper's
measured hours per epoch (Sun et al. 2023, Table 4), and the full-FT / LoRA ratio of hours per epoch
at 2M and 0.6M samples (paper: 31/7 = 4.4x, 17/5 = 3.4x). Nothing in the plan is fitted to the paper.

Demo: configs/demo.yaml in a fresh folder: the plan before calibration, `launch.grid --calibrate`
(local probes), the plan after it, then every run trained (python -m lorafull.train, study order;
no evaluation) and each run's planned training wall time and peak memory set against the measured
ones (metrics.jsonl's summary: wall_time_s; the largest peak_mem_gb). Target: within +-30 % calibrated.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lorafull.config import load_study, save_run_config, study_signatures  # noqa: E402
from lorafull.plan.estimate import estimate_study  # noqa: E402

# Table 4 of Sun et al. 2023 (arXiv 2304.08109): hours per epoch on 8 x A100-40GB
PAPER_HOURS = {"ft_0.6m": 17, "ft_2m": 31, "lora_0.6m": 5, "lora_2m": 7, "lora_4m": 14, "lora_13b_2m": 10,
               "ft_2m_math_full": 4, "ft_2m_math_lora": 2}


def belle() -> None:
    rows, _ = estimate_study(load_study(REPO / "configs" / "belle_comparative.yaml"))
    by = {r["run"]: r for r in rows}
    print(f"{'run':<16} {'planned h/epoch':>15} {'paper':>6} {'planned/paper':>13}  step breakdown (s)")
    for name, paper in PAPER_HOURS.items():
        r, parts = by[name], by[name]["step_parts_s"]
        shares = ", ".join(f"{k} {parts[k]:.3g}" for k in ("compute", "optimizer", "communication", "offload", "hidden"))
        print(f"{name:<16} {r['hours_per_epoch']:>15.1f} {paper:>6} {r['hours_per_epoch'] / paper:>13.2f}  {shares}")
    for ft, lora, paper in (("ft_2m", "lora_2m", 31 / 7), ("ft_0.6m", "lora_0.6m", 17 / 5)):
        ratio = by[ft]["hours_per_epoch"] / by[lora]["hours_per_epoch"]
        factor = max(ratio / paper, paper / ratio)
        print(f"full/LoRA {ft} / {lora}: planned {ratio:.2f}x, paper {paper:.2f}x, off by a factor {factor:.2f} "
              f"({'within' if factor <= 1.5 else 'NOT within'} 1.5)")
    print(f"(tokens/sample: {by['ft_2m']['tokens_source']} = {by['ft_2m']['tokens_per_sample']:g})")


def _plan(config: Path, out: Path) -> dict:
    study = load_study(config, [f"study.output_dir={out}"], prepare=True)
    rows, _ = estimate_study(study)
    return {r["run"]: r for r in rows}


def _train_all(config: Path, out: Path) -> dict:
    """Train every run (study order: parents first); run -> (wall_time_s, peak_mem_gb)."""
    study = load_study(config, [f"study.output_dir={out}"])
    sigs = study_signatures(study)
    measured = {}
    for run in study.runs:
        run_dir = study.run_dir(run)
        save_run_config(run, run_dir, sigs[run.name])
        subprocess.run([sys.executable, "-m", "lorafull.train", str(run_dir)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        summary = [x for x in lines if x.get("summary")][-1]
        peak = max(x["peak_mem_gb"] for x in lines if x.get("peak_mem_gb") is not None)
        measured[run.name] = (summary["wall_time_s"], peak)
    return measured


def _compare(title: str, plan: dict, measured: dict) -> None:
    print(f"\n{title}")
    print(f"{'run':<26} {'basis':<9} {'planned s':>9} {'measured s':>10} {'ratio':>6} {'planned GB':>10} "
          f"{'measured GB':>11} {'ratio':>6}")
    worst = 0.0
    for name, (wall, peak) in measured.items():
        r = plan[name]
        planned_s, planned_gb = r["wall_hours"] * 3600, r["mem_per_gpu_gb"]
        worst = max(worst, abs(wall / planned_s - 1), abs(peak / planned_gb - 1))
        print(f"{name:<26} {r['basis']:<9} {planned_s:>9.1f} {wall:>10.1f} {wall / planned_s:>6.2f} "
              f"{planned_gb:>10.3f} {peak:>11.3f} {peak / planned_gb:>6.2f}")
    print(f"largest error: {worst * 100:.0f} % ({'within' if worst <= 0.30 else 'NOT within'} +-30 %)")


def demo(out: Path) -> None:
    config = REPO / "configs" / "demo.yaml"
    uncalibrated = _plan(config, out)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launch.grid", str(config), f"study.output_dir={out}", "--calibrate",
                    "--executor", "local"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    print(f"\ndemo: --calibrate took {time.perf_counter() - t0:.0f} s")
    calibrated = _plan(config, out)
    t0 = time.perf_counter()
    measured = _train_all(config, out)
    print(f"demo: training the {len(measured)} runs took {time.perf_counter() - t0:.0f} s")
    _compare("demo, plan without calibration (modelled from plan.hardware)", uncalibrated, measured)
    _compare("demo, plan after --calibrate", calibrated, measured)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-belle", action="store_true")
    p.add_argument("--out", type=Path, default=None, help="the demo study's folder (default: a temporary one)")
    args = p.parse_args()
    if not args.skip_belle:
        belle()
    if not args.skip_demo:
        if args.out:
            demo(args.out)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                demo(Path(tmp) / "demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
