"""Planned versus measured: the report's columns that hold each run's training against its plan.

Library module (no command): lorafull.report.rows adds these columns.

The plan is STUDY_DIR/launch/plan.json, written by launch.grid whenever it plans (lorafull.plan's
estimate of every run: hours per epoch, peak memory per GPU, and whether the step time was measured
by a calibration probe or modelled from the hardware). Columns, empty where either side is missing:
    planned_h_per_epoch   hours_per_epoch (measured, from metrics.jsonl) / planned = h_per_epoch_ratio
                          (only from a plan with a start-up term: lorafull.plan.startup)
    planned_mem_gb        peak_mem_gb (measured) / planned                         = mem_ratio
    plan_basis            measured | modelled
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

PLANNED_COLUMNS = ("planned_h_per_epoch", "h_per_epoch_ratio", "planned_mem_gb", "mem_ratio", "plan_basis")


def read_plan(study_dir: Path) -> dict:
    path = Path(study_dir) / "launch" / "plan.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        print(f"warning: {path}: not JSON ({e.msg} at line {e.lineno}); no planned columns", file=sys.stderr)
        return {}


def _ratio(measured, planned):
    if isinstance(measured, (int, float)) and isinstance(planned, (int, float)) and planned > 0:
        return measured / planned
    return None


def planned_columns(row: dict, plan: dict) -> dict:
    """The planned-versus-measured cells of one report row (row holds the measured hours_per_epoch and
    peak_mem_gb)."""
    p = plan.get(row["run"], {})
    planned_h, planned_mem = p.get("hours_per_epoch"), p.get("mem_per_gpu_gb")
    # a plan written before it had a start-up term planned steps only: against a short run's wall time
    # (model load, tokenization, first step included) its ratio says nothing, so none is shown
    timed = p.get("startup_s") is not None
    return {"planned_h_per_epoch": planned_h,
            "h_per_epoch_ratio": _ratio(row.get("hours_per_epoch"), planned_h) if timed else None,
            "planned_mem_gb": planned_mem, "mem_ratio": _ratio(row.get("peak_mem_gb"), planned_mem),
            "plan_basis": p.get("basis")}
