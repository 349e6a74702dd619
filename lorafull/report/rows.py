"""One row per run folder: settings, scores (from scores.jsonl) and training cost (from metrics.jsonl).

Everything is read from the files the stages wrote, so a report can be built at any time: a run that
has not been judged yet simply has empty score cells.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, load_run_config, read_eval_fingerprint
from lorafull.config.signatures import _NOT_IN_SIGNATURE
from lorafull.config.typed import to_dict
from lorafull.figures import short_label
from lorafull.judge.summary import column_strata, keyed_by_class, summarize
from lorafull.models.method_table import method_of
from lorafull.report.planned import planned_columns, read_plan
from lorafull.stats import Estimate
from lorafull.runs import RunPaths, read_jsonl, read_status

# the paper's column order for BELLE's categories; other categories follow alphabetically
COST_COLUMNS = ("added_params", "trainable_params", "hours_per_epoch", "gpu_hours", "cpu_hours", "tokens_per_s",
                "peak_mem_gb", "judge_cost_usd", "unscored", "judged_items")
PAPER_ORDER = ("others", "rewrite", "classification", "generation", "summarization", "extract", "open qa",
               "brainstorming", "closed qa", "math", "code", "translation")


def _safe_rows(path: Path) -> list[dict]:
    try:
        return list(read_jsonl(path))
    except ValueError as e:  # a malformed line in the middle: named in the message, row left empty
        print(f"warning: {e}", file=sys.stderr)
        return []


def training_metrics(run_dir: Path) -> dict:
    """Cost columns from metrics.jsonl: the summary line (the last one training wrote) and the steps."""
    rows = _safe_rows(RunPaths.of(run_dir).metrics)
    steps = [r for r in rows if "loss" in r and "step" in r and not r.get("summary") and "event" not in r]
    summaries = [r for r in rows if r.get("summary")]
    summary = summaries[-1] if summaries else {}
    out: dict = {
        "added_params": summary.get("added_params"),
        "trainable_params": summary.get("trainable_params"),
        "hours_per_epoch": summary.get("hours_per_epoch"),
    }
    wall, world = summary.get("wall_time_s"), summary.get("world_size") or 1
    device = str(summary.get("device") or "")
    if wall is not None:
        # device-hours = wall time x processes (one process per GPU; on the CPU one per rank)
        out["cpu_hours" if device in ("", "cpu") else "gpu_hours"] = wall * world / 3600.0
    if summary.get("tokens_seen") and wall:
        out["tokens_per_s"] = summary["tokens_seen"] / wall
    elif steps:
        rates = [r["tokens_per_s"] for r in steps if r.get("tokens_per_s") is not None]
        out["tokens_per_s"] = sum(rates) / len(rates) if rates else None
    peaks = [r["peak_mem_gb"] for r in steps + [summary] if r.get("peak_mem_gb") is not None]
    out["peak_mem_gb"] = max(peaks) if peaks else None
    return out


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    rows = _safe_rows(RunPaths.of(run_dir).metrics)
    return [(int(r["step"]), float(r["loss"])) for r in rows
            if r.get("loss") is not None and r.get("step") is not None and not r.get("summary") and "event" not in r]


def _method(cfg) -> Optional[str]:
    if cfg is None:
        return None
    return method_of(cfg).label(cfg.method)


def _model(cfg) -> Optional[str]:
    """The base model, short: a folder's name, or run:<parent> without its seed (seeds' rows pool)."""
    if cfg is None:
        return None
    if cfg.model.name_or_path.startswith("run:"):  # (a cooldown branch's parent is its trunk: its model is the base)
        return "run:" + short_label(cfg.model.name_or_path[len("run:"):])
    return Path(cfg.model.name_or_path).name


def run_row(run_dir: Path) -> tuple[dict, dict]:
    """(row, category means) of one run folder."""
    try:
        cfg = load_run_config(run_dir)
    except ConfigError as e:
        print(f"warning: {e}", file=sys.stderr)
        cfg = None
    scored = _safe_rows(RunPaths.of(run_dir).scores) if RunPaths.of(run_dir).scores.exists() else None
    scores = summarize(scored) if scored is not None else None
    row: dict = {
        "run": run_dir.name,
        "method": _method(cfg),
        "model": _model(cfg),
        "num_samples": cfg.data.num_samples if cfg else None,
        "state": read_status(run_dir).get("state"),
        "score": scores["average"] if scores else None,
        "others": scores["others"] if scores else None,
    }
    categories = scores["categories"] if scores else {}
    if scores:  # the item scores behind each score column by item id, for the intervals and the paired
        by_class = keyed_by_class(scored)  # comparisons (lorafull.report.groups)
        strata = column_strata(by_class)
        row["_samples"] = {"score": strata, **{c: {c: v} for c, v in by_class.items()},
                           "others": {"others": strata["others"]} if "others" in strata else None}
    row["_group"] = cfg.group if cfg else None
    row["_seed"] = cfg.train.seed if cfg else None  # pairs a row's seeds with another row's
    row["_parent"] = cfg.parent if cfg else None  # orders rows when study.yaml lists none
    row["_setting"] = comparable_setting(cfg) if cfg else None
    row.update(training_metrics(run_dir))
    row["judge_cost_usd"] = scores["cost"] if scores else None
    row["unscored"] = scores["unscored"] if scores else None
    row["judged_items"] = scores["items"] if scores else None
    # what the scores were computed under (eval set, judge, generation settings): rows with different
    # fingerprints are not comparable; scores from before fingerprints existed are "unknown"
    recorded = read_eval_fingerprint(run_dir) if scores else None
    row["eval_fingerprint"] = (recorded or {}).get("fingerprint", "unknown") if scores else None
    # who gave the scores: a model name, reference:<scorer>, or a served judge by its content hash
    row["judge"] = "; ".join(sorted({str(r["judge"]) for r in scored or [] if r.get("judge")})) or None
    return row, categories


def comparable_setting(cfg) -> dict:
    """The run's settings that change what it learns, flat ({"method.kind": "lora", ...}), without its
    seed; a parent run is named by its group, so two seeds' children compare equal."""
    flat: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if key in _NOT_IN_SIGNATURE or key == "train.seed":
                continue
            if isinstance(v, dict):
                walk(v, key + ".")
            else:
                flat[key] = str(v) if isinstance(v, list) else v

    walk(to_dict(cfg), "")
    shaping = {f"method.{k}" for k in ("kind", *method_of(cfg).settings)}
    for key in [k for k in flat if k.startswith("method.") and k not in shaping]:
        flat.pop(key)  # another method's settings do nothing to this run (LoRA's rank to a full fine-tune)
    if cfg.train.branch_of:  # a cooldown branch: its base model as it is, its trunk by group
        flat["train.branch_of"] = short_label(cfg.train.branch_of)
    elif cfg.parent is not None:
        flat["model.name_or_path"] = "run:" + short_label(cfg.parent)
    return flat


