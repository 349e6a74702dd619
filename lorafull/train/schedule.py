"""The learning-rate schedules: the multiplier of the peak lr (train.lr) at each optimizer step, for
torch's LambdaLR (so both engines step the same schedule, and a checkpoint restores its position).

    cosine | linear | constant   linear warmup reaching the peak at the last warmup step, then the
                                 decay to min_lr_ratio at the last step (or none)
    inverse_sqrt                 llm-foundry's InverseSquareRootWithWarmupScheduler (inv_sqrt_with_warmup,
                                 the CPT schedule of Biderman et al. 2024), at batch t = the optimizer
                                 steps already taken (0 for the first, as composer counts):
        t < w:        t / w
        w <= t < c:   a_d + (1 - a_d) / sqrt((t - w + s) / s)
        t >= c:       v_c + min(1, (t - c) / k) * (a_f - v_c)      v_c: the middle formula at t = c
    with w the warmup, s = t_scale, a_d = alpha_f_decay, a_f = alpha_f_cooldown, k the cooldown steps and
    c = max(w, total - k) (lorafull.config.branches). The floor a_f is reached after the last step.
    A trunk of cooldown branches has no cooldown: its lr is the middle formula until it stops.

Library module (no command).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from lorafull.config.branches import cooldown_start, cooldown_steps_of, inverse_sqrt_warmup


def lr_lambda(total_steps: int, warmup_steps: int, kind: str, min_ratio: float = 0.0):
    """Multiplier of the peak lr at optimizer step s (0-based): linear warmup reaching the peak at the
    last warmup step, then cosine / linear decay to min_ratio (the floor) at the last step, or constant."""

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_ratio + (1.0 - min_ratio) * decay

    return f


def inverse_sqrt(warmup: int, t_scale: int, alpha_f_decay: float, alpha_f_cooldown: float,
                 start: Optional[int], cooldown: int) -> Callable[[int], float]:
    """The inverse_sqrt multiplier at batch t; start = the cooldown's first step c (None: no cooldown)."""

    def middle(t: int) -> float:
        return alpha_f_decay + (1.0 - alpha_f_decay) / math.sqrt((t - warmup + t_scale) / t_scale)

    def f(t: int) -> float:
        if t < warmup:
            return t / warmup
        if start is None or t < start:
            return middle(t)
        at_start = middle(start)
        if cooldown == 0:
            return at_start
        return at_start + min(1.0, (t - start) / cooldown) * (alpha_f_cooldown - at_start)

    return f


def warmup_steps_of(train, total_steps: int) -> int:
    if train.warmup_steps is not None:
        return min(int(train.warmup_steps), total_steps)
    return min(int(math.ceil(train.warmup_ratio * total_steps)), total_steps)


def lr_multiplier(train, total_steps: int) -> Callable[[int], float]:
    """train.scheduler's multiplier for a run of total_steps optimizer steps."""
    if train.scheduler != "inverse_sqrt":
        return lr_lambda(total_steps, warmup_steps_of(train, total_steps), train.scheduler, train.min_lr_ratio)
    trunk = bool(train.branch_max_tokens)  # trains at the stable lr: its branches cool down
    return inverse_sqrt(inverse_sqrt_warmup(train, total_steps), train.t_scale or 1, train.alpha_f_decay,
                        train.alpha_f_cooldown, None if trunk else cooldown_start(train, total_steps),
                        cooldown_steps_of(train, total_steps))
