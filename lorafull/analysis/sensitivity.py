"""Sensitivity of the score to the learning rate and to the amount of data.

- score vs learning rate (log x), one line per method and rank and whatever else differs (He 2024;
  Biderman et al. 2024 found LoRA's best learning rate an order of magnitude above full fine-tuning's);
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
from lorafull.figures import short_label
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


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


# settings that split a plot's lines besides method and rank; a parent run is named without its seed, so
# the seeds of one setting pool. Epochs are left out: a data-size sweep changes them with the size to keep
# the number of steps (the demo does).
_SPLIT_BY = {"model": lambda c: short_label(c.model.name_or_path), "targets": lambda c: c.method.target_modules,
             "data": lambda c: Path(c.data.train or "").stem}


def _series(entries: list[tuple[RunConfig, float]], x_of, extra: dict) -> dict[str, list[tuple[float, float]]]:
    """Points by method and every other setting (the seeds of one point pooled: its mean score); only the
    series with two x values or more (a sweep), each named by its method and the settings that tell the
    kept series apart -- nothing else."""
    keys = {**_SPLIT_BY, **extra}
    groups: dict = defaultdict(lambda: defaultdict(list))
    for cfg, score in entries:
        x = x_of(cfg)
        if x is not None and score is not None:
            groups[(method_label(cfg),) + tuple(_value(get(cfg)) for get in keys.values())][x].append(float(score))
    kept = {ident: pts for ident, pts in groups.items() if len(pts) >= 2}
    # a setting names a series only where it tells apart two series of one method
    varying = [i for i, _ in enumerate(keys, 1)
               if any(len({ident[i] for ident in kept if ident[0] == method}) > 1 for method in {k[0] for k in kept})]
    names = list(keys)
    return {", ".join([ident[0]] + [f"{names[i - 1]}={ident[i]}" for i in varying]):
            sorted((x, float(np.mean(v))) for x, v in pts.items()) for ident, pts in kept.items()}


def fit_per_doubling(samples: list[float], scores: list[float]) -> Optional[float]:
    """Least-squares slope of score against log2(samples): the change per doubling of data."""
    pts = [(math.log2(n), s) for n, s in zip(samples, scores) if n and n > 0 and s is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    slope, _ = np.polyfit([x for x, _ in pts], [y for _, y in pts], 1)
    return float(slope)


def _plot(series: dict[str, list[tuple[float, float]]], xlabel: str, base: float, out_png: Path,
          labels: Optional[dict[str, str]] = None, tick=_value) -> Path:
    from lorafull.figures import colors_for, legend_outside, plt, save_figure

    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    colors = colors_for(series)
    for name, pts in sorted(series.items()):
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o" if name.startswith("full") else "^",
                color=colors[name], label=(labels or {}).get(name, name))
    xs = sorted({x for pts in series.values() for x, _ in pts})
    ax.set_xscale("log", base=base)
    ax.minorticks_off()
    ax.set_xticks(xs, [tick(x) for x in xs], fontsize=8, rotation=90 if len(xs) > 6 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("score (macro average)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return save_figure(fig, out_png, dpi=110)


def sensitivity(entries: list[tuple[RunConfig, Optional[float]]], report_dir: str | os.PathLike) -> dict:
    """entries: (run config, score) per run. Writes sensitivity_lr.png / sensitivity_data.png when some
    series of runs sweeps the learning rate / the data size (two values or more, all else equal);
    returns the fitted slopes per series of the data sweep."""
    report_dir = Path(report_dir)
    out: dict = {"pngs": [], "per_doubling": {}}
    scored = [(c, s) for c, s in entries if s is not None]
    series = _series(scored, lambda c: c.train.lr, {"n": lambda c: samples_of(c)})
    if series:
        out["pngs"].append(_plot(series, "learning rate", 10, report_dir / "sensitivity_lr.png"))
    series = _series(scored, samples_of, {"lr": lambda c: c.train.lr})
    if series:
        labels = {}
        for name, pts in series.items():
            slope = fit_per_doubling([x for x, _ in pts], [y for _, y in pts])
            out["per_doubling"][name] = slope
            labels[name] = name + (f" ({slope:+.3f} per doubling)" if slope is not None else "")
        out["pngs"].append(_plot(series, "training samples", 2, report_dir / "sensitivity_data.png", labels,
                                 tick=lambda x: f"{int(x):,}"))
    return out
