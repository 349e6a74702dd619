"""How long a run trains and where it keeps checkpoints for good, and cooldown branches in the training
loop (lorafull.config.branches says what they are).

A trunk (train.branch_max_tokens) trains at the stable lr to the last of its branches' cooldown
starts and keeps a checkpoint at each. A branch (train.branch_of) is an ordinary run of its token
budget whose first job, finding no checkpoint of its own, resumes from the trunk's checkpoint at its
cooldown start, exactly as a requeued job resumes from its own: weights, optimizer, schedule position,
RNG, tokens seen and the metrics up to there. Its later jobs resume from its own checkpoints.

Library module (no command): lorafull.train.trainer calls it.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, load_run_config
from lorafull.config.branches import branch_points, branch_step, trunk_problems
from lorafull.runs import RunPaths
from lorafull.train.checkpoint import Checkpoints, checkpoint_step
from lorafull.train.order import BatchOrder, steps_to_reach


def plan_steps(run: RunConfig, order: BatchOrder) -> tuple[int, frozenset, int]:
    """(total steps, pinned steps, the step a branch starts from): total from max_steps, else a token
    budget, else epochs, a trunk's from its branches; pinned: save_at_tokens and a trunk's branch points."""
    tc = run.train
    total = tc.max_steps if tc.max_steps is not None else math.ceil(tc.epochs * order.steps_per_epoch)
    if tc.max_tokens is not None and tc.max_steps is None:
        # the budget may need more passes than train.epochs says: a token budget wins over epochs
        (total,) = steps_to_reach(order, [tc.max_tokens], 10 ** 9)
    branch_starts = frozenset()
    if tc.branch_max_tokens:
        total, branch_starts = trunk_plan(run, order)
    if total <= 0:
        raise ValueError("train.epochs / train.max_steps / train.max_tokens: no optimizer step to take")
    at = steps_to_reach(order, list(tc.save_at_tokens), total)
    pinned = frozenset(s for s in at if s is not None) | branch_starts
    return total, pinned, branch_step(tc, total) if tc.branch_of else 0


def trunk_plan(run: RunConfig, order: BatchOrder) -> tuple[int, frozenset]:
    """(steps the trunk trains, the steps where its branches start): each branch's length is the step
    its token budget is reached on the data order, its start the cooldown start of that length."""
    points = branch_points(run.train, lambda n: steps_to_reach(order, [n], 10 ** 9)[0])
    starts = frozenset(s for s in points.values() if s > 0)  # a branch starting at step 0 needs no trunk
    if not starts:
        raise ValueError(f"train.branch_max_tokens {run.train.branch_max_tokens}: every branch cools down from "
                         "its first step, so the trunk has nothing to train (shorten the cooldown)")
    return max(starts), starts


def branch_start(run: RunConfig, run_dir: Path, total_steps: int, is_main: bool) -> Optional[Path]:
    """The trunk checkpoint a branch's first job resumes from (None when its cooldown starts at step 0);
    rank 0 also copies the trunk's metrics up to there, so the branch's file reads as one run."""
    step = branch_step(run.train, total_steps)
    if step == 0:
        return None
    trunk_dir = Path(run_dir).parent / run.train.branch_of
    if not (trunk_dir / "config.yaml").exists():
        raise FileNotFoundError(f"train.branch_of: {trunk_dir} is not a run folder: the trunk "
                                f"{run.train.branch_of} must train before its branches")
    problems = trunk_problems(run, load_run_config(trunk_dir))
    if problems:
        raise ValueError(f"train.branch_of: {trunk_dir} cannot be this branch's trunk: {problems[0]}")
    found = [c for c in Checkpoints(RunPaths.of(trunk_dir).checkpoints).complete() if checkpoint_step(c) == step]
    if not found:
        raise FileNotFoundError(f"train.branch_of: the trunk {run.train.branch_of} has no checkpoint at step {step}, "
                                f"where this branch's cooldown starts (has the trunk finished?)")
    ours, theirs = RunPaths.of(run_dir).metrics, RunPaths.of(trunk_dir).metrics
    if is_main and theirs.exists() and not ours.exists():  # MetricsLog then cuts it back to `step`
        shutil.copyfile(theirs, ours)
    return found[0]