def order_categories(names: set[str]) -> list[str]:
    known = [c for c in PAPER_ORDER if c in names]
    return known + sorted(names - set(known))


def study_order(study_dir: Path, built: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Rows in the study's order: STUDY_DIR/study.yaml's `runs` (written by launch.grid: parents first, so
    the untuned base leads, then the grid's order, then the explicit runs). Folders it does not list (a
    study launched before it listed them) follow, parents before their children, then by name."""
    import yaml

    path = Path(study_dir) / "study.yaml"
    try:
        listed = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("runs") or [] if path.exists() else []
    except (OSError, yaml.YAMLError):
        listed = []
    rank = {name: i for i, name in enumerate(listed) if isinstance(name, str)}
    parents = {row["run"]: row.get("_parent") for row, _ in built}

    def depth(name: str) -> int:
        seen = set()
        while parents.get(name) and name not in seen:
            seen.add(name)
            name = parents[name]
        return len(seen)

    return sorted(built, key=lambda b: (rank.get(b[0]["run"], len(rank)), depth(b[0]["run"]), b[0]["run"]))


def collect_rows(study_dir: Path) -> tuple[list[dict], list[str]]:
    """(rows, category columns) for every folder under STUDY_DIR/runs that holds a config.yaml, in the
    study's order; columns in a stable order: run, method, ..., score, others, every category, the cost
    columns."""
    runs_dir = Path(study_dir) / "runs"
    folders = [p for p in runs_dir.iterdir() if (p / "config.yaml").exists()] if runs_dir.exists() else []
    built = study_order(study_dir, [run_row(p) for p in folders])
    plan = read_plan(study_dir)
    names: set[str] = set()
    for _, cats in built:
        names |= set(cats)
    # others pools math and code (BELLE): a column of its own only when it pools both, else it repeats one
    has_others = all(c in names for c in ("math", "code"))
    columns = [c for c in order_categories(names | ({"others"} if has_others else set()))]
    # a device-hours column only when some run has it (a CPU study has no GPU-hours)
    cost_cols = [c for c in COST_COLUMNS if c not in ("gpu_hours", "cpu_hours") or any(r.get(c) is not None
                                                                                       for r, _ in built)]
    rows = []
    for row, cats in built:
        head = {k: row[k] for k in ("run", "method", "model", "num_samples", "state", "score")}
        per_cat = {c: (row["others"] if c == "others" else cats.get(c)) for c in columns}
        planned = planned_columns(row, plan) if plan else {}
        hidden = {k: row.get(k) for k in ("_samples", "_group", "_setting", "_seed")}
        if not has_others and hidden["_samples"]:
            hidden["_samples"] = {k: v for k, v in hidden["_samples"].items() if k != "others"}
        rows.append({**head, **per_cat, **{c: row.get(c) for c in cost_cols}, **{c: planned[c] for c in planned},
                     "eval_fingerprint": row["eval_fingerprint"], "judge": row["judge"], **hidden})
    return rows, columns


def fingerprint_note(rows: list[dict]) -> str:
    """A warning when the scored rows were scored under different eval fingerprints, else ''."""
    prints = sorted({r["eval_fingerprint"] for r in rows if r.get("score") is not None and r.get("eval_fingerprint")})
    if len(prints) < 2:
        return ""
    return (f"note: rows were scored under {len(prints)} different eval fingerprints ({', '.join(prints)}): "
            "compare scores only between rows with the same eval_fingerprint (rerun launch.grid to re-evaluate)")


def cell_text(value) -> str:
    """A table cell's text, the same in table.md and index.html: an estimate as mean ± half-width of its
    95 % interval, scores to 4 decimals, counts with thousands separators, None empty (each writer
    escapes it for its format)."""
    if value is None:
        return ""
    if isinstance(value, Estimate):
        return value.text(3)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:,.1f}"
    return str(value)
