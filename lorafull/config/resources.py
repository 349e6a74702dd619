"""How many processes a run trains with, and how its global batch splits over them: the rules that the
launcher (Slurm tasks), the plan (memory and GPU-hours per GPU, the auto batch chooser), the trainer and
the sbatch templates share, so they cannot drift apart."""
from __future__ import annotations

from typing import Optional

from lorafull.config.schema import RunConfig, SlurmConfig


def processes_per_node(run: RunConfig, slurm: SlurmConfig) -> int:
    """train.deepspeed: false is the plain-torch loop, one process; otherwise train.nproc, or one per GPU."""
    if not run.train.deepspeed:
        return 1
    return max(1, run.train.nproc or slurm.gpus_per_node)


def world_size(run: RunConfig, slurm: SlurmConfig) -> int:
    """Data-parallel processes of the whole job (a plain-torch run uses one node's one process)."""
    if not run.train.deepspeed:
        return 1
    return slurm.nodes * processes_per_node(run, slurm)


def grad_accumulation(global_batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """THE batch rule: global_batch_size = micro_batch_size x processes x accumulation steps, each a whole
    number >= 1, so every optimizer step sees exactly the global batch whatever the hardware. Anything
    else is a ValueError naming the keys."""
    per_pass = micro_batch_size * world_size
    if global_batch_size % per_pass:
        raise ValueError(f"train.global_batch_size: {global_batch_size} is not a multiple of micro_batch_size "
                         f"{micro_batch_size} x {world_size} processes")
    return global_batch_size // per_pass


def micro_batch_choices(global_batch_size: int, world_size: int) -> list[int]:
    """The micro batches the rule allows on `world_size` processes, largest first (train.micro_batch_size:
    auto picks among them); none when the global batch does not split evenly over the processes."""
    if global_batch_size % world_size:
        return []
    per_process = global_batch_size // world_size
    return [m for m in range(per_process, 0, -1) if per_process % m == 0]


def batch_problem(run: RunConfig, slurm: SlurmConfig) -> Optional[tuple[str, str]]:
    """(key, why) when the run's batch settings break the rule on the resources the study gives it."""
    world, t = world_size(run, slurm), run.train
    if t.micro_batch_size == "auto":
        if micro_batch_choices(t.global_batch_size, world):
            return None
        return ("train.global_batch_size", f"{t.global_batch_size} does not split over the {world} training "
                f"processes (slurm.nodes x train.nproc or slurm.gpus_per_node): use a multiple of {world}")
    try:
        grad_accumulation(t.global_batch_size, t.micro_batch_size, world)
    except ValueError as e:
        return ("train.global_batch_size", str(e).partition(": ")[2] + " (slurm.nodes x train.nproc or "
                "slurm.gpus_per_node)")
    return None
