"""The plan as text: one row per run, the step-time breakdown of each, notes, and the totals.

Library module (no command): lorafull.plan.estimate prints it.
"""
from __future__ import annotations

FORMULA = ("h/epoch = steps/epoch x step time; step = compute (tokens x FLOPs/token / (ranks x peak x mfu)) + "
           "optimizer (Adam bytes / memory bandwidth) + communication (ZeRO collectives / link bandwidth) + "
           "offload (PCIe) + dequantize (qlora's 4-bit weights, memory-bound); 'measured' rows use "
           "STUDY_DIR/launch/calibration.json")


def _num(x, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _hours(x) -> str:  # short times in seconds: the demo's runs take seconds
    return "?" if x is None else f"{x:.3g}" if x >= 0.01 else f"{x * 3600:.2g}s"


COLUMNS = ("run", "method", "trainable", "total", "added", "tokens", "mem/GPU GB", "fits", "GPU-h", "h/epoch",
           "basis")
PARTS = ("compute", "optimizer", "communication", "offload", "dequantize", "hidden")


def plan_cells(row: dict) -> list[str]:
    """A row's cells under COLUMNS (launch.grid may print these beside its own columns)."""
    mem = "?" if row["mem_per_gpu_gb"] is None else f"{row['mem_per_gpu_gb']:.1f}"
    fits = {True: "yes", False: "NO", None: "?"}[row["fits"]]
    trainable = "?" if row["trainable_params"] is None else f"{row['trainable_params']:,}"
    return [row["run"], f"{row['method']} {row['dtype']} z{row['zero_stage']}x{row['world_size']}", trainable,
            _num(row["total_params"]), _num(row["added_params"]), _num(row["tokens"]), mem, fits,
            _hours(row["gpu_hours"]), _hours(row["hours_per_epoch"]), row.get("basis") or "?"]


def breakdown(row: dict) -> str:
    """'step 1.8 s = compute 0.89 + optimizer 0.49 + ...' (what a step's time is made of)."""
    parts = row.get("step_parts_s")
    if not parts:
        return ""
    shares = " + ".join(f"{p} {parts[p]:.3g}" for p in PARTS if parts.get(p)).replace("+ hidden -", "- hidden ")
    return f"step {parts['total']:.3g} s = {shares or '0'} ({row['basis']})"


def format_plan(rows: list[dict], totals: dict) -> str:
    """The plan as a fixed-width table, each run's step breakdown and notes under it, and the formula."""
    columns = list(COLUMNS)
    table = [plan_cells(r) for r in rows]
    if any(r.get("reference_hours_per_epoch") is not None for r in rows):  # plan.reference_hours_per_epoch
        columns.insert(-1, "ref h/epoch")
        for cells, r in zip(table, rows):
            cells.insert(-1, _hours(r.get("reference_hours_per_epoch")))
    table = [columns] + table
    widths = [max(len(line[c]) for line in table) for c in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        if breakdown(r):
            lines.append(f"  {r['run']}: {breakdown(r)}")
        for note in r["notes"]:
            lines.append(f"  {r['run']}: {note}")
    lines.append(f"total: {totals['runs']} runs, {_num(totals['tokens'])} tokens, {totals['gpu_hours']:.4g} GPU-hours "
                 f"on {totals['hardware']} at {totals['mfu']:g} MFU, {totals['measured']} run(s) measured"
                 + (f"; {len(totals['not_fitting'])} do not fit: {', '.join(totals['not_fitting'])}"
                    if totals["not_fitting"] else "; every run fits"))
    if totals["assumed_tokens"]:
        lines.append(f"tokens/sample assumed to be max_length/2 for {len(totals['assumed_tokens'])} run(s) "
                     f"({', '.join(totals['assumed_tokens'])}): set plan.avg_tokens_per_sample, or plan where "
                     f"data.train is readable")
    return "\n".join(lines + [FORMULA])
