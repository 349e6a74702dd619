"""Sensitivity of the score to the learning rate and to the amount of data.

- score vs learning rate (log x), one line per method and rank (He 2024; Biderman et al. 2024 found
  LoRA's best learning rate an order of magnitude above full fine-tuning's);
- score vs number of training samples (log2 x), with the slope of score over log2(samples) fitted per
  method: "points per doubling of data", as BELLE reports how LoRA and full FT scale with data.
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

from lorafull.config import RunConfig
from lorafull.models.method_table import method_of


def method_label(cfg: RunConfig) -> str:
    return method_of(cfg).label(cfg.method)


def _count_lines(path: Optional[str]) -> Optional[int]:
    """Samples in a training file when num_samples is null (= all of it)."""
    if not path or not Path(path).is_file():
        return None
    if path.endswith(".json"):
        import json

        try:
            return len(json.loads(Path(path).read_text()))
        except (ValueError, TypeError):
            return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def samples_of(cfg: RunConfig) -> Optional[int]:
    return cfg.data.num_samples if cfg.data.num_samples else _count_lines(cfg.data.train)


def varies(values) -> bool:
    return len({str(v) for v in values if v is not None}) > 1


# settings that split a plot's lines when the study varies them (besides method and rank)
_SPLIT_BY = {"model": lambda c: Path(c.model.name_or_path).name, "targets": lambda c: c.method.target_modules,
             "data": lambda c: Path(c.data.train or "").stem, "epochs": lambda c: c.train.epochs}


def _series_name(cfg: RunConfig, all_cfgs: list[RunConfig], extra: dict) -> str:
    """'lora r=8' plus every other setting that differs between the runs of the plot."""
    parts = [method_label(cfg)]
    for key, get in {**_SPLIT_BY, **extra}.items():
        if varies(get(c) for c in all_cfgs):
            value = get(cfg)
            parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
    return ", ".join(parts)


def fit_per_doubling(samples: list[float], scores: list[float]) -> Optional[float]:
    """Least-squares slope of score against log2(samples): the change per doubling of data."""
    pts = [(math.log2(n), s) for n, s in zip(samples, scores) if n and n > 0 and s is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    slope, _ = np.polyfit([x for x, _ in pts], [y for _, y in pts], 1)
    return float(slope)


def _plot(series: dict[str, list[tuple[float, float]]], xlabel: str, xscale: dict, out_png: Path,
          labels: Optional[dict[str, str]] = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")

    from lorafull.figures import plt, save_figure

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    for name, pts in sorted(series.items()):
        pts = sorted(pts)
        marker = "o" if name.startswith("full") else "^"
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, label=(labels or {}).get(name, name))
    ax.set_xscale(**xscale)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (macro average)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_png, dpi=110)


def sensitivity(entries: list[tuple[RunConfig, Optional[float]]], report_dir: str | os.PathLike) -> dict:
    """entries: (run config, score) per run. Writes sensitivity_lr.png / sensitivity_data.png when the
    study varies the learning rate / the data size; returns the fitted slopes per method."""
    report_dir = Path(report_dir)
    out: dict = {"pngs": [], "per_doubling": {}}
    scored = [(c, s) for c, s in entries if s is not None]
    if varies(c.train.lr for c, _ in scored):
        series = defaultdict(list)
        cfgs = [c for c, _ in scored]
        for c, s in scored:
            series[_series_name(c, cfgs, {"n": lambda x: x.data.num_samples})].append((c.train.lr, s))
        out["pngs"].append(_plot(series, "learning rate", {"value": "log"}, report_dir / "sensitivity_lr.png"))
    sized = [(c, samples_of(c), s) for c, s in scored]
    if varies(n for _, n, _ in sized):
        series = defaultdict(list)
        cfgs = [c for c, n, _ in sized if n]
        for c, n, s in sized:
            if n:
                series[_series_name(c, cfgs, {"lr": lambda x: x.train.lr})].append((n, s))
        labels = {}
        for name, pts in series.items():
            slope = fit_per_doubling([x for x, _ in pts], [y for _, y in pts])
            out["per_doubling"][name] = slope
            labels[name] = name + (f" ({slope:+.3f} per doubling)" if slope is not None else "")
        out["pngs"].append(_plot(series, "training samples", {"value": "log", "base": 2},
                                 report_dir / "sensitivity_data.png", labels))
    return out
