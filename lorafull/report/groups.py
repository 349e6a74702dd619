"""Rows with uncertainty: a study's seeds pooled into one row per group, every score turned into a mean
with its 95 % bootstrap interval (lorafull.stats), and the comparisons the report states.

Each per-run row carries, under "_samples", the item scores behind its score columns ({column:
{stratum: [item scores]}}) and, under "_setting", the settings that change what the run learns (seed
left out). group_rows pools the runs of one group (study.seeds) and computes every interval there, so
a row's interval covers the items and, when it has several seeds, the seeds too.
"""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Optional

from lorafull.models.method_table import METHODS, method_of
from lorafull.stats import Estimate, estimate, order, overlap

MAX_DIFFERENCES = 3  # compare two rows when their settings differ in this many keys at most (method.* counts once)
COMPARED = ("score", "learning", "forgetting")


def _pool_plain(values: list):
    """A column without item scores: the mean of numbers (ints stay ints), else the one shared value."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        m = sum(present) / len(present)
        return round(m) if all(isinstance(v, int) for v in present) else m
    distinct = sorted({str(v) for v in present})
    return present[0] if len(distinct) == 1 else "/".join(distinct)


def _pooled_row(name: str, members: list[dict]) -> dict:
    out: dict = {}
    for key in dict.fromkeys(k for r in members for k in r):
        if key in ("run", "_samples", "_setting", "_group"):
            continue
        out[key] = _pool_plain([r.get(key) for r in members])
    out["run"] = name
    for column in dict.fromkeys(c for r in members for c in (r.get("_samples") or {})):
        per_seed = [r["_samples"][column] for r in members if (r.get("_samples") or {}).get(column)]
        est = estimate(per_seed) if per_seed else None
        if est is not None:
            out[column] = est
    out["_setting"] = members[0].get("_setting")
    return out


def group_rows(rows: list[dict]) -> list[dict]:
    """One row per group (rows without a group are their own), in first-seen order; when some group
    pools several runs, a `seeds` column (how many) right after `run`."""
    groups: "OrderedDict[str, list[dict]]" = OrderedDict()
    for r in rows:
        groups.setdefault(r.get("_group") or r["run"], []).append(r)
    pooled = any(len(m) > 1 for m in groups.values())
    out = []
    for name, members in groups.items():
        row = _pooled_row(name, members)
        head = {"run": name, "seeds": len(members)} if pooled else {"run": name}
        out.append({**head, **{k: v for k, v in row.items() if k != "run"}})
    return out


def _differences(a: Optional[dict], b: Optional[dict]) -> Optional[list[str]]:
    if a is None or b is None:
        return None
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _method_settings(setting: dict) -> SimpleNamespace:
    return SimpleNamespace(**{k.split(".", 1)[1]: v for k, v in setting.items() if k.startswith("method.")})


def _label_setting(kind) -> Optional[str]:
    return METHODS[kind].label_setting if kind in METHODS else None


def _method(setting: dict) -> str:
    try:
        return method_of(setting.get("method.kind")).label(_method_settings(setting))
    except (ValueError, AttributeError):  # a kind this version does not know, or a setting missing
        return str(setting.get("method.kind"))


def _describe(diff: list[str], a: dict, b: dict) -> str:
    """What differs, the method's keys said as one: "method: full / lora r=64; train.lr: 5e-05 / 0.0005"."""
    parts = [f"method: {_method(a)} / {_method(b)}"] if any(k.startswith("method.") for k in diff) else []
    if a.get("method.kind") == b.get("method.kind"):  # one method: its other settings too (LoRA's alpha...)
        shown = {"method.kind", f"method.{_label_setting(a.get('method.kind'))}"}
        parts += [f"{k}: {a.get(k)} / {b.get(k)}" for k in diff if k.startswith("method.") and k not in shown]
    return "; ".join(parts + [f"{k}: {a.get(k)} / {b.get(k)}" for k in diff if not k.startswith("method.")])


def comparisons(rows: list[dict]) -> list[str]:
    """Markdown lines, one per pair of rows whose settings differ in 1..MAX_DIFFERENCES settings and per
    compared column both have: `a` vs `b` (what differs): column a_est > b_est, with `(within noise)`
    when the two 95 % intervals overlap."""
    lines = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            diff = _differences(a.get("_setting"), b.get("_setting"))
            # the method's keys (kind, rank, alpha) are one choice: full FT vs LoRA r=64 is one difference
            if not diff or len({"method" if k.startswith("method.") else k for k in diff}) > MAX_DIFFERENCES:
                continue
            what = _describe(diff, a["_setting"], b["_setting"])
            for column in COMPARED:
                x, y = a.get(column), b.get(column)
                if isinstance(x, Estimate) and isinstance(y, Estimate):
                    noise = " -- within noise (the intervals overlap)" if overlap(x, y) else ""
                    lines.append(f"- `{a['run']}` vs `{b['run']}` ({what}): {column} {x.text(3)} "
                                 f"{order(x, y)} {y.text(3)}{noise}")
    return lines
