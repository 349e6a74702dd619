"""Which columns a person reads first, and what each column means (table.md and index.html share both).

Library module (no command): lorafull.report.build and lorafull.report.html use it.

table.md (and the first table of index.html) answers the study's question: which method, at which
size, scored how well, learned and forgot how much, at what cost -- each score with its interval.
Every column, these included, is in table.csv (and behind index.html's "all columns" toggle).
"""
from __future__ import annotations

from lorafull.stats import PROCEDURE, Estimate

# in this order, each where some row has a value; model only where the rows differ in it
KEY_COLUMNS = ("run", "seeds", "state", "selected", "method", "model", "num_samples", "trainable_params", "score", "learning",
               "forgetting", "gpu_hours", "cpu_hours")

DEFINITIONS = {
    "run": "the run; with several training seeds, the group of its seeds (runs.md has each seed's row)",
    "seeds": "how many training seeds (runs) the row pools",
    "state": "shown while some run is not done: where it stands (queued, running, waiting: its judge batch runs at "
             "the provider, failed, ...); its empty cells fill in once it is done",
    "selected": "with a sweep (the study's select section): whether the row is its group's selected run; the "
                "comparisons and the trade-off use the selected ones only",
    "method": "full fine-tuning, or the adapter method with its rank (lora r=8)",
    "model": "the base model the run starts from",
    "num_samples": "training samples drawn from the data file (empty: all of it)",
    "trainable_params": "parameters the method trains (LoRA: the adapters only)",
    "score": "eval-set score: the mean over the eval classes of each class's mean item score, math and "
             "code pooled into 'others' as in the BELLE paper",
    "learning": "target-task score minus the base model's on the same items: what tuning taught",
    "forgetting": "the base model's source-task score minus the run's: positive = forgot",
    "gpu_hours": "training wall time x GPUs",
    "cpu_hours": "training wall time x processes (no GPU: CPU-core-hours)",
    "rank90": "median over weight matrices of the rank that explains 90 % of the weight change",
    "hours_per_epoch": "training wall time per epoch",
    "added_params": "parameters the method adds to the base model (0 for full fine-tuning)",
    "h_per_epoch_ratio": "measured hours per epoch / planned (the plan's start-up term included)",
}

INTERVALS = ("± is the half-width of the 95 % interval of the mean (" + PROCEDURE + "). Learning and "
             "forgetting resample the run-minus-base differences on the same items (a paired bootstrap). Whether two "
             "rows differ is not read off their intervals: the Comparisons resample the paired difference of the two "
             "runs on the same items (and seeds), and a difference is within noise when that interval contains 0.")


def _has_value(rows: list[dict], col: str) -> bool:
    return any(r.get(col) not in (None, "") for r in rows)


def key_columns(rows: list[dict]) -> list[str]:
    """The columns of table.md: KEY_COLUMNS that some row fills (model only when rows differ in it)."""
    out = []
    for col in KEY_COLUMNS:
        if col == "model" and len({str(r.get("model")) for r in rows}) < 2:
            continue
        if col == "state" and all(r.get("state") in (None, "done") for r in rows):
            continue  # every run done: the column would say nothing
        if col == "run" or _has_value(rows, col):
            out.append(col)
    return out


def estimate_columns(rows: list[dict], cols: list[str]) -> list[str]:
    """The columns whose cells carry a ± interval somewhere."""
    return [c for c in cols if any(isinstance(r.get(c), Estimate) and r[c].low is not None for r in rows)]
