"""The tables launch.grid prints: the plan (lorafull.plan.table's one plan table, with the launcher's
columns: signature, state, action) and the status (where each run stands in its folder and in the
scheduler)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorafull.config import world_size
from lorafull.models.method_table import method_of
from lorafull.plan.table import ASSUMED_NOTE, FOLD_AT, assumed, format_table, method_text, plan_lines
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


def _few(names: list[str], most: int = 10) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def write_full_plan(plan: Plan, est: dict[str, dict], note: Optional[str], slurm, path: Path) -> Optional[Path]:
    """The plan table with every run, to `path`, when the printed one is folded (more than FOLD_AT runs)."""
    if len(plan.views) <= FOLD_AT:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(plan_text(plan, est, note, slurm, fold=False) + "\n", encoding="utf-8")
    return path


def plan_text(plan: Plan, est: dict[str, dict], note: Optional[str], slurm, fold: Optional[bool] = None) -> str:
    """The plan table (folded by shape past FOLD_AT runs; fold=False: every run), then the study's
    notes: GPU-hours, what does not fit, the waves and rounds its size takes under the cluster's limits."""
    names = [v.name for v in plan.views]
    lines = plan_lines(names, est, PLAN_COLUMNS, given=_launch_cells(plan, slurm), cpu=plan.cpu, fold=fold)
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
        lines.append(f"WARNING: {len(misfits)} run(s) do not fit in GPU memory by the estimate: {_few(misfits)}")
    errors = {n: e["error"] for n, e in est.items() if "error" in e}
    for name, err in list(errors.items())[:5]:
        lines.append(f"no estimate for {name}: {err}")
    if note:
        lines.append(f"({note})")
    for name, why in list(plan.blocked.items())[:10]:
        lines.append(f"blocked: {name}: {why}")
    if len(plan.blocked) > 10:
        lines.append(f"blocked: {len(plan.blocked) - 10} more run(s) whose parent has no final model")
    lines += scale_lines(plan, est, slurm)
    return "\n".join(lines)


def scale_lines(plan: Plan, est: dict[str, dict], slurm) -> list[str]:
    """What the study's size costs in time under the cluster's limits: the submission waves a submit
    limit makes, and the trainings that run at once at slurm.array_parallelism per array."""
    todo = plan.to_train + plan.held
    if not todo or plan.limits is None:
        return []
    jobs = 2 * len(todo) + sum(1 for v in plan.views if v.state == "trained") + 1
    limit = plan.limits.max_submit_jobs
    waves = -(-jobs // limit) if limit else 1
    arrays = -(-len(todo) // plan.limits.max_array_size)
    at_once = min(len(todo), arrays * slurm.array_parallelism, limit // 2 if limit else len(todo))
    hours = [est.get(v.name, {}).get("wall_hours") for v in todo]
    known = [h for h in hours if isinstance(h, (int, float))]
    line = (f"scale: {len(todo)} run(s) to train, {jobs} jobs in all, in arrays of at most "
            f"{plan.limits.max_array_size} tasks; " + (f"{waves} submission wave(s) under the submit limit of "
                                                       f"{limit} jobs (each next launch.grid, or --follow, sends one); "
                                                       if limit else "one submission (no submit limit known); ")
            + f"at array_parallelism {slurm.array_parallelism}: at most {at_once} trainings at once")
    if known:
        line += (f", so the training takes at least {_wall(sum(known) / max(1, at_once))} of wall time "
                 f"({_wall(sum(known))} of training in all)")
    return [line]


def _wall(hours: float) -> str:
    if hours >= 1:
        return f"{hours:.3g} h"
    return f"{hours * 60:.3g} min" if hours * 60 >= 1 else f"{hours * 3600:.2g} s"


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


def plan_notes(plan: Plan, views: list[RunView], retry: bool, quiet: bool) -> list[str]:
    """Failed runs left alone, the cluster's limits, and what this call holds back for a later one."""
    out = []
    failed = [v.name for v in views if v.state == "failed"]
    if failed and not retry:
        out.append(f"{len(failed)} failed run(s) not resubmitted (use --retry): {_few(failed)}")
    if plan.limits and not quiet:
        out.append(f"cluster limits: {plan.limits.describe()}")
    if plan.held:
        held_jobs = sum(1 if v.trained else 2 for v in plan.held)
        out.append(f"held back: {len(plan.held)} run(s) ({held_jobs} jobs) over the submit limit of "
                   f"{plan.limits.max_submit_jobs} jobs ({plan.queued_jobs} of yours were queued or running): a "
                   "later launch.grid submits them as room frees up (--follow waits and does it), the report with "
                   "the last of them")
    elif plan.report_held:
        out.append(f"held back: the report (no room under the submit limit of {plan.limits.max_submit_jobs} jobs): "
                   "a later launch.grid submits it")
    return out
