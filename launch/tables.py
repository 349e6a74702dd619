"""The tables launch.grid prints: the plan (lorafull.plan.table's one plan table, with the launcher's
columns: signature, state, action) and the status (where each run stands in its folder and in the
scheduler)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorafull.config import world_size
from lorafull.models.method_table import method_of
from lorafull.plan.table import ASSUMED_NOTE, assumed, format_table, method_text, plan_lines
from lorafull.runs import RunPaths, read_jsonl

from .arrays import Plan
from .state import RunView

PLAN_COLUMNS = ["run", "signature", "method", "base", "data", "num_samples", "added", "state", "mem/GPU GB", "fits",
                "GPU-h", "h/epoch", "basis", "action"]


def _short_model(name_or_path: str) -> str:
    if ":" in name_or_path.split("/")[0]:  # run:..., scratch:...
        return name_or_path
    return Path(name_or_path).name or name_or_path


def _action(plan: Plan, name: str, trains: set, submitting: set) -> str:
    if name in trains:
        return "train+eval"
    if name in submitting:
        return "eval"
    return "blocked" if name in plan.blocked else "-"


def _launch_cells(plan: Plan, slurm) -> dict[str, list[str]]:
    """The launcher's own columns of the plan table, one cell per run."""
    trains, submitting = {v.name for v in plan.to_train}, {v.name for v in plan.to_eval}
    views = plan.views
    run = [v.run for v in views]
    return {
        "signature": [v.signature for v in views],
        "method": [method_text(method_of(r).label(r.method, sep=""), r.model.dtype, r.train.zero_stage,
                               world_size(r, slurm)) for r in run],
        "base": [_short_model(r.model.name_or_path) for r in run],
        "data": [Path(r.data.train).name if r.data.train else "-" for r in run],
        "num_samples": [str(r.data.num_samples) if r.data.num_samples is not None else "all" for r in run],
        "state": [v.state for v in views],
        "action": [_action(plan, v.name, trains, submitting) for v in views],
    }


def plan_text(plan: Plan, est: dict[str, dict], note: Optional[str], slurm) -> str:
    names = [v.name for v in plan.views]
    lines = plan_lines(names, est, PLAN_COLUMNS, given=_launch_cells(plan, slurm), cpu=plan.cpu)
    if plan.cpu:
        lines.append("CPU partition (slurm.gres: null or gpus_per_node: 0): no GPU is requested; "
                     "one training process per Slurm task")
    if any(assumed(e) for e in est.values()):
        lines.append(ASSUMED_NOTE)
    gpu_h = [e.get("gpu_hours") for e in est.values() if isinstance(e.get("gpu_hours"), (int, float))]
    todo_h = sum(est.get(v.name, {}).get("gpu_hours") or 0 for v in plan.to_train
                 if isinstance(est.get(v.name, {}).get("gpu_hours"), (int, float)))
    if gpu_h and not plan.cpu:
        lines.append(f"GPU-hours: {sum(gpu_h):.4g} for the study, {todo_h:.4g} for the runs trained now")
    misfits = [n for n, e in est.items() if e.get("fits") is False]
    if misfits and not plan.cpu:
        lines.append(f"WARNING: {len(misfits)} run(s) do not fit in GPU memory by the estimate: {', '.join(misfits)}")
    errors = {n: e["error"] for n, e in est.items() if "error" in e}
    for name, err in list(errors.items())[:5]:
        lines.append(f"no estimate for {name}: {err}")
    if note:
        lines.append(f"({note})")
    for name, why in plan.blocked.items():
        lines.append(f"blocked: {name}: {why}")
    return "\n".join(lines)


def training_eta(view: RunView) -> str:
    """Time left of a running training: steps left (status.json's total_steps) x the mean step time of
    the last logged windows of metrics.jsonl; "-" when not training or nothing is logged yet."""
    if view.state != "running" or view.status.get("stage", "train") != "train":
        return "-"
    total = view.status.get("total_steps")
    try:
        steps = [r for r in read_jsonl(RunPaths.of(view.run_dir).metrics)
                 if r.get("step_time_s") is not None and not r.get("summary")]
    except (OSError, ValueError):
        return "-"
    if not steps or not total:
        return "-"
    recent = steps[-5:]
    left_s = (total - steps[-1]["step"]) * sum(r["step_time_s"] for r in recent) / len(recent)
    done = f"{steps[-1]['step']}/{total}"
    return f"{done}, {left_s / 3600:.1f} h left" if left_s >= 3600 else f"{done}, {left_s / 60:.0f} min left"


def status_text(views: list[RunView]) -> str:
    header = ["run", "signature", "state", "stage", "train job", "eval job", "eta", "detail"]
    rows = []
    for v in views:
        tj = f"{v.train_job} {v.train_info.state}" if v.train_job and v.train_info else (v.train_job or "-")
        ej = f"{v.eval_job} {v.eval_info.state}" if v.eval_job and v.eval_info else (v.eval_job or "-")
        rows.append([v.name, v.signature, v.state, v.status.get("stage", "-"), tj, ej, training_eta(v),
                     v.detail[:160]])
    return format_table(header, rows)
