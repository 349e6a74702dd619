"""Sweeps (the study's `select` section): the held-out items the selection uses, and the best run of each
group of a sweep, which the comparisons and the trade-off then use.

Library module (no command): lorafull.report calls it on the report's rows.

- The split. Of every stratum (an eval class, math and code pooled into "others"; a target task), the
  items are ordered by sha256 of "<select.seed>:<stratum>:<item id>" and the first round(holdout x n) are
  held out (at least one and at most n - 1 where the stratum has two items or more; a one-item stratum
  is kept for the report). The order depends on the ids alone, so every run of a study holds out the same
  items, on any machine. Held-out items serve the selection only; every number the report shows (scores,
  learning, comparisons, trade-off) uses the other items. Forgetting (source tasks) is not selected on
  and keeps all its items.
- The rule. A group is every run whose settings agree on select.group_by (default: on every setting but
  the swept keys, the seed and a cooldown branch's trunk name). Its runs are ranked by select.metric on the held-out items, the mean over
  their seeds: the highest learning or score wins, the lowest val_loss. Ties (equal means) go to the run whose swept values
  are the smallest, compared key by key in the order of select.keys (numbers by value, else as text): the
  gentler learning rate; then to the first run name.
"""
from __future__ import annotations

import hashlib
from typing import Optional

from lorafull.config import SelectConfig
from lorafull.stats import Estimate, estimate, keyed

NOT_SPLIT = ("forgetting",)  # source-task columns: nothing is selected on them, all their items count
TASK_COLUMNS = ("learning", "val_loss")  # keyed by (task, item index); every other column comes from the eval set
LOWER_IS_BETTER = ("val_loss",)
DERIVED = ("train.branch_of",)  # a cooldown branch's trunk: another one for every swept value, so no group key


def holdout_ids(strata: dict, fraction: float, seed: int) -> dict[str, set]:
    """{stratum: the item ids held out} (module docstring); unscored items (None) count as items too."""
    out = {}
    for name, values in (strata or {}).items():
        ids = list(values) if isinstance(values, dict) else list(range(len(values)))
        order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{name}:{i}".encode()).hexdigest())
        n = len(order)
        k = 0 if n < 2 or fraction <= 0 else min(max(round(fraction * n), 1), n - 1)
        out[name] = set(order[:k])
    return out


def _part(strata: Optional[dict], held: callable, want_held: bool) -> Optional[dict]:
    if not strata:
        return strata
    return {name: {i: v for i, v in (values.items() if isinstance(values, dict) else enumerate(values))
                   if held(name, i) is want_held}
            for name, values in strata.items()}


def split_samples(samples: dict, fraction: float, seed: int) -> tuple[dict, dict, dict]:
    """(reported, held out, what went where) of one run's `_samples`
    ({column: strata}). Eval columns are split by item id (the split drawn on the score column's strata,
    so a class column and the score agree); learning by target task and item; forgetting not at all."""
    eval_held = holdout_ids(samples.get("score"), fraction, seed)
    task_held = holdout_ids(samples.get("learning"), fraction, seed)
    eval_ids = set().union(*eval_held.values()) if eval_held else set()

    def held(column: str):
        if column in TASK_COLUMNS:
            return lambda name, i: i in task_held.get(name, ())
        return lambda name, i: i in eval_ids

    reported, held_out = {}, {}
    for column, strata in samples.items():
        if column in NOT_SPLIT:
            reported[column] = strata
            continue
        reported[column] = _part(strata, held(column), False)
        held_out[column] = _part(strata, held(column), True)
    return reported, held_out, {"eval": _used(samples.get("score"), eval_held),
                                "target": _used(samples.get("learning"), task_held)}


def _used(strata: Optional[dict], held: dict[str, set]) -> dict:
    """{stratum: {"held_out": [ids], "reported": how many items the report uses}}: what the report says."""
    return {name: {"held_out": sorted(held.get(name, ()), key=str), "reported": len(values) - len(held.get(name, ()))}
            for name, values in (strata or {}).items()}


def _swept_order(values: dict, keys: list[str]) -> tuple:
    return tuple((0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))
                 for v in (values.get(k) for k in keys))


def _group_key(setting: dict, spec: SelectConfig, swept: list[str]) -> tuple:
    group_by = [k.removeprefix("base.") for k in spec.group_by] if spec.group_by is not None else None
    kept = {k: v for k, v in setting.items()
            if (k in group_by if group_by is not None else k not in swept and k not in DERIVED)}
    return tuple(sorted((k, str(v)) for k, v in kept.items()))


def selection_metric(row: dict, spec: SelectConfig) -> Optional[Estimate]:
    """The row's select.metric on the held-out items (all items when select.holdout is 0), pooled over
    its seeds (the row's `_members`, each a run's row)."""
    source = "_holdout" if spec.holdout > 0 else "_samples"
    per_seed = [(m.get(source) or {}).get(spec.metric) for m in row.get("_members") or [row]]
    per_seed = [s for s in per_seed if s and any(keyed(v or []) for v in s.values())]
    return estimate(per_seed) if per_seed else None


def select_runs(rows: list[dict], spec: SelectConfig) -> Optional[dict]:
    """Mark each row's `_selected` (True / False) and `selected` column ("yes" / "no", empty where its group
    has no run with the metric yet); return the
    selection's record (the rule and every group's sweep), or None when the study sweeps nothing."""
    if not spec.keys:
        return None
    swept = [k.removeprefix("base.") for k in spec.keys]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("_setting") is not None:
            groups.setdefault(_group_key(row["_setting"], spec, swept), []).append(row)
    record = []
    for key, members in groups.items():
        entries = []
        for row in members:
            values = {k: row["_setting"].get(k) for k in swept}
            entries.append((row, values, selection_metric(row, spec)))
        sign = 1.0 if spec.metric in LOWER_IS_BETTER else -1.0
        ranked = sorted((e for e in entries if e[2] is not None),
                        key=lambda e: (sign * float(e[2]), _swept_order(e[1], swept), e[0]["run"]))
        best = ranked[0][0] if ranked else None
        for row, _, _ in entries:  # a group none of whose runs has the metric yet: nothing selected, cell empty
            row["_selected"] = row is best
            row["selected"] = None if best is None else "yes" if row is best else "no"
        record.append({"group": dict(key), "method": members[0].get("method"),
                       "selected": best["run"] if best else None, "runs": [
            {"run": row["run"], "swept": values, "metric": None if m is None else m.as_dict(), "selected": row is best}
            for row, values, m in sorted(entries, key=lambda e: _swept_order(e[1], swept))]})
    return {"keys": swept, "metric": spec.metric, "holdout": spec.holdout, "seed": spec.seed,
            "group_by": spec.group_by, "rule": RULE, "groups": record}


RULE = ("of each group (runs agreeing on select.group_by, default every setting but the swept keys and the seed), "
        "the run with the best mean of select.metric over its seeds on the held-out items (highest learning or "
        "score, lowest val_loss); ties go to the "
        "smallest swept values (in the order of select.keys), then to the first run name")
