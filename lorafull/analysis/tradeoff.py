"""The learning-forgetting trade-off as Biderman et al. 2024 read it (Sec. 4.3, Fig. 4): forgetting against
learning, one curve per method (and rank), a point per selected run per duration (and per checkpoint),
and forgetting compared at matched learning with paired intervals.

Library module (no command): the report calls write_tradeoff -> STUDY_DIR/report/tradeoff.json and
tradeoff.png (README "Reading the report" gives the file's shape).

- A curve: the runs the report uses (the selected ones of a sweep, else all) that share every setting but
  the swept keys and the duration (DURATION_KEYS; a cooldown branch's trunk is left out: it is not cooled
  down), named by the method and rank plus any other setting that differs between curves. Its points are those runs (each pooling its seeds) and, where
  analysis.checkpoints evaluated them, their intermediate checkpoints (the steps every seed has).
- Interpolation: a curve is its points in order of learning (then forgetting); forgetting at a learning
  level L is linear between the two points whose learning brackets L (clamped at the ends; where points
  share a learning value, the curve continues from the one forgetting most).
- Matched learning: two curves are compared when they start from the same model (same
  model.name_or_path: learning and forgetting are measured against the same base), at every learning
  value of their points that both cover (from the larger of their lowest learning to the smaller of their
  highest). The difference of the interpolated forgetting gets a paired interval: every point of both
  curves (its learning and its forgetting) is bootstrapped jointly (lorafull.stats.joint_replicates:
  the same target and source items, and the same seeds where both were trained on the same ones), and
  the interpolation is redone on each resample.
"""
from __future__ import annotations

import os
from itertools import combinations
from pathlib import Path
from typing import Optional

import numpy as np

from lorafull.runs import write_json_atomic
from lorafull.stats import PAIRED_PROCEDURE, PROCEDURE, estimate, joint_replicates, percentile_interval

# the settings that say how long a run trained, first found wins (as in training: max_steps over
# max_tokens over epochs; a cooldown branch is its run with max_tokens = its budget)
DURATION_KEYS = (("train.max_steps", "steps"), ("train.max_tokens", "tokens"), ("train.epochs", "epochs"))
# cooldown branches: a trunk (it lists its branches' budgets) is the uncooled model, no point of a curve;
# a branch names its trunk, which differs with every swept value: neither key makes a curve of its own
TRUNK_KEY, BRANCH_KEY = "train.branch_max_tokens", "train.branch_of"
NOT_A_CURVE = {k for k, _ in DURATION_KEYS} | {"train.save_at_tokens", TRUNK_KEY, BRANCH_KEY}


def is_trunk(setting: dict) -> bool:
    return setting.get(TRUNK_KEY) not in (None, "[]", [])


def duration_of(setting: dict) -> Optional[dict]:
    """{"unit": steps | tokens | epochs, "value"} of a run's flat resolved settings."""
    for key, unit in DURATION_KEYS:
        if setting.get(key) is not None:
            return {"unit": unit, "value": setting[key]}
    return None


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (learning, forgetting) points not dominated when learning is maximised and forgetting
    minimised, sorted by forgetting (the order to draw the front in)."""
    front = []
    for i, (li, fi) in enumerate(points):
        if not any(lj >= li and fj <= fi and (lj > li or fj < fi) for j, (lj, fj) in enumerate(points) if j != i):
            front.append(i)
    return sorted(front, key=lambda i: (points[i][1], points[i][0]))


def interpolate(level: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Per row of (xs, ys), y at x = level on the line through the row's points in order of x (then y),
    clamped at the end points (module docstring)."""
    xs, ys = np.atleast_2d(np.asarray(xs, float)), np.atleast_2d(np.asarray(ys, float))
    order = np.lexsort((ys, xs), axis=1)
    xs, ys = np.take_along_axis(xs, order, 1), np.take_along_axis(ys, order, 1)
    if xs.shape[1] == 1:
        return ys[:, 0]
    j = np.clip((xs <= level).sum(axis=1), 1, xs.shape[1] - 1)
    rows = np.arange(len(xs))
    x0, x1, y0, y1 = xs[rows, j - 1], xs[rows, j], ys[rows, j - 1], ys[rows, j]
    span = x1 - x0
    t = np.clip(np.where(span > 0, (level - x0) / np.where(span > 0, span, 1.0), 0.0), 0.0, 1.0)
    return y0 + t * (y1 - y0)


