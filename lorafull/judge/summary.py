"""Scores of one run -> per-category means, the paper's "others" column and the macro average.

The LoRA-vs-full paper (BELLE) reports one column per category, math and code pooled into "others",
and an average over those columns (a macro average: every category weighs the same, whatever its
number of items). An unscored item (score null) is left out of every mean and counted apart. An
item id counts once (its last row), whatever a file holds.
Every mean comes with its 95 % bootstrap interval (lorafull.stats: items resampled within their class).
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from typing import Iterable, Optional

from lorafull.judge.prompts import normalize_class
from lorafull.stats import PROCEDURE, estimate

OTHERS = ("math", "code")  # pooled into one "others" column, as in the paper
# how scores are binned (judge_summary.json's "score_bins", and Cohen's kappa in lorafull.judge.agree):
# fifths of the 0..1 scale, the last one closed -- [0, .2) [.2, .4) [.4, .6) [.6, .8) [.8, 1]
SCORE_BIN_EDGES = (0.2, 0.4, 0.6, 0.8)
SCORE_BIN_LABELS = ("0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1")


def score_bin(score: float) -> int:
    """0..4: the bin of a 0..1 score (an edge belongs to the bin above it; 1.0 to the last)."""
    return bisect.bisect_right(SCORE_BIN_EDGES, float(score))


def _mean(values: list[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None


def _one_per_id(rows: Iterable[dict]) -> list[dict]:
    """The last row of each id (a file written twice by mistake still counts every item once);
    rows without an id are kept as they are."""
    by_id: dict[str, dict] = {}
    loose = []
    for row in rows:
        if "id" in row:
            by_id.pop(str(row["id"]), None)  # re-insert: keeps the order of the last occurrences
            by_id[str(row["id"])] = row
        else:
            loose.append(row)
    return list(by_id.values()) + loose


def column_strata(by_class: dict) -> dict:
    """The paper's columns as item lists: every class but math and code, and those two pooled as "others".
    Classes given as {item id: score} mappings (keyed_by_class) pool into one mapping (ids are unique)."""
    columns = {c: v for c, v in by_class.items() if c not in OTHERS}
    present = [by_class[c] for c in OTHERS if by_class.get(c)]
    if present:
        columns["others"] = ({k: v for d in present for k, v in d.items()} if isinstance(present[0], dict)
                             else [v for lst in present for v in lst])
    return columns


def keyed_by_class(rows: Iterable[dict]) -> dict[str, dict]:
    """{class: {item id: score or None}} over every item (unscored ones as None, so the item set is the
    eval set's): what pairs one run's items with another's (lorafull.stats) and what the selection's
    held-out split is drawn from. Rows without an id are keyed by their position."""
    out: dict[str, dict] = defaultdict(dict)
    for n, row in enumerate(_one_per_id(rows)):
        key = str(row["id"]) if "id" in row else f"#{n}"
        out[normalize_class(row.get("class", ""))][key] = None if row.get("score") is None else float(row["score"])
    return dict(out)


def _interval(strata: dict[str, list[float]]) -> Optional[list]:
    est = estimate([strata])
    return None if est is None else [est.low, est.high]


def summarize(rows: Iterable[dict]) -> dict:
    """{"categories": {class: mean}, "others": mean of math+code items, "average": macro average over
    the paper's columns (others pooled), "intervals": {"average" | column: [low, high]} (95 %),
    "score_bins": {bin label: scored items in it} (SCORE_BIN_EDGES),
    "items_by_class": {class: [item scores]}, "items", "scored", "unscored", "tokens", "cost"}."""
    by_class: dict[str, list[float]] = defaultdict(list)
    classes: set[str] = set()
    items = unscored = tokens = 0
    cost, priced = 0.0, False
    for row in _one_per_id(rows):
        items += 1
        cls = normalize_class(row.get("class", ""))
        classes.add(cls)
        if row.get("score") is None:
            unscored += 1
        else:
            by_class[cls].append(float(row["score"]))
        tokens += int(row.get("tokens") or 0)
        if row.get("cost") is not None:
            cost += float(row["cost"])
            priced = True
    categories = {c: _mean(by_class.get(c, [])) for c in sorted(classes)}
    pooled = [v for c in OTHERS for v in by_class.get(c, [])]
    others = _mean(pooled)
    columns = {c: m for c, m in categories.items() if c not in OTHERS}
    if any(c in classes for c in OTHERS):
        columns["others"] = others
    scored_columns = [m for m in columns.values() if m is not None]
    strata = column_strata(dict(by_class))
    intervals = {"average": _interval(strata), **{c: _interval({c: v}) for c, v in sorted(strata.items())}}
    bins = [0] * len(SCORE_BIN_LABELS)
    for values in by_class.values():
        for v in values:
            bins[score_bin(v)] += 1
    return {
        "categories": categories,
        "others": others,
        "average": _mean(scored_columns),
        "items": items,
        "scored": items - unscored,
        "unscored": unscored,
        "tokens": tokens,
        "cost": cost if priced else None,
        "intervals": intervals,
        "interval_procedure": PROCEDURE,
        "items_by_class": {c: by_class.get(c, []) for c in sorted(classes)},
        "score_bins": dict(zip(SCORE_BIN_LABELS, bins)),
    }
