"""The ONE plan table: a row per run (what it is, what it costs), each run's step-time breakdown and
notes under it. `python -m lorafull.plan` prints it with the study's totals; launch.grid prints it with
its own columns (signature, state, action) given per row.

Library module (no command): lorafull.plan.estimate and launch.grid call plan_lines().
"""
from __future__ import annotations

from typing import Callable, Optional

from lorafull.plan.startup import describe as describe_startup

FORMULA = ("h/epoch = (steps x step time + start-up) / epochs; step = compute (tokens x FLOPs/token / (ranks x peak x mfu)) + "
           "optimizer (Adam bytes / memory bandwidth) + communication (ZeRO collectives / link bandwidth) + "
           "offload (PCIe); 'measured' rows use STUDY_DIR/launch/calibration.json")
PARTS = ("compute", "optimizer", "communication", "offload", "hidden")
ASSUMED_NOTE = ("* tokens per sample assumed (max_length / 2): the data file is not readable here; set "
                "plan.avg_tokens_per_sample (a number, or per run name or data file)")


def count_text(x, unit: str = "") -> str:
    """1.23M, 45.6k, ?: a count in three significant digits."""
    if not isinstance(x, (int, float)):
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def hours_text(h) -> str:
    """Hours, or seconds when under a minute (the demo's runs take seconds)."""
    if not isinstance(h, (int, float)):
        return "?"
    return f"{h:.3g}" if h >= 1 / 60 else f"{h * 3600:.2g}s"


def method_text(label: str, dtype: str, zero_stage, world_size) -> str:
    """'lora r8 bf16 z2x8': the method (lorafull.models.method_table's label), dtype, ZeRO stage x ranks."""
    return f"{label} {dtype} z{zero_stage}x{world_size}"


def assumed(row: dict) -> bool:
    return str(row.get("tokens_source") or "").startswith("assumed")


def _trainable(row: dict) -> str:
    n = row.get("trainable_params")
    return "?" if n is None else f"{n:,}"


def _mem(row: dict) -> str:
    mem = row.get("mem_per_gpu_gb")
    return f"{mem:.1f}" if isinstance(mem, (int, float)) else "?"


# the cells computed from an estimate row (lorafull.plan.estimate.estimate_run, or launch's cached copy)
CELLS: dict[str, Callable[[dict], str]] = {
    "trainable": _trainable,
    "total": lambda r: count_text(r.get("total_params")),
    "added": lambda r: count_text(r.get("added_params")),
    "tokens": lambda r: count_text(r.get("tokens")),
    "mem/GPU GB": _mem,
    "fits": lambda r: {True: "yes", False: "NO"}.get(r.get("fits"), "?"),
    "GPU-h": lambda r: hours_text(r.get("gpu_hours")),
    "h/epoch": lambda r: hours_text(r.get("hours_per_epoch")),
    "ref h/epoch": lambda r: hours_text(r.get("reference_hours_per_epoch")),
    "basis": lambda r: (r.get("basis") or "?") + ("*" if assumed(r) else ""),
}
CPU_CELLS = ("mem/GPU GB", "fits", "GPU-h")  # a CPU partition: no GPU to fit, no GPU-hours
COLUMNS = ("run", "method", "trainable", "total", "added", "tokens", "mem/GPU GB", "fits", "GPU-h", "h/epoch",
           "basis")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width columns under a header and a rule."""
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def breakdown(row: dict) -> str:
    """'step 1.8 s = compute 0.89 + optimizer 0.49 + ...' (what a step's time is made of)."""
    parts = row.get("step_parts_s")
    if not parts:
        return ""
    shares = " + ".join(f"{p} {parts[p]:.3g}" for p in PARTS if parts.get(p)).replace("+ hidden -", "- hidden ")
    start = describe_startup(row.get("startup_parts_s"), row["basis"])
    return f"step {parts['total']:.3g} s = {shares or '0'} ({row['basis']})" + (f"; {start}" if start else "")


def plan_lines(names: list[str], rows: dict[str, dict], columns: list[str],
               given: Optional[dict[str, list[str]]] = None, cpu: bool = False) -> list[str]:
    """The table (one line per name, `columns` from CELLS or from `given`: column -> a cell per name),
    then each run's step breakdown and notes. A "ref h/epoch" column (plan.reference_hours_per_epoch)
    comes before "basis" when any row has one."""
    given = given or {}
    columns = list(columns)
    if any(rows.get(n, {}).get("reference_hours_per_epoch") is not None for n in names):
        columns.insert(columns.index("basis"), "ref h/epoch")
    table = []
    for i, name in enumerate(names):
        row = rows.get(name, {})
        cells = []
        for c in columns:
            if c in given:
                cells.append(given[c][i])
            elif c == "run":
                cells.append(name)
            else:
                cells.append("CPU" if cpu and c in CPU_CELLS else CELLS[c](row))
        table.append(cells)
    lines = [format_table(columns, table)]
    for name in names:
        row = rows.get(name, {})
        if breakdown(row):
            lines.append(f"  {name}: {breakdown(row)}")
        lines += [f"  {name}: {note}" for note in row.get("notes") or []]
    return lines


def format_plan(rows: list[dict], totals: dict) -> str:
    """`python -m lorafull.plan`: the table of every run, then the study's totals and the formula."""
    names = [r["run"] for r in rows]
    by_name = {r["run"]: r for r in rows}
    methods = [method_text(r.get("method_label") or r["method"], r["dtype"], r["zero_stage"], r["world_size"])
               for r in rows]
    lines = plan_lines(names, by_name, list(COLUMNS), given={"method": methods})
    lines.append(f"total: {totals['runs']} runs, {count_text(totals['tokens'])} tokens, {totals['gpu_hours']:.4g} "
                 f"GPU-hours on {totals['hardware']} at {totals['mfu']:g} MFU, {totals['measured']} run(s) measured"
                 + (f"; {len(totals['not_fitting'])} do not fit: {', '.join(totals['not_fitting'])}"
                    if totals["not_fitting"] else "; every run fits"))
    if totals["assumed_tokens"]:
        lines.append(ASSUMED_NOTE)
    return "\n".join(lines + [FORMULA])
