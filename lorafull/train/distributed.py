"""Everything about processes and ranks, in one place: how this process was started, the launch of
more processes, collectives, and the DeepSpeed (ZeRO) config. Model, data and loop code ask this
module; they never read RANK or SLURM_* themselves.

A training job starts in one of three ways (python -m lorafull.train RUN_DIR in each):
  (a) alone: one process; with train.nproc > 1 it starts torchrun over itself (and, inside a
      multi-node Slurm allocation with one task per node, a multi-node torchrun);
  (b) under torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are set;
  (c) under srun, one task per GPU: SLURM_PROCID / SLURM_NTASKS / SLURM_LOCALID give the ranks,
      MASTER_ADDR is the first host of SLURM_JOB_NODELIST (unless set), MASTER_PORT is derived from
      SLURM_JOB_ID (unless set), so every task of the job agrees without talking first.
rendezvous() is the one place that computes them (launch's job body uses it too), and EXIT_REQUEUE
is the one exit code that asks the job wrapper to requeue (the trainer, launch and the sbatch template).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from lorafull.config.resources import grad_accumulation  # noqa: F401 (the batch rule, re-exported for lorafull.train)

if TYPE_CHECKING:  # torch is imported inside the functions: launch reads the rendezvous without it
    import torch

# torch is imported inside the functions that use it: launch (submitting, rendering) reads the
# rendezvous and exit codes from this module and must start without loading torch


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str = "single"  # single | torchrun | slurm

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------------------------------------
# Which launch mode is this
# ---------------------------------------------------------------------------------------------
# The training exits with this code after saving a checkpoint on a preemption / time-limit signal
# (EX_TEMPFAIL, "try again later"): the job wrapper (sbatch script or submitit body) requeues the task.
EXIT_REQUEUE = 75
# A rendezvous port per job, derived from the job id: every node of a (local) cluster may share one
# network namespace, and two jobs on one node need different ports.
PORT_BASE, PORT_SPAN = 20000, 20000


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list: 'gpu[07-09,12],cpu1' -> 'gpu07'; 'n1,n2' -> 'n1'."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"SLURM_JOB_NODELIST: cannot parse {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]  # keeps zero padding: gpu[07-09] -> gpu07


def port_from_job_id(job_id: str | int) -> int:
    """A port every task of a job derives alike; array tasks have distinct job ids, so distinct ports."""
    return PORT_BASE + int(re.sub(r"\D", "", str(job_id)) or 0) % PORT_SPAN


def rendezvous(env=None) -> tuple[str, int]:
    """(MASTER_ADDR, MASTER_PORT) of a job, the one place they are computed: the values already in
    the environment, else the first host of the job's node list and the port of its job id, so every
    process of the job (srun tasks, torchrun nodes) agrees without talking first."""
    env = os.environ if env is None else env
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    addr = env.get("MASTER_ADDR") or (first_host(nodelist) if nodelist else "127.0.0.1")
    port = int(env.get("MASTER_PORT") or port_from_job_id(env.get("SLURM_JOB_ID", "0")))
    return addr, port


def _in_slurm_step() -> bool:
    # srun sets a step id; the batch script itself does not, so `python` in an sbatch script with
    # --ntasks=8 is one process, not eight
    return "SLURM_PROCID" in os.environ and ("SLURM_STEP_ID" in os.environ or "SLURM_STEPID" in os.environ)


def detect_env() -> DistEnv:
    """The ranks of this process; for srun tasks also sets the torch env:// variables."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                       "torchrun" if "TORCHELASTIC_RUN_ID" in env else "env")
    if _in_slurm_step() and int(env.get("SLURM_NTASKS", "1")) > 1:
        rank, world, local = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
        addr, port = rendezvous(env)
        env.update(MASTER_ADDR=addr, MASTER_PORT=str(port))
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        return DistEnv(rank, world, local, "slurm")
    return DistEnv()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_single_process_env() -> None:
    """DeepSpeed's init wants the env:// variables even for one process (else it tries mpi4py)."""
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def default_nproc() -> int:
    """Processes per node when train.nproc is not set: one per GPU, or 1 on the CPU."""
    import torch
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def use_cpu_accelerator() -> None:
    """Pick DeepSpeed's CPU accelerator explicitly when there is no GPU (before deepspeed is imported)."""
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


