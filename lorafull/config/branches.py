"""Durations as cooldown branches: one trunk run at the stable learning rate, and for each token budget a
short branch run that resumes from the trunk's checkpoint where that budget's cooldown starts.

    train: {scheduler: inverse_sqrt, warmup_steps: 1000, alpha_f_decay: 1.0, cooldown_steps: 5086,
            branch_max_tokens: [1000000000, 2000000000, 4000000000]}

makes, of a run named N, the runs N-trunk and N-tokens1b, N-tokens2b, N-tokens4b. Branch N-tokensX is
the run N with train.max_tokens X: a run of X tokens whose lr cools down over its last steps. Under
inverse_sqrt the lr before the cooldown does not depend on the run's length, so that run's first
steps are the trunk's: the branch starts from the trunk's checkpoint at its cooldown start and trains
the cooldown only, ending where the same run trained from scratch would (bitwise, on a deterministic
machine). The trunk trains to the last cooldown start, with no cooldown, and keeps a checkpoint at
each one (lorafull.train.durations).

This module holds the step arithmetic both training and the plan use, the checks, and the expansion
of a study's points (lorafull.config.study calls it).

Library module (no command).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

from lorafull.config.schema import RunConfig, Study, TrainConfig
from lorafull.config.typed import ConfigError, to_dict

TRUNK_SUFFIX = "-trunk"


# ---------------------------------------------------------------------------------------------
# Step arithmetic of the inverse_sqrt schedule (optimizer steps; t counts the steps already taken)
# ---------------------------------------------------------------------------------------------
def _of_steps(ratio: float, total_steps: int) -> int:
    return math.ceil(round(ratio * total_steps, 6))  # rounded first: 0.2 x 25430 is 5086.000000000001


def inverse_sqrt_warmup(train: TrainConfig, total_steps: int) -> int:
    """Warmup steps: warmup_steps, else warmup_ratio of the run (not cut to the run's length: a run
    shorter than its warmup never reaches the peak, as in llm-foundry)."""
    return train.warmup_steps if train.warmup_steps is not None else _of_steps(train.warmup_ratio, total_steps)


def cooldown_steps_of(train: TrainConfig, total_steps: int) -> int:
    if train.cooldown_steps is not None:
        return train.cooldown_steps
    return _of_steps(train.cooldown_ratio, total_steps) if train.cooldown_ratio is not None else 0


def cooldown_start(train: TrainConfig, total_steps: int) -> int:
    """c = max(warmup, total - cooldown): the first step of the linear cooldown."""
    return max(inverse_sqrt_warmup(train, total_steps), total_steps - cooldown_steps_of(train, total_steps))


def branch_step(train: TrainConfig, total_steps: int) -> int:
    """The step a branch of `total_steps` starts from: its cooldown start (the whole run when the run
    ends before its warmup does: nothing to cool down)."""
    return min(cooldown_start(train, total_steps), total_steps)


def branch_points(train: TrainConfig, steps_of_tokens: Callable[[int], int]) -> dict[int, int]:
    """A trunk's branch points: token budget -> the step where that branch's cooldown starts."""
    return {n: branch_step(train, steps_of_tokens(n)) for n in train.branch_max_tokens}


# ---------------------------------------------------------------------------------------------
# Checks of one run's schedule keys (RunConfig.problems)
# ---------------------------------------------------------------------------------------------
_INVERSE_SQRT_ONLY = {"t_scale": None, "cooldown_steps": None, "cooldown_ratio": None, "alpha_f_decay": 0.0,
                      "alpha_f_cooldown": 0.0}


def schedule_problems(t: TrainConfig) -> list[tuple[str, str]]:
    out = []
    if t.scheduler != "inverse_sqrt":
        out += [(f"train.{k}", f"only train.scheduler: inverse_sqrt reads it (the scheduler is {t.scheduler})")
                for k, default in _INVERSE_SQRT_ONLY.items() if getattr(t, k) != default]
    else:
        if t.min_lr_ratio:
            out.append(("train.min_lr_ratio", "inverse_sqrt ends at train.alpha_f_cooldown; leave min_lr_ratio 0"))
        if t.t_scale is None and t.alpha_f_decay < 1:
            out.append(("train.t_scale", f"inverse_sqrt with alpha_f_decay {t.alpha_f_decay:g} < 1 needs its time "
                        "scale in optimizer steps (the paper's: 1000)"))
        if t.alpha_f_cooldown > t.alpha_f_decay:
            out.append(("train.alpha_f_cooldown", f"{t.alpha_f_cooldown:g} is above alpha_f_decay "
                        f"{t.alpha_f_decay:g}: the lr would not fall monotonically after the warmup"))
    return out + _branch_problems(t)


def _branch_problems(t: TrainConfig) -> list[tuple[str, str]]:
    if not (t.branch_max_tokens or t.branch_of):
        return []
    key = "train.branch_of" if t.branch_of else "train.branch_max_tokens"
    if t.branch_of and t.branch_max_tokens:
        return [("train.branch_max_tokens", "a cooldown branch cannot have branches of its own")]
    out = []
    if t.scheduler != "inverse_sqrt":
        out.append((key, f"cooldown branches need train.scheduler: inverse_sqrt (got {t.scheduler}): only its lr "
                    "before the cooldown is the same whatever the run's length"))
    if t.warmup_steps is None and t.warmup_ratio > 0:
        out.append(("train.warmup_steps", "cooldown branches need the warmup in steps: a warmup_ratio would give "
                    "every branch another warmup"))
    if not (t.cooldown_steps or t.cooldown_ratio):
        out.append(("train.cooldown_steps", "cooldown branches need a cooldown: set train.cooldown_steps or "
                    "train.cooldown_ratio"))
    if t.max_steps is not None:
        out.append(("train.max_steps", "would cut every cooldown branch alike: their lengths are their token budgets"))
    if any(n <= 0 for n in t.branch_max_tokens) or len(set(t.branch_max_tokens)) != len(t.branch_max_tokens):
        out.append(("train.branch_max_tokens", f"expected distinct token counts > 0, got {t.branch_max_tokens}"))
    if t.branch_of and t.max_tokens is None:
        out.append(("train.max_tokens", "a cooldown branch trains to a token budget: set train.max_tokens"))
    return out


# ---------------------------------------------------------------------------------------------
# A branch against its trunk (the study, and the branch's job before it loads the trunk's checkpoint)
# ---------------------------------------------------------------------------------------------
# may differ between a branch and its trunk: the duration, the names, what is not trained (eval,
# logging, cadence, trackers, speed knobs that keep the same weights); the engine (deepspeed,
# zero_stage, nproc, offload) may not, since the checkpoint is the engine's
_FREE = {"name", "group", "eval", "model.arch", "data.cache_dir", "data.num_proc", "train.max_tokens",
         "train.branch_max_tokens", "train.branch_of", "train.save_at_tokens", "train.epochs",
         "train.save_every_steps", "train.keep_checkpoints", "train.log_every_steps", "train.report_to",
         "train.micro_batch_size", "train.gradient_checkpointing", "train.adapter_dtype", "train.compile",
         "train.fused_kernels"}


def _flat(run: RunConfig) -> dict:
    flat = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            key = prefix + k
            if key in _FREE:
                continue
            walk(v, key + ".") if isinstance(v, dict) else flat.__setitem__(key, v)

    walk(to_dict(run), "")
    return flat


def trunk_problems(branch: RunConfig, trunk: RunConfig) -> list[str]:
    """Why `branch` cannot start from `trunk`'s checkpoints ([] when it can)."""
    if branch.train.max_tokens not in trunk.train.branch_max_tokens:
        return [f"train.max_tokens {branch.train.max_tokens} is not among the trunk's train.branch_max_tokens "
                f"{trunk.train.branch_max_tokens}: the trunk keeps no checkpoint for it"]
    mine, theirs = _flat(branch), _flat(trunk)
    return [f"{k} is {mine.get(k)!r} here but {theirs.get(k)!r} in the trunk"
            for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]


