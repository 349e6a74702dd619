"""Rows with uncertainty: a study's seeds pooled into one row per group, every score turned into a mean
with its 95 % bootstrap interval (lorafull.stats), and the comparisons the report states, each a paired
difference: the two rows' runs on the same items (and seeds), its bootstrap interval and effect size;
"within noise" when that interval contains 0.

Each per-run row carries, under "_samples", the item scores behind its score columns ({column:
{stratum: {item id: score}}}), under "_seed" its training seed and, under "_setting", the settings that
change what the run learns (seed left out). group_rows pools the runs of one group (study.seeds) and
computes every interval there, so a row's interval covers the items and, when it has several seeds,
the seeds too; the pooled row keeps its runs' rows under "_members" for the paired comparisons.
"""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace
from typing import Optional

from lorafull.models.method_table import METHODS, method_of
from lorafull.stats import Estimate, estimate, paired_difference

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
        if key == "run" or key.startswith("_"):  # hidden keys: kept apart, below
            continue
        out[key] = _pool_plain([r.get(key) for r in members])
    out["run"] = name
    for column in dict.fromkeys(c for r in members for c in (r.get("_samples") or {})):
        per_seed = [r["_samples"][column] for r in members if (r.get("_samples") or {}).get(column)]
        est = estimate(per_seed) if per_seed else None
        if est is not None:
            out[column] = est
    out["_setting"], out["_duration"], out["_members"] = members[0].get("_setting"), members[0].get("_duration"), members
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


def seeded(row: dict, column: str) -> list:
    """(training seed, item strata) of each run the row pools, for a column: one side of a paired comparison."""
    members = row.get("_members") or [row]
    return [(m.get("_seed"), m["_samples"][column]) for m in members if (m.get("_samples") or {}).get(column)]


def _paired_text(a: dict, b: dict, what: str, column: str, diff) -> str:
    effect = f"; d_z {diff.effect_size:.2f}" if diff.effect_size is not None else ""
    seeds = f", {diff.seeds} seeds{' paired' if diff.paired_seeds else ''}" if diff.seeds > 1 else ""
    noise = " -- within noise (the paired interval contains 0)" if diff.within_noise else ""
    return (f"`{a['run']}` vs `{b['run']}` ({what}): {column} {a[column].text(3)} vs {b[column].text(3)}, "
            f"difference {float(diff):+.3f} ({diff.interval_text()}, paired over {diff.items} items{seeds}{effect})"
            f"{noise}")


def compare(a: dict, b: dict, column: str, what: str = "") -> Optional[dict]:
    """The paired comparison of two rows on one column, as a structured item with a one-line `text`;
    None when either lacks item scores there, or when both are exactly 0 (nothing to compare)."""
    x, y = a.get(column), b.get(column)
    if not isinstance(x, Estimate) or not isinstance(y, Estimate) or float(x) == float(y) == 0.0:
        return None
    diff = paired_difference(seeded(a, column), seeded(b, column))
    if diff is None:
        return None
    return {"kind": "comparison", "a": a["run"], "b": b["run"], "differs": what, "column": column,
            "a_value": x.as_dict(), "b_value": y.as_dict(), "difference": diff.as_dict(),
            "finding": not diff.within_noise, "text": _paired_text(a, b, what, column, diff)}


def comparisons(rows: list[dict], swept: list[str] = ()) -> list[dict]:
    """One item per pair of rows whose settings differ in 1..MAX_DIFFERENCES settings (the method's keys
    count once; swept keys, chosen by the selection, not at all) and per compared column both have."""
    found = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            diff = _differences(a.get("_setting"), b.get("_setting"))
            counted = {"method" if k.startswith("method.") else k for k in diff or [] if k not in swept}
            if not diff or len(counted) > MAX_DIFFERENCES:
                continue
            what = _describe(diff, a["_setting"], b["_setting"])
            found += [c for c in (compare(a, b, column, what) for column in COMPARED) if c is not None]
    return found
