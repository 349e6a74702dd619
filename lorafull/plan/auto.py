"""train.micro_batch_size: auto and train.gradient_checkpointing: auto, chosen from the plan's memory model.

Library module (no command): lorafull.plan.estimate (the plan) and lorafull.train (each job) call it.

The rule, the same in the plan and in the job:
- usable memory = GPU memory x (1 - plan.mem_margin): slurm.gpu_mem_gb in the plan; in a job on a GPU
  the smaller of that and the device's own memory, so a job never counts on more than its plan did;
- micro batch candidates are the divisors of the per-process batch (global_batch_size / processes),
  largest first, so the global batch -- and with it what the run learns -- never changes; only the
  accumulation steps do;
- gradient_checkpointing: auto stays off when some micro batch (the set one, or any under auto) fits
  without it, and turns on only when none does (it costs a recomputed forward, ~1/3 more compute);
- micro_batch_size: auto takes the largest candidate that fits with the checkpointing so chosen; when
  none fits, the smallest (1) with checkpointing on under auto, and "fits": false says so.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from lorafull.config.resources import grad_accumulation, micro_batch_choices
from lorafull.plan.memory import GB, memory_gb


def is_auto(train) -> bool:
    return train.micro_batch_size == "auto" or train.gradient_checkpointing == "auto"


def _memory_at(run, settings, arch: dict, counts: dict, world: int, micro: int, checkpointing: bool) -> float:
    train = dataclasses.replace(run.train, micro_batch_size=micro, gradient_checkpointing=checkpointing, nproc=world)
    trial = dataclasses.replace(run, train=train)
    # memory_gb reads the world size as slurm.nodes x nproc: one "node" of `world` processes
    study = SimpleNamespace(slurm=dataclasses.replace(settings.slurm, nodes=1), plan=settings.plan)
    return memory_gb(trial, study, arch, counts)["total"]


def choose(run, settings, arch: dict, counts: dict, world: int, gpu_mem_gb: float) -> dict:
    """The batch settings of `run` (auto resolved, set values kept) and the memory estimate behind them."""
    tc = run.train
    usable = gpu_mem_gb * (1 - settings.plan.mem_margin)
    micros = micro_batch_choices(tc.global_batch_size, world) if tc.micro_batch_size == "auto" else [tc.micro_batch_size]
    if not micros:  # load_study refuses this against the study's resources; a job on other ones stops here
        raise ValueError(f"train.global_batch_size: {tc.global_batch_size} does not split over the {world} "
                         "training processes")
    modes = [False, True] if tc.gradient_checkpointing == "auto" else [tc.gradient_checkpointing]
    chosen = None
    for checkpointing in modes:
        for micro in micros:
            mem = _memory_at(run, settings, arch, counts, world, micro, checkpointing)
            if mem <= usable:
                chosen = (micro, checkpointing, mem, True)
                break
        if chosen:
            break
    if chosen is None:  # nothing fits: the least memory there is, flagged
        micro, checkpointing = micros[-1], modes[-1]
        chosen = (micro, checkpointing, _memory_at(run, settings, arch, counts, world, micro, checkpointing), False)
    micro, checkpointing, mem, fits = chosen
    auto = [k for k, v in (("micro_batch_size", tc.micro_batch_size), ("gradient_checkpointing",
                                                                       tc.gradient_checkpointing)) if v == "auto"]
    return {"micro_batch_size": micro, "gradient_checkpointing": checkpointing,
            "grad_accum": grad_accumulation(tc.global_batch_size, micro, world),
            "global_batch_size": tc.global_batch_size, "auto": auto, "mem_estimate_gb": round(mem, 3), "usable_gb": round(usable, 3), "fits": fits}


def describe(choice: dict) -> str:
    """One line for the plan's notes."""
    return (f"auto: micro_batch_size {choice['micro_batch_size']} (x{choice['grad_accum']} accumulation), "
            f"gradient_checkpointing {'on' if choice['gradient_checkpointing'] else 'off'}: "
            f"~{choice['mem_estimate_gb']:.1f} of {choice['usable_gb']:.1f} GB usable"
            + ("" if choice["fits"] else " (does NOT fit even so)"))


def settle_in_plan(run, study, arch: dict, counts: dict, row: dict):
    """In the plan: a copy of the run with auto chosen; the choice goes into the row and its notes."""
    if not is_auto(run.train):
        return run
    from lorafull.plan.memory import world_size

    choice = choose(run, study, arch, counts, world_size(run, study), study.slurm.gpu_mem_gb)
    row["batch_settings"] = choice
    row["notes"].append(describe(choice))
    train = dataclasses.replace(run.train, micro_batch_size=choice["micro_batch_size"],
                                gradient_checkpointing=choice["gradient_checkpointing"])
    return dataclasses.replace(run, train=train)


def device_mem_gb(device) -> Optional[float]:
    import torch

    if getattr(device, "type", None) == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / GB
    return None


def settle_auto(run, base_path: str, settings, world: int, device) -> dict:
    """In a job: replace auto in run.train with the chosen values (in place) and return the batch
    settings for metrics.jsonl; set values pass through unchanged."""
    tc = run.train
    if not is_auto(tc):
        return {"micro_batch_size": tc.micro_batch_size, "gradient_checkpointing": tc.gradient_checkpointing,
                "grad_accum": grad_accumulation(tc.global_batch_size, tc.micro_batch_size, world),
                "global_batch_size": tc.global_batch_size, "auto": []}
    from lorafull.models.load import count_params_meta

    arch = json.loads((Path(base_path) / "config.json").read_text())
    counts = count_params_meta(base_path, run.method)
    gpu = settings.slurm.gpu_mem_gb
    own = device_mem_gb(device)
    choice = choose(run, settings, arch, counts, world, min(gpu, own) if own else gpu)
    tc.micro_batch_size, tc.gradient_checkpointing = choice["micro_batch_size"], choice["gradient_checkpointing"]
    return choice
