"""What one job of a run asks the scheduler for, computed from the study's settings in one place.

The submitit path (executors.py) and the rendered sbatch scripts (render.py) both read these shapes,
so a run gets the same allocation whichever way it is submitted.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Optional

from lorafull.config import RunConfig, SlurmConfig
from lorafull.config.resources import processes_per_node, world_size
# the requeue exit code is the training's (lorafull.train.distributed, with the rendezvous)
from lorafull.train.distributed import EXIT_REQUEUE  # noqa: F401 (re-exported for launch)



@dataclass(frozen=True)
class Shape:
    """The resources of one job. Runs with equal training shapes share one job array."""

    nodes: int
    tasks_per_node: int  # processes per node: one per GPU (or train.nproc / gpus_per_node on a CPU)
    gpus_per_node: int  # 0 on a CPU partition (slurm.gres: null or slurm.gpus_per_node: 0)
    cpus_per_task: int
    mem_gb: int  # per node
    timeout_min: int

    def describe(self) -> str:
        gpus = f"{self.gpus_per_node} GPU" if self.gpus_per_node else "CPU"
        return (f"{self.nodes} node x {self.tasks_per_node} proc ({gpus}/node), {self.cpus_per_task} cpu/proc, "
                f"{self.mem_gb} GB/node, {self.timeout_min} min")


def cpu_partition(slurm: SlurmConfig) -> bool:
    """No GPU is asked for: `gres: null`, or `gpus_per_node: 0` (which would otherwise become a `gpu:0` gres
    that a cluster without GPU gres rejects as an invalid generic resource)."""
    return not slurm.gres or slurm.gpus_per_node <= 0


def train_shape(run: RunConfig, slurm: SlurmConfig) -> Shape:
    procs = processes_per_node(run, slurm)
    nodes = world_size(run, slurm) // procs
    gpus = 0 if cpu_partition(slurm) else procs  # one GPU per process (train.nproc may use fewer than gpus_per_node)
    return Shape(nodes=nodes, tasks_per_node=procs, gpus_per_node=gpus, cpus_per_task=slurm.cpus_per_gpu,
                 mem_gb=slurm.mem_per_gpu_gb * procs, timeout_min=slurm.timeout_min)


def eval_shape(slurm: SlurmConfig) -> Shape:
    gpus = max(1, slurm.eval_gpus)
    return Shape(nodes=1, tasks_per_node=1, gpus_per_node=0 if cpu_partition(slurm) else slurm.eval_gpus,
                 cpus_per_task=slurm.cpus_per_gpu * gpus, mem_gb=slurm.mem_per_gpu_gb * gpus,
                 timeout_min=slurm.eval_timeout_min)


def report_shape(slurm: SlurmConfig) -> Shape:
    # tables and plots from jsonl files: one CPU, no GPU
    return Shape(nodes=1, tasks_per_node=1, gpus_per_node=0, cpus_per_task=1, mem_gb=min(8, slurm.mem_per_gpu_gb),
                 timeout_min=slurm.report_timeout_min)


def gres(slurm: SlurmConfig, gpus: int) -> Optional[str]:
    """'gpu:8' / 'gpu:a100:8'; None on a CPU partition or for a job without GPUs."""
    return None if cpu_partition(slurm) or not gpus else f"{slurm.gres}:{gpus}"


def python_command(slurm: SlurmConfig, rendered: bool = False) -> str:
    """The interpreter of the jobs: slurm.python, else this interpreter (submitit jobs, which share
    the launcher's file system) or `python` from the job's environment (hand-submitted scripts)."""
    if slurm.python:
        return slurm.python
    return "python" if rendered else shlex.quote(sys.executable)


def sbatch_time(timeout_min: int) -> str:
    """Minutes -> Slurm's D-HH:MM:SS."""
    d, rest = divmod(int(timeout_min), 24 * 60)
    h, m = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:00"


def study_job_prefix(study_name: str) -> str:
    """Job names start with this, so `squeue -n` and sacct show which study a job belongs to."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in study_name)
    return f"lf-{safe}"[:40]