def _seeded(members: list[dict], column: str, step: Optional[int] = None) -> list:
    """(seed, strata) per member run for a column, at a checkpoint step or at the end."""
    out = []
    for m in members:
        if step is None:
            strata = (m.get("_samples") or {}).get(column)
        else:
            strata = next((c.get(column) for c in m.get("_checkpoints") or [] if c.get("step") == step), None)
        if strata:
            out.append((m.get("_seed"), strata))
    return out


def _point(row: dict, step: Optional[int] = None) -> Optional[dict]:
    members = row.get("_members") or [row]
    learning, forgetting = _seeded(members, "learning", step), _seeded(members, "forgetting", step)
    le, fe = (estimate([s for _, s in learning]) if learning else None,
              estimate([s for _, s in forgetting]) if forgetting else None)
    if le is None or fe is None:
        return None
    duration = {"unit": "steps", "value": step} if step is not None else row.get("_duration")
    return {"run": row["run"], "runs": [m["run"] for m in members], "duration": duration, "step": step,
            "learning": float(le), "learning_interval": [le.low, le.high], "forgetting": float(fe),
            "forgetting_interval": [fe.low, fe.high], "seeds": le.seeds, "_learning": learning, "_forgetting": forgetting}


def _points_of(row: dict) -> list[dict]:
    members = row.get("_members") or [row]
    steps = [{c["step"] for c in m.get("_checkpoints") or []} for m in members]
    shared = sorted(set.intersection(*steps)) if steps else []
    return [p for p in [_point(row)] + [_point(row, s) for s in shared] if p is not None]


def curves_of(rows: list[dict], swept: list[str]) -> list[dict]:
    """The curves of the rows the report uses (module docstring), each with its points and Pareto front."""
    by_key: dict[tuple, dict] = {}
    for row in rows:
        setting = row.get("_setting") or {}
        if is_trunk(setting):
            continue
        key = tuple(sorted((k, str(v)) for k, v in setting.items() if k not in swept and k not in NOT_A_CURVE))
        points = _points_of(row)
        if points:
            curve = by_key.setdefault(key, {"method": row.get("method"), "setting": dict(key), "points": []})
            curve["points"] += points
    curves = list(by_key.values())
    varying = sorted(k for k in {k for c in curves for k in c["setting"]} if not k.startswith("method.")
                     and len({c["setting"].get(k) for c in curves}) > 1)
    for c in curves:
        extra = [f"{k.split('.')[-1]}={Path(str(c['setting'].get(k))).name}" for k in varying]
        c["name"] = ", ".join([str(c["method"] or "?")] + extra)
        c["points"].sort(key=lambda p: (p["learning"], p["forgetting"]))
        front = pareto_front([(p["learning"], p["forgetting"]) for p in c["points"]])
        for i, p in enumerate(c["points"]):
            p["pareto"] = i in front
        c["pareto_front"] = [c["points"][i]["run"] + (f"@{c['points'][i]['step']}" if c["points"][i]["step"] else "")
                             for i in front]
    return sorted(curves, key=lambda c: (c["name"] != "full", c["name"]))


def matched_levels(a: list[dict], b: list[dict]) -> list[float]:
    """The learning values of both curves' points that both curves cover, ascending."""
    lo = max(min(p["learning"] for p in a), min(p["learning"] for p in b))
    hi = min(max(p["learning"] for p in a), max(p["learning"] for p in b))
    return sorted({p["learning"] for p in a + b if lo <= p["learning"] <= hi})


def matched_learning(a: dict, b: dict) -> list[dict]:
    """Rows {"curves", "learning", "forgetting": [a, b], "difference": a - b, "interval", "within_noise"}."""
    levels = matched_levels(a["points"], b["points"])
    sides = [side for p in a["points"] + b["points"] for side in (p["_learning"], p["_forgetting"])]
    joint = joint_replicates(sides) if levels else None
    if joint is None:
        return []
    n = len(a["points"])
    out = []
    for level in levels:
        values = []
        for cols in (slice(0, 2 * n), slice(2 * n, None)):  # a's sides, then b's
            pts, reps = joint.points[cols], joint.replicates[:, cols]
            values.append((float(interpolate(level, pts[0::2], pts[1::2])[0]),
                           interpolate(level, reps[:, 0::2], reps[:, 1::2])))
        low, high = percentile_interval(values[0][1] - values[1][1])
        diff = values[0][0] - values[1][0]
        out.append({"curves": [a["name"], b["name"]], "learning": level,
                    "forgetting": [values[0][0], values[1][0]], "difference": diff, "interval": [low, high],
                    "within_noise": low <= 0.0 <= high, "paired_seeds": joint.paired_seeds})
    return out


