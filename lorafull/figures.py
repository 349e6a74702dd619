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


# settings as a short label names them (others by their key's last part)
_KEY_NAMES = {"model.name_or_path": "from", "data.train": "data", "data.num_samples": "n"}
# the settings that say most about what a curve is, tried first when several would tell curves apart
_KEY_ORDER = ("model.name_or_path", "data.train", "data.num_samples", "train.lr")


def short_value(value) -> str:
    """A setting's value as a label shows it: numbers in their shortest form, a run:<name> as the run's
    short label, a file as its stem (data/instructions.jsonl -> instructions)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"{value:g}"
    text = str(value)
    if text.startswith("run:"):
        return short_label(text[len("run:"):])
    try:
        return f"{float(text):g}"
    except ValueError:
        return Path(text).stem if "/" in text or Path(text).suffix in (".jsonl", ".json", ".txt") else text


def distinguishing_labels(bases: list[str], settings: list[dict]) -> list[str]:
    """Per item, its base label (e.g. the method) and, only where items share a base label, the fewest
    settings that tell them apart ("full, lr=0.003"). Keys are added one at a time: first those every
    item of the clash has a value for, then the one splitting most items, then in _KEY_ORDER; an item
    without a value for a chosen key leaves it out."""
    chosen: dict[str, list[str]] = {}
    for base in dict.fromkeys(bases):
        keys: list[str] = []
        while True:
            clash = _clashing([i for i, b in enumerate(bases) if b == base], settings, keys)
            split = lambda k: len({(*(str(settings[j].get(c)) for c in keys), str(settings[j].get(k))) for j in clash})
            now = split(None) if clash else 0
            candidates = [k for k in dict.fromkeys(k for i in clash for k in settings[i]) if k not in keys and split(k) > now]
            if not candidates:
                break
            keys.append(min(candidates, key=lambda k: (any(_unset(settings[j].get(k)) for j in clash), -split(k),
                                                        _KEY_ORDER.index(k) if k in _KEY_ORDER else len(_KEY_ORDER), k)))
        chosen[base] = keys
    out = []
    for base, setting in zip(bases, settings):
        parts = [f"{_KEY_NAMES.get(k, k.split('.')[-1])}={short_value(setting[k])}"
                 for k in chosen[base] if not _unset(setting.get(k))]
        out.append(", ".join([base, *parts]))
    return out


def _unset(value) -> bool:
    return value is None or value == "None"  # (settings compared as text hold None as "None")


def _clashing(members: list[int], settings: list[dict], keys: list[str]) -> list[int]:
    """The members whose values of `keys` some other member shares."""
    seen: dict[tuple, list[int]] = {}
    for i in members:
        seen.setdefault(tuple(str(settings[i].get(k)) for k in keys), []).append(i)
    return [i for same in seen.values() if len(same) > 1 for i in same]


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
