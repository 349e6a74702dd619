"""The tables launch.grid prints: the plan (what each run is, what it costs, what happens to it) and
the status (where each run stands in its folder and in the scheduler)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study, to_dict
from lorafull.runs import RunPaths, read_jsonl, write_json_atomic

from .planning import Plan
from .state import RunView


PLANNED_KEYS = ("hours_per_epoch", "wall_hours", "mem_per_gpu_gb", "basis", "step_s")
ESTIMATE_KEYS = ("trainable_params", "total_params", "added_params", "mem_per_gpu_gb", "fits", "gpu_hours", "tokens",
                 "hours_per_epoch", "wall_hours", "step_s", "step_parts_s", "basis", "shape_key", "tokens_source", "reference_hours_per_epoch", "notes")


def human_count(n: Optional[float]) -> str:
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))


def _hours(h: Optional[float]) -> str:
    """Hours, or seconds when under a minute (the demo's runs)."""
    if not isinstance(h, (int, float)):
        return "?"
    return f"{h:.3g}" if h >= 1 / 60 else f"{h * 3600:.2g}s"


def _short_model(name_or_path: str) -> str:
    if ":" in name_or_path.split("/")[0]:  # run:..., scratch:...
        return name_or_path
    return Path(name_or_path).name or name_or_path


def _method(run: RunConfig) -> str:
    m = run.method
    if m.kind in ("lora", "dora", "loha", "qlora"):
        return f"{m.kind} r{m.r}"
    extra = {"adapter": f" {m.adapter_size}", "prompt": f" {m.num_virtual_tokens}", "prefix": f" {m.num_virtual_tokens}"}
    return m.kind + extra.get(m.kind, "")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


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


def _assumed(e: dict) -> bool:
    return str(e.get("tokens_source") or "").startswith("assumed")


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


def plan_rows(plan: Plan, est: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "signature", "method", "base", "data", "num_samples", "added", "state", "mem/GPU", "fits",
              "GPU-h", "h/epoch", "basis", "action"]
    rows = []
    submitting = {v.name for v in plan.to_eval}
    trains = {v.name for v in plan.to_train}
    for v in plan.views:
        e = est.get(v.name, {})
        mem = e.get("mem_per_gpu_gb")
        fits = e.get("fits")
        gpu_h = e.get("gpu_hours")
        if plan.cpu:  # no GPU memory to fit and no GPU-hours: the columns say where the run goes
            mem, fits, gpu_h = "CPU", "CPU", "CPU"
        if v.name in trains:
            action = "train+eval"
        elif v.name in submitting:
            action = "eval"
        elif v.name in plan.blocked:
            action = "blocked"
        else:
            action = "-"
        rows.append([v.name, v.signature, _method(v.run), _short_model(v.run.model.name_or_path),
                     Path(v.run.data.train).name if v.run.data.train else "-",
                     str(v.run.data.num_samples) if v.run.data.num_samples is not None else "all",
                     human_count(e.get("added_params")), v.state,
                     f"{mem:.1f} GB" if isinstance(mem, (int, float)) else "?",
                     (fits if fits == "CPU" else ("yes" if fits else "NO")) if fits is not None else "?",
                     f"{gpu_h:.3g}" if isinstance(gpu_h, (int, float)) else "?", _hours(e.get("hours_per_epoch")),
                     (e.get("basis") or "?") + ("*" if _assumed(e) else ""), action])
    return header, rows


def _cell(value, fmt: str = "{}") -> str:
    if isinstance(value, str):
        return value
    return "?" if value is None else fmt.format(value)


def plan_text(plan: Plan, est: dict[str, dict], note: Optional[str]) -> str:
    from lorafull.plan.table import breakdown

    header, rows = plan_rows(plan, est)
    if any(e.get("reference_hours_per_epoch") is not None for e in est.values()):
        header.insert(-2, "ref h/epoch")  # plan.reference_hours_per_epoch: e.g. the paper's table
        for row, v in zip(rows, plan.views):
            row.insert(-2, _hours(est.get(v.name, {}).get("reference_hours_per_epoch")))
    lines = [format_table(header, rows)]
    if plan.cpu:
        lines.append("CPU partition (slurm.gres: null or gpus_per_node: 0): no GPU is requested; "
                     "one training process per Slurm task")
        est = {n: {k: v for k, v in e.items() if k not in ("gpu_hours", "fits")} for n, e in est.items()}
    for name, e in est.items():  # why each run costs what it costs, and what the plan had to assume
        if e.get("step_parts_s"):
            lines.append(f"  {name}: {breakdown(e)}")
        lines += [f"  {name}: {n}" for n in e.get("notes") or []]
    if any(_assumed(e) for e in est.values()):
        lines.append("* tokens per sample assumed (max_length / 2): the data file is not readable here; set "
                     "plan.avg_tokens_per_sample (a number, or per run name or data file)")
    gpu_h = [e.get("gpu_hours") for n, e in est.items() if isinstance(e.get("gpu_hours"), (int, float))]
    to_train = {v.name for v in plan.to_train}
    todo_h = sum(est.get(n, {}).get("gpu_hours") or 0 for n in to_train
                 if isinstance(est.get(n, {}).get("gpu_hours"), (int, float)))
    if gpu_h:
        lines.append(f"GPU-hours: {sum(gpu_h):.4g} for the study, {todo_h:.4g} for the runs trained now")
    misfits = [n for n, e in est.items() if e.get("fits") is False]
    if misfits:
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