def tradeoff(rows: list[dict], swept: list[str], selection: Optional[dict] = None) -> dict:
    """The body of tradeoff.json (README "Reading the report")."""
    curves = curves_of(rows, swept)
    matched = []
    for a, b in combinations(curves, 2):
        if a["setting"].get("model.name_or_path") == b["setting"].get("model.name_or_path"):
            matched += matched_learning(a, b)
    public = [{**c, "points": [{k: v for k, v in p.items() if not k.startswith("_")} for p in c["points"]]}
              for c in curves]
    return {"procedure": f"{PROCEDURE}; {PAIRED_PROCEDURE}", "interpolation": INTERPOLATION,
            "selection": selection, "curves": public, "matched_learning": matched}


def _level_text(row: dict) -> str:
    (a, b), d, (low, high) = row["curves"], row["difference"], row["interval"]
    if row["within_noise"]:
        return (f"at learning {row['learning']:.2f}, `{a}` and `{b}` forget the same within noise "
                f"(difference {d:+.3f}, 95 % CI {low:.3f} to {high:.3f})")
    less, more, by, ci = (a, b, -d, (-high, -low)) if d < 0 else (b, a, d, (low, high))
    return (f"at learning {row['learning']:.2f}, `{less}` forgets {by:.3f} less than `{more}` "
            f"(95 % CI {ci[0]:.3f} to {ci[1]:.3f})")


def matched_items(body: dict) -> list[dict]:
    """The report's statements about forgetting at matched learning, one per pair of curves where they
    coincide within noise at every level, else one per level whose interval excludes 0 (a finding) and
    one for the levels within noise (levels where neither curve forgets at all are left out); each
    {"kind", "curves", ..., "text"}."""
    out = []
    pairs: dict[tuple, list[dict]] = {}
    for row in body["matched_learning"]:
        if row["forgetting"][0] == row["forgetting"][1] == 0.0:  # neither forgets: nothing to compare
            continue
        pairs.setdefault(tuple(row["curves"]), []).append(row)
    for (a, b), rows in pairs.items():
        noise = [r for r in rows if r["within_noise"]]
        for r in rows:
            if not r["within_noise"]:
                out.append({"kind": "matched_learning", "finding": True, **r, "text": _level_text(r)})
        if noise:
            levels = [r["learning"] for r in noise]
            diffs = [r["difference"] for r in noise]
            head = ("the curves coincide within noise at matched learning" if len(noise) == len(rows)
                    else f"within noise at the other {len(noise)} matched learning level(s)")
            out.append({"kind": "matched_learning_within_noise", "finding": False, "curves": [a, b],
                        "levels": levels, "differences": diffs,
                        "text": f"`{a}` vs `{b}`: {head} (learning {min(levels):.2f} to {max(levels):.2f}: "
                                f"forgetting differences {min(diffs):+.3f} to {max(diffs):+.3f}, every 95 % CI "
                                "contains 0)"})
    return out


INTERPOLATION = ("each curve's points in order of learning; forgetting linear between the two points whose "
                 "learning brackets the level; levels: the points' learning values both curves cover; the "
                 "interpolation is redone on every joint bootstrap resample of both curves' items and seeds")


def write_tradeoff(rows: list[dict], swept: list[str], selection: Optional[dict],
                   report_dir: str | os.PathLike) -> dict:
    """tradeoff.json and tradeoff.png in report_dir (the figure only when some curve has a point)."""
    from lorafull.analysis.tradeoff_plot import plot_tradeoff

    body = tradeoff(rows, swept, selection)
    png = plot_tradeoff(body, Path(report_dir) / "tradeoff.png")
    body["figure"] = png.name if png else None
    write_json_atomic(Path(report_dir) / "tradeoff.json", body)
    return body
