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


# settings no estimate reads: a learning-rate x seed sweep is estimated once per shape, not per run
_NOT_ESTIMATED = (("name",), ("group",), ("train", "lr"), ("train", "seed"))


def _estimate_key(run: RunConfig, study: Study, by_name: dict, stats: dict) -> str:
    """What an estimate depends on: the run and its ancestors (a chained run has its root's
    architecture), the resources, the plan constants, and the data file's size and age. `stats`
    memoises the data files' stat across the runs of one call."""
    chain, seen = [], set()
    per_name = study.plan.avg_tokens_per_sample
    while run is not None and run.name not in seen:
        seen.add(run.name)
        settings = to_dict(run)
        if not (isinstance(per_name, dict) and run.name in per_name):  # (tokens per sample set by run name)
            for part in _NOT_ESTIMATED:
                (settings[part[0]] if len(part) == 2 else settings).pop(part[-1], None)
        data = run.data.train
        if data not in stats:
            st = Path(data).stat() if data and Path(data).exists() else None
            stats[data] = [st.st_size, st.st_mtime_ns] if st else None
        chain.append([settings, stats[data]])
        run = by_name.get(run.parent) if run.parent else None
    if "calibration" not in stats:  # a new measurement changes the plan
        calibration = study.output_dir / "launch" / "calibration.json"
        cal = calibration.stat() if calibration.exists() else None
        stats["calibration"] = json.dumps([to_dict(study.slurm), to_dict(study.plan),
                                           [cal.st_size, cal.st_mtime_ns] if cal else None],
                                          sort_keys=True, default=str)
    body = json.dumps(chain, sort_keys=True, default=str) + stats["calibration"]
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def estimates(study: Study, cache: Optional[Path] = None, write: bool = True) -> tuple[dict[str, dict], Optional[str]]:
    """name -> lorafull.plan.estimate_run(...) (mem/GPU, fits, GPU-hours, params). Counting a 7B model's
    parameters on the meta device takes about a second per (architecture, method), so estimates are kept
    in `cache` (a json file) by what they depend on: a re-run or a resubmission plans without importing
    torch, and runs that differ only in what no estimate reads (learning rate, seed) share one."""
    stored = {}
    if cache is not None and cache.exists():
        try:
            stored = json.loads(cache.read_text())
        except json.JSONDecodeError:
            stored = {}
    by_name, stats = {r.name: r for r in study.runs}, {}
    keys = {run.name: _estimate_key(run, study, by_name, stats) for run in study.runs}
    fresh: dict[str, dict] = {}
    todo = {keys[r.name]: r for r in reversed(study.runs) if keys[r.name] not in stored}  # first run per key
    if todo:
        from lorafull.plan.estimate import estimate_run  # here, not at the top: a cached plan needs no torch

        for key, run in todo.items():
            try:
                row = estimate_run(run, study)
                fresh[key] = {k: row.get(k) for k in ESTIMATE_KEYS}
            except Exception as e:  # an estimate is advice: show why it is missing, plan anyway
                fresh[key] = {"error": f"{type(e).__name__}: {e}"}
    reference = study.plan.reference_hours_per_epoch
    out = {}
    for name, key in keys.items():
        row = dict(stored.get(key) or fresh[key])
        if "error" not in row:
            row["reference_hours_per_epoch"] = reference.get(name)
        out[name] = row
    if cache is not None and write and fresh:
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, {**stored, **{k: v for k, v in fresh.items() if "error" not in v}})
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
