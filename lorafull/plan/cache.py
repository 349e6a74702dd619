"""The plan's estimates kept between launches: STUDY_DIR/launch/estimates.json (by what each estimate
depends on) and STUDY_DIR/launch/plan.json (what the plan said of each run, for the report's
planned-versus-measured columns, lorafull.report.planned).

Library module (no command): launch.grid calls estimates() and write_planned(). Light: a cached plan
needs no torch.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study, to_dict
from lorafull.runs import write_json_atomic

PLANNED_KEYS = ("hours_per_epoch", "wall_hours", "mem_per_gpu_gb", "basis", "step_s", "startup_s")
ESTIMATE_KEYS = ("trainable_params", "total_params", "added_params", "mem_per_gpu_gb", "fits", "gpu_hours", "tokens",
                 "hours_per_epoch", "wall_hours", "step_s", "step_parts_s", "startup_s", "startup_parts_s", "basis", "shape_key", "tokens_source",
                 "reference_hours_per_epoch", "notes")


def _estimate_key(run: RunConfig, study: Study) -> str:
    """What an estimate depends on: the run and its ancestors (a chained run has its root's
    architecture), the resources, the plan constants, and the data file's size and age."""
    chain, seen = [], set()
    while run is not None and run.name not in seen:
        seen.add(run.name)
        data = Path(run.data.train) if run.data.train else None
        stat = data.stat() if data is not None and data.exists() else None
        chain.append([to_dict(run), [stat.st_size, stat.st_mtime_ns] if stat else None])
        run = next((r for r in study.runs if r.name == run.parent), None) if run.parent else None
    calibration = study.output_dir / "launch" / "calibration.json"  # a new measurement changes the plan
    cal = calibration.stat() if calibration.exists() else None
    body = json.dumps([chain, to_dict(study.slurm), to_dict(study.plan), [cal.st_size, cal.st_mtime_ns] if cal else None],
                      sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def estimates(study: Study, cache: Optional[Path] = None, write: bool = True) -> tuple[dict[str, dict], Optional[str]]:
    """name -> lorafull.plan.estimate_run(...) (mem/GPU, fits, GPU-hours, params) . Counting a 7B model's parameters on the meta device takes about a second per
    (architecture, method), so estimates are kept in `cache` (a json file) by what they depend on:
    a re-run or a resubmission plans without importing torch."""
    stored = {}
    if cache is not None and cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except json.JSONDecodeError:
            stored = {}
    keys = {run.name: _estimate_key(run, study) for run in study.runs}
    out = {name: stored[key] for name, key in keys.items() if key in stored}
    missing = [run for run in study.runs if run.name not in out]
    if not missing:
        return out, None
    from lorafull.plan.estimate import estimate_run  # here, not at the top: a cached plan needs no torch

    for run in missing:
        try:
            row = estimate_run(run, study)
            out[run.name] = {k: row.get(k) for k in ESTIMATE_KEYS}
        except Exception as e:  # an estimate is advice: show why it is missing, plan anyway
            out[run.name] = {"error": f"{type(e).__name__}: {e}"}
    if cache is not None and write:
        fresh = {keys[r.name]: out[r.name] for r in missing if "error" not in out[r.name]}
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {**stored, **fresh})
    return out, None


def write_planned(study: Study, est: dict[str, dict]) -> Path:
    """STUDY_DIR/launch/plan.json: what the plan said of each run when it was last launched or planned,
    for the report's planned-versus-measured columns (lorafull.report.planned)."""
    path = study.output_dir / "launch" / "plan.json"
    stored = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            stored = {}
    fresh = {name: {k: e.get(k) for k in PLANNED_KEYS} for name, e in est.items() if "error" not in e}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**stored, **fresh})
    return path
