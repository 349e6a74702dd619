"""metrics.jsonl of a training run: one line per logged step, instability events, a summary line.

    {"step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "peak_mem_gb", "tokens_seen"}
    {"event": "loss_spike" | "nonfinite" | "grad_explosion" | "divergence", "step", ...}   (analysis monitor)
    {"event": "settings", "step", "micro_batch_size", "gradient_checkpointing", "grad_accum", "auto", ...}
                                            (each job's batch settings, chosen or set: lorafull.plan.auto)
    {"summary": true, "wall_time_s", "hours_per_epoch", "tokens_seen", "trainable_params", ...}

A step line also has "padding_fraction": the share of the window's micro-batch token slots that were
padding (train.group_by_length lowers it).

A resumed job first cuts the file back to the checkpoint's step (lines after it describe work that
is being redone) and replays the kept losses into the instability monitor, so the file reads as if
the run had never stopped.
"""
from __future__ import annotations

import json
import os
import resource
from pathlib import Path
from typing import Optional

import torch

from lorafull.runs import JsonlWriter, read_jsonl, repair_jsonl_tail
from lorafull.train.instability import StabilityMonitor


def peak_mem_gb(device: torch.device) -> float:
    """GPU: peak allocated by torch; CPU: peak resident set size of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux reports KiB


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


class MetricsLog:
    """Rank 0 writes; other ranks hold a MetricsLog that writes nothing. A tracker (lorafull.tracking)
    gets every line written here."""

    def __init__(self, path: Path, enabled: bool, resume_step: int, spike_factor: float = 3.0, tracker=None):
        self.enabled = enabled
        self.tracker = tracker
        self.monitor = StabilityMonitor(spike_factor=spike_factor) if enabled else None
        self._writer: Optional[JsonlWriter] = None
        if not enabled:
            return
        self._cut_back(Path(path), resume_step)
        self._writer = JsonlWriter(path)

    def _cut_back(self, path: Path, step: int) -> None:
        repair_jsonl_tail(path)
        kept = [r for r in read_jsonl(path) if not r.get("summary") and r.get("step", 0) <= step]
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for r in kept:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        if self.monitor is not None:
            for r in kept:
                if "event" not in r and r.get("loss") is not None:
                    self.monitor.update(r["step"], r["loss"], r.get("grad_norm"))

    def step(self, record: dict) -> list[dict]:
        if not self.enabled:
            return []
        self._writer.write(record)
        events = self.monitor.update(record["step"], record["loss"], record.get("grad_norm")) if self.monitor else []
        for e in events:
            self._writer.write(e)
        if self.tracker is not None:
            self.tracker.log_step(record, events)
        return events

    def settings(self, step: int, settings: dict) -> None:
        if self.enabled:
            self._writer.write({"event": "settings", "step": step, **settings})

    def summary(self, record: dict) -> None:
        if self.enabled:
            self._writer.write({"summary": True, **record})
        if self.tracker is not None:
            self.tracker.log_summary(record)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.tracker is not None:
            self.tracker.close()
            self.tracker = None
