"""pyplot on the Agg backend (no display on a cluster node), writing a figure to PNG, and what makes a
figure read at a glance: short run labels, one colour per method with its legend, legends outside the
axes, direct labels that step aside or are left out rather than overlap. Shared by the report and the
analyses, so neither imports the other for it."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 -- after choosing the backend

_SEED_SUFFIX = re.compile(r"-seed\d+(-[0-9a-f]{8})?$")
_PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
            "tab:olive", "tab:cyan", "tab:gray")
# offsets (points) and alignments tried in turn for a direct label: right-above, left-above, right-below, left-below
_PLACES = (((4, 3), "left", "bottom"), ((-4, 3), "right", "bottom"), ((4, -3), "left", "top"),
           ((-4, -3), "right", "top"))


def short_label(run_name: str) -> str:
    """A run's name without its seed and signature suffix (full-num_samples600-seed1-ceda8b0c ->
    full-num_samples600): the seeds of one setting share a label (and a colour)."""
    return _SEED_SUFFIX.sub("", str(run_name))


def colors_for(labels: Iterable[str]) -> dict[str, str]:
    """One colour per distinct label in first-seen order (full fine-tuning first, blue, when present); up to
    ten distinct colours, then tab20's."""
    distinct = list(dict.fromkeys(str(x) for x in labels))
    distinct.sort(key=lambda x: not x.startswith("full"))
    palette = _PALETTE if len(distinct) <= len(_PALETTE) else [plt.get_cmap("tab20")(i) for i in range(20)]
    return {label: palette[i % len(palette)] for i, label in enumerate(distinct)}


def legend_outside(ax, title: Optional[str] = None, fontsize: int = 7, **kw):
    """The axes' legend to the right of them, where it covers no data, the figure made wider by the
    legend's width (so long entries never squeeze the axes); none when nothing is labelled."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    fig = ax.figure
    legend = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                       fontsize=fontsize, title=title, title_fontsize=fontsize, frameon=False,
                       ncol=legend_columns(fig.get_figheight(), len(handles), fontsize), **kw)
    width_in = legend.get_window_extent(fig.canvas.get_renderer()).width / fig.dpi
    fig.set_size_inches(fig.get_figwidth() + width_in * 0.8, fig.get_figheight())
    return legend


def legend_columns(height_in: float, entries: int, fontsize: int = 7) -> int:
    """Columns a legend beside axes of this height needs so that it is not taller than the figure."""
    per_column = max(4, int(height_in * 72 / (fontsize * 1.9)) - 2)
    return -(-entries // per_column)


def drawn_texts(fig) -> list:
    """Every text the figure draws: titles, axis labels, the tick labels inside the view, legends,
    annotations and figure texts (matplotlib keeps Text objects it does not draw, e.g. ticks outside the
    view, so findobj alone would see ghosts)."""
    out = list(fig.texts) + ([fig._suptitle] if getattr(fig, "_suptitle", None) else [])
    for ax in fig.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if low - 1e-9 * abs(high - low) <= tick.get_loc() <= high + 1e-9 * abs(high - low):
                    out += [tick.label1, tick.label2]
        legend = ax.get_legend()
        if legend is not None:
            out += [legend.get_title(), *legend.get_texts()]
    for legend in fig.legends:
        out += [legend.get_title(), *legend.get_texts()]
    return [t for t in out if t is not None and t.get_visible() and t.get_text().strip()]


def _inside(box, area) -> bool:
    return box.x0 >= area.x0 and box.x1 <= area.x1 and box.y0 >= area.y0 and box.y1 <= area.y1


def label_points(ax, points: list[tuple[float, float, str]], fontsize: int = 7) -> int:
    """A direct label beside each (x, y, text) point: the first place (right-above, left-above, ...) where it
    stays inside the axes and overlaps no label placed before it nor any other text of the figure;
    left out where there is none. Lays the figure out first (positions are final only then).
    Returns how many labels were placed."""
    fig = ax.figure
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    taken = [t.get_window_extent(renderer) for t in drawn_texts(fig)]
    area, placed = ax.get_window_extent(renderer), 0
    for x, y, text in points:
        for offset, ha, va in _PLACES:
            note = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
                               ha=ha, va=va, annotation_clip=True)
            note.set_in_layout(False)  # tight_layout must not move the axes for it
            box = note.get_window_extent(renderer)
            if _inside(box, area) and not any(box.overlaps(t) for t in taken):
                taken.append(box)
                placed += 1
                break
            note.remove()
    return placed


def save_figure(fig, path: Path, dpi: int = 120) -> Path:
    """Lay out, write the PNG (making its folder) and free the figure: every plot of the package ends here."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
