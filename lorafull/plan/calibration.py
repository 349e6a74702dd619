"""Measured training shapes: STUDY_DIR/launch/calibration.json, written by `launch.grid --calibrate`.

Library module (no command): lorafull.plan.estimate reads it, launch.calibrate writes it.

A shape is what the time of a micro batch and of an optimizer step, and the peak memory, depend on:
the architecture, the method, dtype, ZeRO stage, offload, gradient checkpointing, micro batch, max
length and nodes x processes, on one kind of hardware (plan.hardware's preset and slurm.partition).
The global batch and the data are not part of it: a run with the shape of a probe is planned as
    step = micro batches per step x (measured forward+backward per micro batch) x (its tokens per
           sample / the probe's) + measured optimizer step
plus the probe's start-up once per run, and its peak memory is the probe's.

    {"shapes": {KEY: {"shape": {...}, "fwd_bwd_s", "optimizer_s", "startup_s", "tokens_per_sample",
                      "plan_tokens_per_sample" (the plan's count for the probe's data), "peak_mem_gb",
                      "tokens_per_s", "steps_timed", "measured_at", ...}}}
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study
from lorafull.models.method_table import method_of
from lorafull.plan.memory import world_size

ARCH_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def calibration_path(study: Study) -> Path:
    return study.output_dir / "launch" / "calibration.json"


def shape_of(run: RunConfig, study: Study, arch: dict) -> dict:
    m, t = run.method, run.train
    # what the time of a step depends on: the method's shaping settings but LoRA's scale and dropout rate
    method = {k: v for k, v in method_of(run).setting_values(m).items() if k not in ("alpha", "dropout")}
    return {"arch": {k: arch.get(k) for k in ARCH_KEYS}, "method": method, "dtype": run.model.dtype,
            "zero_stage": t.zero_stage if t.deepspeed else None, "offload": bool(t.offload and t.deepspeed),
            "gradient_checkpointing": t.gradient_checkpointing, "micro_batch_size": t.micro_batch_size,
            "max_length": run.data.max_length, "nodes": study.slurm.nodes, "world_size": world_size(run, study),
            "hardware": study.plan.hardware.preset, "partition": study.slurm.partition}


def shape_key(shape: dict) -> str:
    text = json.dumps(shape, sort_keys=True, default=str)
    arch = shape["arch"]
    return (f"{shape['method']['kind']}-h{arch['hidden_size']}l{arch['num_hidden_layers']}-{shape['dtype']}"
            f"-z{shape['zero_stage']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}")


def load_calibration(study: Study) -> dict:
    """KEY -> measurement; {} when the study was never calibrated (or plan.use_calibration is false)."""
    path = calibration_path(study)
    if not study.plan.use_calibration or not path.exists():
        return {}
    try:
        return json.loads(path.read_text()).get("shapes", {})
    except (json.JSONDecodeError, AttributeError):
        return {}


def measured_step(measured: dict, accum: int, tokens_per_sample: Optional[float]) -> dict:
    """The step-time parts of a run of a measured shape (see the module docstring)."""
    scale = 1.0
    # the plan's count of the probe's data when recorded (the run's count is the plan's too), else what
    # the probe trained on
    probe_tokens = measured.get("plan_tokens_per_sample") or measured.get("tokens_per_sample")
    if tokens_per_sample and probe_tokens:
        scale = tokens_per_sample / probe_tokens
    compute = accum * measured["fwd_bwd_s"] * scale
    return {"compute": compute, "optimizer": measured["optimizer_s"], "communication": 0.0, "offload": 0.0, "hidden": 0.0,
            "total": compute + measured["optimizer_s"]}
