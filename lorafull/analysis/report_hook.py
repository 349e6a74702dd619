"""The analysis columns and figures of a study report.

lorafull.report.build_report(study_dir) builds one row dict per run and calls
extend_report(study_dir, rows, report_dir) before it writes the tables: every key added to a row
becomes a column. Everything here reads files the analyses left in the run folders; nothing is
recomputed except instability events of a metrics.jsonl that recorded none (cheap).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from functools import reduce
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, SelectConfig, load_run_config, load_study_settings
from lorafull.runs import RunPaths, write_json_atomic
from lorafull.analysis.forgetting import paired_strata
from lorafull.analysis.instability import run_instability
from lorafull.analysis.selection import split_samples
from lorafull.analysis.tradeoff import DURATION_KEYS, duration_of
from lorafull.analysis.sensitivity import sensitivity
from lorafull.analysis.spectrum import plot_spectrum


def _read_json(path: Path) -> Optional[dict]:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"warning: {path}: unreadable, left out of the report: {e}", file=sys.stderr)
        return None


def _instability(run_dir: Path, spike_factor: float) -> Optional[dict]:
    saved = _read_json(RunPaths.of(run_dir).analysis / "instability.json")
    if saved is not None and "summary" in saved:
        return saved["summary"]
    if not RunPaths.of(run_dir).metrics.exists():
        return None
    try:
        return run_instability(run_dir, spike_factor)["summary"]
    except ValueError as e:  # a malformed metrics line: named in the message
        print(f"warning: {e}", file=sys.stderr)
        return None


def _round(x, digits: int = 4):
    return None if x is None else round(float(x), digits)


def _by_item(strata: Optional[dict]) -> Optional[dict]:
    """Task strata as {item index: value}: the index is the item's id, the same in every run of the study."""
    return {name: dict(enumerate(values)) for name, values in strata.items()} if strata else None


def _checkpoint_samples(tasks: dict) -> list[dict]:
    """Per evaluated checkpoint, its paired learning and forgetting items (the trade-off's extra points)."""
    out = []
    for ck in tasks.get("checkpoints") or []:
        if ck.get("tasks"):
            learn, forget = paired_strata({**tasks, "tasks": ck["tasks"]})
            if learn and forget:
                out.append({"step": ck["step"], "learning": _by_item(learn), "forgetting": _by_item(forget)})
    return out


def _losses(tasks: dict) -> Optional[dict]:
    """The target tasks' reference losses per item (what select.metric: val_loss ranks on)."""
    per_task = {t: (tasks.get("tasks") or {}).get(t, {}).get("item_losses") for t in tasks.get("target_tasks") or []}
    return _by_item(per_task) if per_task and all(v is not None for v in per_task.values()) else None


def _task_columns(row: dict, tasks: Optional[dict], select: SelectConfig) -> None:
    row["learning"] = _round(tasks.get("learning")) if tasks else None
    row["forgetting"] = _round(tasks.get("forgetting")) if tasks else None
    if tasks:  # paired per-item differences: the report's grouping turns them into intervals
        learn, forget = paired_strata(tasks)
        row["_samples"] = {**(row.get("_samples") or {}), "learning": _by_item(learn), "forgetting": _by_item(forget)}
        if select.keys and select.metric == "val_loss":  # a column only where a sweep selects on it
            row["_samples"]["val_loss"] = _losses(tasks)
        row["_checkpoints"] = _checkpoint_samples(tasks)


def hold_out(rows: list[dict], select: SelectConfig) -> None:
    """With a sweep to select on (select.keys) and select.holdout > 0: each row's held-out items move from
    `_samples` (what the report shows) to `_holdout` (what the selection ranks on); `_split` says which."""
    if not select.keys or select.holdout <= 0:
        return
    for row in rows:
        if row.get("_samples"):
            row["_samples"], row["_holdout"], row["_split"] = split_samples(row["_samples"], select.holdout, select.seed)
        for ck in row.get("_checkpoints") or []:
            reported, _, _ = split_samples({"learning": ck["learning"]}, select.holdout, select.seed)
            ck["learning"] = reported["learning"]


def extend_report(study_dir: str | os.PathLike, rows: list[dict], report_dir: str | os.PathLike) -> list[dict]:
    """Add unstable, instability_events, learning, forgetting, rank90 to each row (in place), the hidden
    `_duration`, `_checkpoints` and (with a sweep) `_holdout` the trade-off and the selection read, and
    write spectrum_full_vs_lora.png (+ spectrum_<run>.png), sensitivity_lr.png and sensitivity_data.png
    where the study has what they need. Returns rows."""
    study_dir, report_dir = Path(study_dir), Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    settings = load_study_settings(study_dir)
    spectra, sens_entries = [], []
    for row in rows:
        run_dir = study_dir / "runs" / str(row["run"])
        analysis = RunPaths.of(run_dir).analysis
        stab = _instability(run_dir, settings.analysis.spike_factor)
        row["unstable"] = None if stab is None else ("yes" if stab["unstable"] else "no")
        row["instability_events"] = None if stab is None else stab["events"]
        _task_columns(row, _read_json(analysis / "tasks.json"), settings.select)
        spec = _read_json(analysis / "spectrum.json")
        row["rank90"] = spec["summary"].get("median_rank90") if spec and spec.get("modules") else None
        try:
            cfg = load_run_config(run_dir)
        except ConfigError as e:
            print(f"warning: {e}", file=sys.stderr)
            cfg = None
        if spec and spec.get("modules"):
            spectra.append(spec)
            if (analysis / "spectrum.png").exists():
                shutil.copyfile(analysis / "spectrum.png", report_dir / f"spectrum_{row['run']}.png")
        if cfg is not None:
            row["_duration"] = duration_of({k: reduce(getattr, k.split("."), cfg) for k, _ in DURATION_KEYS})
            sens_entries.append((cfg, row.get("score")))
    hold_out(rows, settings.select)
    written = []
    if spectra:
        written.append(plot_spectrum(spectra, report_dir / "spectrum_full_vs_lora.png"))
    sens = sensitivity(sens_entries, report_dir)
    written += sens["pngs"]
    write_json_atomic(report_dir / "analysis.json", {
        "points_per_doubling": sens["per_doubling"], "figures": [p.name for p in written],
        "spectrum": {s["run"]: s["summary"] for s in spectra}})
    return rows
