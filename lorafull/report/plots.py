"""Figures of a study report (PNG, matplotlib's Agg backend: no display needed on a cluster node).

score_per_run.png     average score per row, one bar each (rows top to bottom in the table's order),
                      coloured by method, its 95 % interval and its value beside it
score_vs_cost.png     average score against training device-hours (quality for the money), by method,
                      each point labelled where its label has room
category_scores.png   per-category mean scores as a grid (rows x categories), the value and the
                      half-width of its interval in each cell, colour = score
loss_curves.png       training loss over steps, one colour per row (its seeds share it), dashed for
                      adapter methods
Colour always has a legend (or a colour bar), legends sit outside the axes, labels are short (the
seeds of one setting share theirs: lorafull.figures.short_label). A figure whose data no run has yet is
not written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from lorafull.figures import colors_for, label_points, legend_outside, plt, save_figure, short_label


def _errors(values: list) -> Optional[list[list[float]]]:
    """matplotlib's asymmetric error bars [[below...], [above...]] from Estimates (0 where a value has none)."""
    below = [float(v) - v.low if getattr(v, "low", None) is not None else 0.0 for v in values]
    above = [v.high - float(v) if getattr(v, "high", None) is not None else 0.0 for v in values]
    return [below, above] if any(below) or any(above) else None


def _method(row: dict) -> str:
    return str(row.get("method") or "?")


def _legend_for_methods(ax, colors: dict[str, str]) -> None:
    for method, color in colors.items():
        ax.bar([0], [0], width=0, color=color, label=method)  # an empty bar: the legend's patch only
    legend_outside(ax, title="method")


def plot_scores(rows: list[dict], out: Path) -> Optional[Path]:
    scored = [r for r in rows if r.get("score") is not None]
    if not scored:
        return None
    colors = colors_for(_method(r) for r in scored)
    fig, ax = plt.subplots(figsize=(7.0, 0.32 * len(scored) + 1.3))
    y = list(range(len(scored)))
    values = [float(r["score"]) for r in scored]
    # an edge in the bar's colour: a score of 0 still shows as a line at the axis
    ax.barh(y, values, color=[colors[_method(r)] for r in scored], edgecolor=[colors[_method(r)] for r in scored],
            linewidth=1.2, xerr=_errors([r["score"] for r in scored]), capsize=2, ecolor="black",
            error_kw={"elinewidth": 0.8}, height=0.7)
    for i, r in enumerate(scored):
        right = getattr(r["score"], "high", None)
        ax.text(max(values[i], right if right is not None else values[i]) + 0.015, i, f"{values[i]:.2f}",
                va="center", fontsize=7)
    ax.set_yticks(y, [short_label(r["run"]) for r in scored], fontsize=8)
    ax.invert_yaxis()  # the table's first row on top
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("average score (macro) with its 95 % interval")
    ax.set_title("score per run")
    _legend_for_methods(ax, colors)
    return save_figure(fig, out)


def _hours(row: dict) -> Optional[float]:
    return row.get("gpu_hours") if row.get("gpu_hours") is not None else row.get("cpu_hours")


def plot_score_vs_cost(rows: list[dict], out: Path) -> Optional[Path]:
    points = [r for r in rows if r.get("score") is not None and _hours(r) is not None]
    if not points:
        return None
    colors = colors_for(_method(r) for r in points)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for method, color in colors.items():
        mine = [r for r in points if _method(r) == method]
        ax.errorbar([_hours(r) for r in mine], [float(r["score"]) for r in mine], yerr=_errors([r["score"] for r in mine]),
                    fmt="o", color=color, markersize=5, capsize=3, label=method)
    unit = "GPU" if any(r.get("gpu_hours") is not None for r in points) else "CPU"
    ax.set_xlabel(f"training {unit}-hours (wall time x processes)")
    ax.set_ylabel("average score (macro)")
    ax.set_title("quality vs training cost")
    ax.margins(x=0.15, y=0.12)
    legend_outside(ax, title="method")
    label_points(ax, [(_hours(r), float(r["score"]), short_label(r["run"])) for r in points])
    return save_figure(fig, out)


def plot_categories(rows: list[dict], categories: list[str], out: Path) -> Optional[Path]:
    runs = [r for r in rows if any(r.get(c) is not None for c in categories)]
    if not runs or not categories:
        return None
    grid = [[float(r[c]) if r.get(c) is not None else float("nan") for c in categories] for r in runs]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.15 * len(categories) + 2.6), 0.36 * len(runs) + 1.6))
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, r in enumerate(runs):
        for j, c in enumerate(categories):
            value = r.get(c)
            if value is None:
                continue
            half = getattr(value, "half_width", None)
            text = f"{float(value):.2f}" + (f" ±{half:.2f}" if half else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=6.5,
                    color="white" if float(value) > 0.6 else "black")
    ax.set_xticks(range(len(categories)), categories, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(runs)), [short_label(r["run"]) for r in runs], fontsize=8)
    fig.colorbar(image, ax=ax, label="mean score", fraction=0.04, pad=0.02)
    ax.set_title("score per category (mean ± half-width of its 95 % interval)", fontsize=9, pad=18)
    return save_figure(fig, out)


def plot_losses(curves: dict[str, list[tuple[int, float]]], labels: dict[str, Optional[str]], out: Path,
                methods: Optional[dict[str, Optional[str]]] = None) -> Optional[Path]:
    """curves: run -> (step, loss); labels: run -> the row it belongs to (its seeds share a colour and one
    legend entry); methods: run -> method, adapter methods dashed."""
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    names = {run: short_label(labels.get(run) or run) for run in curves}
    colors = colors_for(names.values())
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    seen = set()
    for run, points in curves.items():
        full = str((methods or {}).get(run) or "full").startswith("full")
        ax.plot([s for s, _ in points], [v for _, v in points], "-" if full else "--", color=colors[names[run]],
                linewidth=1.1, label=None if names[run] in seen else names[run])
        seen.add(names[run])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss (solid: full fine-tuning, dashed: adapters)")
    legend_outside(ax)
    return save_figure(fig, out)
