"""Figures of a study report (PNG, matplotlib's Agg backend: no display needed on a cluster node).

Scores carry their 95 % intervals as error bars (lorafull.stats.Estimate).
score_per_run.png     average score per run, coloured by method
score_vs_cost.png     average score against training device-hours (quality for the money)
category_scores.png   per-category scores, one group of bars per category
loss_curves.png       training loss over steps, one line per run
A figure whose data no run has yet is not written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional



from lorafull.figures import plt, save_figure  # pyplot with the Agg backend chosen

_COLORS = {"full": "tab:blue", "lora": "tab:orange"}


def _color(method: Optional[str]) -> str:
    return _COLORS.get(str(method or "").split()[0], "tab:gray")


def _errors(values: list) -> Optional[list[list[float]]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from Estimates (0 where a value has none)."""
    below = [float(v) - v.low if getattr(v, "low", None) is not None else 0.0 for v in values]
    above = [v.high - float(v) if getattr(v, "high", None) is not None else 0.0 for v in values]
    return [below, above] if any(below) or any(above) else None


def plot_scores(rows: list[dict], out: Path) -> Optional[Path]:
    scored = [r for r in rows if r.get("score") is not None]
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(scored) + 2), 3.6))
    ax.bar(range(len(scored)), [r["score"] for r in scored], color=[_color(r.get("method")) for r in scored],
           yerr=_errors([r["score"] for r in scored]), capsize=3, ecolor="black")
    ax.set_xticks(range(len(scored)), [r["run"] for r in scored], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("average score (macro)")
    ax.set_ylim(0, 1)
    ax.set_title("score per run")
    return save_figure(fig, out)


def _hours(row: dict) -> Optional[float]:
    return row.get("gpu_hours") if row.get("gpu_hours") is not None else row.get("cpu_hours")


def plot_score_vs_cost(rows: list[dict], out: Path) -> Optional[Path]:
    points = [r for r in rows if r.get("score") is not None and _hours(r) is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for r in points:
        ax.errorbar(_hours(r), float(r["score"]), yerr=_errors([r["score"]]), fmt="o", color=_color(r.get("method")),
                    markersize=5, capsize=3)
        ax.annotate(r["run"], (_hours(r), r["score"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    unit = "GPU" if any(r.get("gpu_hours") is not None for r in points) else "CPU"
    ax.set_xlabel(f"training {unit}-hours (wall time x processes)")
    ax.set_ylabel("average score (macro)")
    ax.set_title("quality vs training cost")
    return save_figure(fig, out)


def plot_categories(rows: list[dict], categories: list[str], out: Path) -> Optional[Path]:
    runs = [r for r in rows if any(r.get(c) is not None for c in categories)]
    if not runs or not categories:
        return None
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(categories) + 2), 4))
    for i, r in enumerate(runs):
        values = [r.get(c) if r.get(c) is not None else 0.0 for c in categories]
        ax.bar([x + i * width for x in range(len(categories))], values, width=width, label=r["run"],
               yerr=_errors(values), capsize=2, ecolor="black", error_kw={"elinewidth": 0.7})
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(categories))], categories, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean score")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("score per category")
    return save_figure(fig, out)


def plot_losses(curves: dict[str, list[tuple[int, float]]], methods: dict[str, Optional[str]], out: Path) -> Optional[Path]:
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, points in curves.items():
        style = "-" if str(methods.get(name) or "").startswith("full") else "--"
        ax.plot([s for s, _ in points], [l for _, l in points], style, label=name, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax.set_title("training loss (solid: full, dashed: LoRA)")
    return save_figure(fig, out)
