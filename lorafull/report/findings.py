"""What the report states beyond the table: the sweep and its selected runs, the paired comparisons between
the runs it uses, and the trade-off at matched learning (written by build_report after the rows are pooled).

Library module (no command). Outputs in STUDY_DIR/report/: comparisons.json (every statement as a
structured item with a one-line `text`: kind comparison | matched_learning | matched_learning_within_noise),
tradeoff.json and tradeoff.png (lorafull.analysis.tradeoff); findings_markdown renders them for table.md.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from lorafull.analysis.selection import select_runs
from lorafull.analysis.tradeoff import matched_items, write_tradeoff
from lorafull.config import load_study_settings
from lorafull.report.groups import comparisons
from lorafull.runs import error_line, write_json_atomic
from lorafull.stats import PAIRED_PROCEDURE, Estimate


def items_used(rows: list[dict]) -> Optional[dict]:
    """What the held-out split put where (the same for every run of a study): a run's `_split`."""
    for row in rows:
        for member in row.get("_members") or [row]:
            if member.get("_split"):
                return member["_split"]
    return None


def study_findings(study_dir: Path, rows: list[dict], report_dir: Path) -> dict:
    """Select the runs of each sweep (marking the rows), compare the rows the report uses, write
    tradeoff.json / tradeoff.png and comparisons.json. Returns {"selection", "comparisons", "tradeoff"}."""
    select = load_study_settings(study_dir).select
    selection = select_runs(rows, select)
    if selection is not None:
        selection["items"] = items_used(rows)
    swept = selection["keys"] if selection else []
    used = [r for r in rows if r.get("_selected", True)]
    found = comparisons(used, swept)
    body = None
    try:
        body = write_tradeoff(used, swept, selection, report_dir)
        found += matched_items(body)
    except Exception as e:  # noqa: BLE001 -- the trade-off must never cost the table and its comparisons
        print(f"warning: trade-off left out: {error_line(e)}", file=sys.stderr)
    write_json_atomic(Path(report_dir) / "comparisons.json", {"procedure": PAIRED_PROCEDURE, "items": found})
    return {"selection": selection, "comparisons": found, "tradeoff": body}


def _items_line(items: Optional[dict], holdout: float) -> str:
    if holdout <= 0:
        return "Selected on the same items the report shows (select.holdout 0): the selected runs' numbers are optimistic."
    if not items:
        return "No held-out items: no run has item scores yet."
    parts = []
    for what, name in (("eval", "eval set"), ("target", "target tasks")):
        strata = items.get(what) or {}
        if strata:
            held = sum(len(v["held_out"]) for v in strata.values())
            total = held + sum(v["reported"] for v in strata.values())
            each = ", ".join(f"{k} {len(v['held_out'])}/{len(v['held_out']) + v['reported']}" for k, v in strata.items())
            parts.append(f"{name}: {held} of {total} items held out ({each})")
    return ("Held out for the selection only (ids in tradeoff.json): " + "; ".join(parts)
            + ". Every other number in this report uses the remaining items; forgetting uses all source-task items.")


def _group_label(entry: dict, others: list[dict]) -> str:
    """The group's method (and rank) and every other setting that tells it from the other groups."""
    group = entry["group"]
    varying = [k for k in group if not k.startswith("method.") and len({str(g.get(k)) for g in others}) > 1]
    return ", ".join([str(entry.get("method") or "?")] + [f"{k}={group[k]}" for k in varying])


def selection_markdown(selection: dict) -> list[str]:
    keys = selection["keys"]
    lines = ["", "## Sweep and selection", "",
             f"Swept: {', '.join(keys)}. Selected on `{selection['metric']}` (mean over seeds; held-out fraction "
             f"{selection['holdout']}, split seed {selection['seed']}). Rule: {selection['rule']}.",
             _items_line(selection.get("items"), selection["holdout"]), "",
             "| group | run | " + " | ".join(keys) + f" | {selection['metric']} (selection items) | selected |",
             "|" + "---|" * (len(keys) + 4)]
    groups = [g["group"] for g in selection["groups"]]
    for g in selection["groups"]:
        label = _group_label(g, groups)
        for r in g["runs"]:
            m = r["metric"]
            est = "" if m is None else Estimate(m["mean"], m["low"], m["high"]).text(3)
            lines.append(f"| {label} | {r['run']} | " + " | ".join(str(r["swept"].get(k)) for k in keys)
                         + f" | {est} | {'**yes**' if r['selected'] else ''} |")
    return lines


def findings_markdown(findings: dict) -> list[str]:
    """table.md's sections after the table: the sweep (when there is one), the comparisons and the
    trade-off's statements, each statement one bullet."""
    lines = selection_markdown(findings["selection"]) if findings.get("selection") else []
    pairwise = [f for f in findings["comparisons"] if f["kind"] == "comparison"]
    matched = [f for f in findings["comparisons"] if f["kind"] != "comparison"]
    if pairwise or matched:
        lines += ["", "## Comparisons", "", f"Each is a paired difference: {PAIRED_PROCEDURE}.", ""]
        lines += [f"- {f['text']}" for f in pairwise]
    if matched:
        lines += ["", "### Forgetting at matched learning", "",
                  "From tradeoff.json (figure: tradeoff.png): each curve's forgetting interpolated at the learning "
                  "levels both curves cover, the difference with its paired 95 % interval.", ""]
        lines += [f"- {f['text']}" for f in matched]
    return lines
