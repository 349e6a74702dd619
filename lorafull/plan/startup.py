"""The start-up of a training run: what its wall time holds besides its steps, once per run (seconds).

    set-up     the job's fixed cost before the first step: distributed and engine initialisation
               (DeepSpeed's engine, optimizer states, the CUDA context), plan.hardware's startup_s
    load       reading the base model's weights: parameters x bytes of model.dtype / plan.hardware's
               load_gbs (the storage's read bandwidth); 0 for a model initialised from scratch
    tokenize   tokenizing the training data into the cache: samples x tokens/sample / TOKENIZE_TOKENS_PER_S
               (an upper bound: runs reading the same file share the cache, and only the first pays)
    first_step the first optimizer step's extra time over a steady one (allocation, kernel selection):
               one more step

A calibrated shape (launch.grid --calibrate) replaces the model with what its probe measured:
startup_s (model, data and engine set-up, timed by launch.probe) plus first_step_s - step_s.

Library module (no command): lorafull.plan.estimate adds it to every run's wall time, so a plan's hours
per epoch hold a short run's start-up too (the report's measured / planned ratio compares like with like).
"""
from __future__ import annotations

from typing import Optional

from lorafull.config import RunConfig
from lorafull.plan.hardware import Hardware
from lorafull.plan.memory import DTYPE_BYTES

# One process tokenizing with the Rust BPE tokenizer: the demo's corpus (84,033 tokens in 2,400 samples)
# took 0.2 s here (lorafull.data's log line; 2 shared CPU cores), about 400k tokens/s; bench/bench_tokenize.py
# measured 4,831 BELLE-like samples/s with one process.
TOKENIZE_TOKENS_PER_S = 400_000.0
PARTS = ("setup", "load", "tokenize", "first_step")


def modelled_startup(run: RunConfig, counts: dict, samples: Optional[int], tokens_per_sample: Optional[float],
                     step_s: float, hw: Hardware) -> dict:
    """{"setup", "load", "tokenize", "first_step", "total"} seconds of a run's start-up, from the hardware."""
    scratch = str(run.model.name_or_path or "").startswith("scratch:")
    weights = 0.0 if scratch else counts["total"] * DTYPE_BYTES[run.model.dtype]
    tokens = (samples or 0) * (tokens_per_sample or 0)
    parts = {"setup": hw.startup_s, "load": weights / (hw.load_gbs * 1e9), "tokenize": tokens / TOKENIZE_TOKENS_PER_S,
             "first_step": step_s}
    return {**parts, "total": sum(parts.values())}


def measured_startup(measured: dict, step_s: float) -> dict:
    """The start-up a calibration probe measured: its set-up (model load, tokenization, engine) and its
    first step's time beyond a steady step's (probes from before first_step_s was recorded: one step)."""
    first = measured.get("first_step_s")
    extra = max(0.0, first - measured.get("step_s", step_s)) if first is not None else step_s
    parts = {"setup": measured.get("startup_s") or 0.0, "load": 0.0, "tokenize": 0.0, "first_step": extra}
    return {**parts, "total": sum(parts.values())}


def describe(parts: Optional[dict], basis: str) -> str:
    """'start-up 12.3 s = set-up 10 + load 2.1 + tokenize 0.2 + first step 0.02 (modelled)'."""
    if not parts:
        return ""
    shares = " + ".join(f"{p.replace('_', ' ').replace('setup', 'set-up')} {parts[p]:.3g}" for p in PARTS if parts.get(p))
    return f"start-up {parts['total']:.3g} s = {shares or '0'} ({basis})"