def check_branches(study: Study) -> None:
    """A cooldown branch resumes from its trunk's checkpoint: the two must train alike up to there."""
    for run in study.runs:
        if run.train.branch_of:
            for why in trunk_problems(run, study.run(run.train.branch_of)):
                raise ConfigError(f"{study.path}: run {run.name!r} (a cooldown branch of {run.train.branch_of}): {why}")


def follow_parents(run: RunConfig, rename: Callable[[str], str]) -> None:
    """Apply a renaming (seeded names, grid slugs) to both references a run may hold: its trunk and the
    run whose final model it starts from."""
    if run.train.branch_of:
        run.train.branch_of = rename(run.train.branch_of)
    p = run.model.name_or_path
    if p.startswith("run:"):
        run.model.name_or_path = "run:" + rename(p[len("run:"):])


# ---------------------------------------------------------------------------------------------
# Expanding a study's points
# ---------------------------------------------------------------------------------------------
def tokens_label(n: int) -> str:
    """1000000000 -> 1b, 250000000 -> 250m, 1500 -> 1500."""
    for unit, size in (("b", 10 ** 9), ("m", 10 ** 6), ("k", 10 ** 3)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def _token_counts(value) -> Optional[list[int]]:
    """The branch budgets as integers, or None where the value is not a list of positive whole numbers
    (the typed loader then names the bad value)."""
    if not isinstance(value, list):
        return None
    out = []
    for v in value:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            return None
        out.append(v)
    return out


def expand_branch_points(points: list[tuple[str, dict, dict]], base_train: TrainConfig) -> list[tuple[str, dict, dict]]:
    """Each point whose train.branch_max_tokens is set becomes a trunk <name>-trunk and one branch per
    budget, <name>-tokens<budget>, with train.max_tokens = the budget and train.branch_of = the trunk."""
    out = []
    for name, dotted, origins in points:
        budgets = _token_counts(dotted.get("train.branch_max_tokens", base_train.branch_max_tokens))
        if not budgets or "train.branch_of" in dotted:
            out.append((name, dotted, origins))
            continue
        trunk = name + TRUNK_SUFFIX
        src = origins.get("train.branch_max_tokens", "base.train.branch_max_tokens")
        out.append((trunk, dotted, origins))
        for i, n in enumerate(budgets):
            out.append((f"{name}-tokens{tokens_label(n)}",
                        {**dotted, "train.branch_max_tokens": [], "train.max_tokens": n, "train.branch_of": trunk},
                        {**origins, "train.branch_max_tokens": src, "train.max_tokens": f"{src}[{i}]",
                         "train.branch_of": src}))
    return out


def as_written(points: list[tuple[str, dict, dict]]) -> list[tuple[str, dict, dict]]:
    """The points without the keys the expansion set to make a branch (its empty branch list, its trunk):
    for the check of command-line overrides, which would take them for settings a run gives itself."""
    def made(dotted: dict, origins: dict) -> bool:
        return "train.branch_of" in dotted and origins.get("train.branch_of", "").endswith("train.branch_max_tokens")

    return [(name, {k: v for k, v in dotted.items() if k not in ("train.branch_max_tokens", "train.branch_of")}
             if made(dotted, origins) else dotted, origins) for name, dotted, origins in points]
