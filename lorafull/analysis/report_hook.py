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
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, load_run_config, load_study_settings
from lorafull.runs import RunPaths, write_json_atomic
from lorafull.analysis.forgetting import paired_strata, plot_learning_forgetting
from lorafull.analysis.instability import run_instability
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


def extend_report(study_dir: str | os.PathLike, rows: list[dict], report_dir: str | os.PathLike) -> list[dict]:
    """Add unstable, instability_events, learning, forgetting, rank90 to each row (in place) and write
    learning_forgetting.png, spectrum_full_vs_lora.png (+ spectrum_<run>.png), sensitivity_lr.png and
    sensitivity_data.png where the study has what they need. Returns rows."""
    study_dir, report_dir = Path(study_dir), Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    spike_factor = load_study_settings(study_dir).analysis.spike_factor
    lf_points, spectra, sens_entries = [], [], []
    for row in rows:
        run_dir = study_dir / "runs" / str(row["run"])
        analysis = RunPaths.of(run_dir).analysis
        stab = _instability(run_dir, spike_factor)
        row["unstable"] = None if stab is None else ("yes" if stab["unstable"] else "no")
        row["instability_events"] = None if stab is None else stab["events"]
        tasks = _read_json(analysis / "tasks.json")
        row["learning"] = _round(tasks.get("learning")) if tasks else None
        row["forgetting"] = _round(tasks.get("forgetting")) if tasks else None
        if tasks:  # paired per-item differences: the report's grouping turns them into intervals
            learn, forget = paired_strata(tasks)
            row["_samples"] = {**(row.get("_samples") or {}), "learning": learn, "forgetting": forget}
        spec = _read_json(analysis / "spectrum.json")
        row["rank90"] = spec["summary"].get("median_rank90") if spec and spec.get("modules") else None
        try:
            cfg = load_run_config(run_dir)
        except ConfigError as e:
            print(f"warning: {e}", file=sys.stderr)
            cfg = None
        method = cfg.method.kind if cfg else str(row.get("method", "?")).split()[0]
        if tasks:
            lf_points.append({"label": row["run"], "method": method, "learning": tasks.get("learning"),
                              "forgetting": tasks.get("forgetting"), "step": None,
                              "learning_interval": tasks.get("learning_interval"),
                              "forgetting_interval": tasks.get("forgetting_interval")})
            for ck in tasks.get("checkpoints") or []:
                lf_points.append({"label": f"{row['run']}@{ck['step']}", "method": method,
                                  "learning": ck.get("learning"), "forgetting": ck.get("forgetting"),
                                  "step": ck["step"]})
        if spec and spec.get("modules"):
            spectra.append(spec)
            if (analysis / "spectrum.png").exists():
                shutil.copyfile(analysis / "spectrum.png", report_dir / f"spectrum_{row['run']}.png")
        if cfg is not None:
            sens_entries.append((cfg, row.get("score")))

    written = []
    png = plot_learning_forgetting(lf_points, report_dir / "learning_forgetting.png")
    if png:
        written.append(png)
    if spectra:
        written.append(plot_spectrum(spectra, report_dir / "spectrum_full_vs_lora.png"))
    sens = sensitivity(sens_entries, report_dir)
    written += sens["pngs"]
    write_json_atomic(report_dir / "analysis.json", {
        "learning_forgetting": lf_points, "points_per_doubling": sens["per_doubling"],
        "figures": [p.name for p in written],
        "spectrum": {s["run"]: s["summary"] for s in spectra}})
    return rows