# ---------------------------------------------------------------------------------------------
# Mode (a): start torchrun over this module, forwarding preemption signals
# ---------------------------------------------------------------------------------------------
def torchrun_command(module_args: list[str], nproc: int) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}"]
    env = os.environ
    nnodes = int(env.get("SLURM_NNODES", "1"))
    if _in_slurm_step() and nnodes > 1 and int(env.get("SLURM_NTASKS", "1")) == nnodes:
        # one task per node in a multi-node allocation: a static multi-node torchrun
        master, port = rendezvous(env)
        cmd += [f"--nnodes={nnodes}", f"--node_rank={env.get('SLURM_NODEID', '0')}",
                f"--master_addr={master}", f"--master_port={port}"]
    else:
        cmd += ["--standalone"]
    return cmd + ["-m"] + module_args


def run_torchrun(module_args: list[str], nproc: int) -> int:
    """Run torchrun to completion. A SIGUSR2/SIGTERM sent to this process reaches the workers as
    SIGTERM (torchrun relays SIGTERM to its workers and gives them 30 s; it would die on SIGUSR2
    without telling them). Returns torchrun's exit code."""
    import torch
    env = dict(os.environ)
    if not torch.cuda.is_available():
        # N ranks share the cores: more threads per rank only oversubscribe them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen(torchrun_command(module_args, nproc), env=env)

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGUSR2, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
# Process group and collectives (no-ops with one process)
# ---------------------------------------------------------------------------------------------
def device_for(env: DistEnv) -> torch.device:
    import torch
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank)
        return torch.device("cuda", env.local_rank)
    return torch.device("cpu")


def init_deepspeed_distributed() -> None:
    """Start DeepSpeed's process group (nccl on GPUs, gloo on the CPU)."""
    import torch
    use_cpu_accelerator()
    set_single_process_env()
    import importlib

    import deepspeed

    # import_module, not `import deepspeed.comm.torch as m`: deepspeed.comm re-exports the real torch
    # under the name `torch`, which that statement would bind instead
    ds_torch_comm = importlib.import_module("deepspeed.comm.torch")
    if not torch.cuda.is_available() and hasattr(ds_torch_comm, "build_shm_op"):
        # The CPU backend JIT-compiles a shared-memory op (~45 s per fresh venv) that only serves
        # inference all-reduce (tensor-parallel serving); training collectives go through gloo.
        ds_torch_comm.build_shm_op = lambda: None
    deepspeed.init_distributed(verbose=False)


def is_initialized() -> bool:
    import torch
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def barrier() -> None:
    import torch
    if is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    import torch
    if is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when any rank says so: every rank stops (or saves) at the same step boundary."""
    import torch
    if not (is_initialized() and torch.distributed.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.all_reduce(t)
    return bool(t.item() > 0)


def destroy() -> None:
    import torch
    if is_initialized():
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# DeepSpeed config
# ---------------------------------------------------------------------------------------------
def ds_config(train, dtype: str, world_size: int, grad_accum: int, on_gpu: Optional[bool] = None) -> dict:
    """The DeepSpeed config of a run. The optimizer is ours (torch AdamW, passed to deepspeed.initialize)
    so both engines optimise alike and nothing is JIT-compiled, except DeepSpeedCPUAdam for GPU offload."""
    import torch
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    zero: dict = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        # final/ of a full fine-tune is one consolidated HF folder, gathered layer by layer on rank 0
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if train.offload and train.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if train.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    config = {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        "steps_per_print": 10 ** 9,  # we log ourselves
        "wall_clock_breakdown": False,
        # a torch optimizer under offload: fine on the CPU accelerator, where there is nothing to offload
        "zero_force_ds_cpu_optimizer": False,
        # ZeRO refuses a client optimizer it has not tested (our Lion) unless told; it only shards states
        "zero_allow_untested_optimizer": True,
    }
    if train.grad_clip and train.grad_clip > 0:
        config["gradient_clipping"] = train.grad_clip
    return config
