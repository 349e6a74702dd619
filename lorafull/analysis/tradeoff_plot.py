"""tradeoff.png: forgetting (x) against learning (y), one colour per curve (method and rank), a point per
run and duration (hollow: intermediate checkpoints) with its 95 % intervals as bars, the curve through its
points in order of learning, and each curve's Pareto front (most learning for the least forgetting) dashed.

Library module (no command): lorafull.analysis.tradeoff.write_tradeoff draws it from tradeoff.json's body.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

_MARKERS = ("o", "^", "s", "D", "v", "P", "X", "*")


def duration_label(duration: Optional[dict]) -> str:
    """'2 ep', '400 steps', '1.5M tok' -- short enough to sit beside a point."""
    if not duration:
        return ""
    value, unit = duration["value"], duration["unit"]
    if unit == "tokens":
        return f"{value / 1e9:g}B tok" if value >= 1e9 else f"{value / 1e6:g}M tok" if value >= 1e6 else f"{value:g} tok"
    return f"{value:g} ep" if unit == "epochs" else f"{value:g} steps"


def _bars(ax, points: list[dict], color: str) -> None:
    for p in points:
        li, fi = p.get("learning_interval") or [None], p.get("forgetting_interval") or [None]
        if None in li + fi:
            continue
        ax.errorbar(p["forgetting"], p["learning"], xerr=[[p["forgetting"] - fi[0]], [fi[1] - p["forgetting"]]],
                    yerr=[[p["learning"] - li[0]], [li[1] - p["learning"]]], fmt="none", ecolor=color,
                    elinewidth=0.8, capsize=2, alpha=0.7)


def _curve(ax, curve: dict, color: str, marker: str, index: int) -> None:
    """A curve's line, points, interval bars, duration labels (each curve's a little lower than the one
    before, so two curves' labels at one place do not overlap) and its Pareto front."""
    pts = curve["points"]
    ax.plot([p["forgetting"] for p in pts], [p["learning"] for p in pts], "-", color=color, lw=1, alpha=0.5)
    finals = [p for p in pts if p.get("step") is None]
    ckpts = [p for p in pts if p.get("step") is not None]
    ax.scatter([p["forgetting"] for p in finals], [p["learning"] for p in finals], marker=marker, s=40,
               color=color, label=curve["name"], zorder=3)
    if ckpts:
        ax.scatter([p["forgetting"] for p in ckpts], [p["learning"] for p in ckpts], marker=marker, s=18,
                   facecolors="none", edgecolors=color, zorder=3)
    _bars(ax, finals, color)
    if len(finals) > 1:  # one label per place: points that coincide share it ("2, 6 steps")
        places: dict[tuple, list[dict]] = {}
        for p in finals:
            places.setdefault((round(p["forgetting"], 3), round(p["learning"], 3)), []).append(p)
        for (x, y), same in places.items():
            labels = [duration_label(p.get("duration")) for p in same]
            units = {lab.split(" ", 1)[-1] for lab in labels}
            text = (", ".join(lab.split(" ")[0] for lab in labels) + " " + units.pop() if len(units) == 1
                    else ", ".join(labels))
            ax.annotate(text, (x, y), fontsize=6, xytext=(4, -9 - 8 * index), textcoords="offset points", color=color)
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: (p["forgetting"], p["learning"]))
    if len(front) > 1:
        ax.plot([p["forgetting"] for p in front], [p["learning"] for p in front], "--", color=color, lw=1.2,
                drawstyle="steps-post")


def plot_tradeoff(body: dict, out_png: Path) -> Optional[Path]:
    """The figure of a tradeoff.json body; None when no curve has a point."""
    curves = [c for c in body["curves"] if c["points"]]
    if not curves:
        return None
    from lorafull.figures import legend_outside, plt, save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    cmap = plt.get_cmap("tab10")
    for i, curve in enumerate(curves):
        _curve(ax, curve, cmap(i % 10), _MARKERS[i % len(_MARKERS)], i)
    ax.axvline(0, color="grey", lw=0.5)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("forgetting (source-task drop from the base; lower is better)")
    ax.set_ylabel("learning (target-task gain over the base)")
    ax.set_title("learning vs forgetting: a point per run and duration, 95 % intervals; dashed: Pareto front",
                 fontsize=8)
    legend_outside(ax)  # beside the axes: never over a point
    ax.grid(alpha=0.3)
    return save_figure(fig, out_png, dpi=110)
