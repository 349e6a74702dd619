"""Training instability of a finished run, read from its metrics.jsonl: the events the training's
monitor recorded (lorafull.train.instability), or the same events recomputed from the logged losses.

    python -m lorafull.analysis instability RUN_DIR [--recompute]     # -> RUN_DIR/analysis/instability.json
"""
from __future__ import annotations

import os
from pathlib import Path

from lorafull.runs import read_jsonl
from lorafull.train.instability import EVENTS, StabilityMonitor


def _as_float(x):
    if isinstance(x, str):
        try:
            return float(x)  # "nan" / "inf" as written by _json_number
        except ValueError:
            return None
    return x


def scan_metrics(path: str | os.PathLike, spike_factor: float = 3.0, window: int = 20,
                 recompute: bool = False) -> list[dict]:
    """Instability events of a metrics.jsonl: the recorded {"event"} lines, or, when it has none
    (or recompute=True), events recomputed from its step lines with a fresh StabilityMonitor."""
    lines = list(read_jsonl(path))
    recorded = [l for l in lines if "event" in l and l.get("event") in EVENTS]
    if recorded and not recompute:
        return recorded
    monitor = StabilityMonitor(spike_factor=spike_factor, window=window)
    events = []
    for line in lines:
        if "event" in line or line.get("summary") or "loss" not in line:
            continue
        events += monitor.update(line.get("step"), _as_float(line["loss"]), _as_float(line.get("grad_norm")))
    return events


def summarise(events: list[dict]) -> dict:
    """{"unstable": bool, "events": total, <event>: count}. A run is unstable when its loss went
    non-finite, diverged or spiked; gradient-norm explosions alone are counted, not judged (they are
    common and harmless right after warm-up with clipping on)."""
    counts = {e: sum(1 for ev in events if ev.get("event") == e) for e in EVENTS}
    unstable = bool(counts["nonfinite"] or counts["divergence"] or counts["loss_spike"])
    return {"unstable": unstable, "events": sum(counts.values()), **counts,
            "first_step": min((ev["step"] for ev in events if ev.get("step") is not None), default=None)}


def run_instability(run_dir: str | os.PathLike, spike_factor: float = 3.0) -> dict:
    metrics = Path(run_dir) / "metrics.jsonl"
    events = scan_metrics(metrics, spike_factor=spike_factor) if metrics.exists() else []
    return {"summary": summarise(events), "events": events}
