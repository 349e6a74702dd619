"""How many processes a run trains with: the one rule that the launcher (Slurm tasks), the plan (memory
and GPU-hours per GPU) and the sbatch templates share, so they cannot drift apart."""
from __future__ import annotations

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
