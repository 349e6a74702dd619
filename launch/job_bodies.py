"""What runs inside a Slurm job submitted by launch.grid (through submitit).

TrainJob: the batch step of a training task. It starts one `python -m lorafull.train RUN_DIR` process
per GPU on every node of the allocation with srun, and turns the training's "saved, please requeue"
exit (75) into a submitit checkpoint + `scontrol requeue`; the requeued task resumes from the checkpoint.

How the preemption / time-limit signal travels (checked on Slurm 22.05):
- `#SBATCH --signal=USR2@<signal_delay_s>` and `scancel --signal=USR2 <job>` signal every process of the
  job's *steps* but not the batch step: the srun-started training ranks get USR2, this process does not.
  The ranks save at the next step boundary and exit 75; srun returns 75; __call__ then raises USR2 in
  this process so that submitit's own handler runs the checkpoint() below and requeues the task (it
  also counts time-outs against slurm.max_requeues).
- `scancel --full` or `--signal=B:USR2` signal this process directly: submitit's handler calls
  checkpoint(), which passes the signal on to the training step and waits until it has saved and
  exited, before submitit requeues the task (requeueing earlier would kill a half-written checkpoint).
checkpoint() returns a *fresh* job object: no process handles, and no environment, are pickled.

StageJob: one stage process (`python -m lorafull.evaluate RUN_DIR`, `python -m lorafull.report
STUDY_DIR`); on preemption it stops the stage and requeues (stages resume from their jsonl files).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import submitit

from lorafull.train.distributed import EXIT_REQUEUE, rendezvous

# how long checkpoint() waits for the ranks to save after passing the signal on; Slurm kills the job
# signal_delay_s after its time-limit signal anyway
SAVE_WAIT_S = float(os.environ.get("LORAFULL_SAVE_WAIT_S", "600"))


class _Child:
    """A subprocess waited on by a helper thread, so that the main thread (where Python runs signal
    handlers) only ever sleeps and reads an attribute: no lock is held when submitit's handler runs."""

    def __init__(self, cmd: list[str], env: dict, new_session: bool = False):
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=new_session)
        self.returncode: Optional[int] = None
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        self.returncode = self.proc.wait()

    def wait(self, timeout_s: Optional[float] = None) -> Optional[int]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.returncode is None and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.2)
        return self.returncode


def _this_job() -> Optional[str]:
    """This job as scancel must name it: "<array>_<task>" in an array, because the raw SLURM_JOB_ID
    of an array's last task equals the array's id, and `scancel <array id>` would signal every task."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def _mark_failed(run_dir: str, stage: str, message: str) -> None:
    """A stage killed hard (OOM, node failure) cannot write its own failure: write it here."""
    from lorafull.runs import status as run_status

    run_status.failed(run_dir, stage, error=message, keep_earlier=True)


CANCEL_MARKER = ".cancel-requested"  # in the run folder: job ids launch.grid --cancel is about to scancel


def _cancelled(job_id: Optional[str], run_dir: str) -> bool:
    """True when this job is being cancelled (launch.grid --cancel or a plain scancel), whatever its
    processes still do. While the job's processes exit, Slurm shows it as COMPLETING, which hides the
    CANCELLED under it: launch.grid leaves a marker naming the job before it cancels, and sacct (when
    the cluster keeps accounting) already records "CANCELLED by <uid>"."""
    if not job_id:
        return False
    marker = Path(run_dir) / CANCEL_MARKER
    if marker.is_file() and {job_id, job_id.split("_")[0]} & set(marker.read_text().split()):
        return True
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=False)
    if "JobState=CANCELLED" in out.stdout:
        return True
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                          check=False)
    return acct.returncode == 0 and any(line.startswith("CANCELLED") for line in acct.stdout.split())


def _raise_requeue_signal() -> None:
    """Run submitit's checkpoint-and-requeue path, as if Slurm had signalled this process."""
    os.kill(os.getpid(), submitit.JobEnvironment._usr_sig())
    time.sleep(30)  # the handler runs at the next bytecode; it requeues and exits
    raise RuntimeError("submitit did not requeue the job after the training asked for it (exit 75)")


class TrainJob(submitit.helpers.Checkpointable):
    MODULE = "lorafull.train"  # what every rank runs: python -m MODULE RUN_DIR

    def __init__(self, run_dir: str, python: str, nodes: int, tasks_per_node: int, cpus_per_task: int):
        self.run_dir = str(run_dir)
        self.python = python
        self.nodes = nodes
        self.tasks_per_node = tasks_per_node
        self.cpus_per_task = cpus_per_task
        self._child: Optional[_Child] = None

    def command(self) -> list[str]:
        return ["srun", f"--nodes={self.nodes}", f"--ntasks-per-node={self.tasks_per_node}",
                f"--cpus-per-task={self.cpus_per_task}", "--unbuffered",
                *shlex.split(self.python), "-m", self.MODULE, self.run_dir, *self.extra_args()]

    def extra_args(self) -> list[str]:
        return []

    def environment(self) -> dict:
        env = dict(os.environ)  # secrets reach the ranks through the environment only
        addr, port = rendezvous(env)  # what each rank would derive itself; set here so the log shows it
        env.update(MASTER_ADDR=addr, MASTER_PORT=str(port))
        env.setdefault("OMP_NUM_THREADS", str(self.cpus_per_task))
        return env

    def __call__(self) -> dict:
        print(f"[launch] training {self.run_dir}: {shlex.join(self.command())}", flush=True)
        self._child = _Child(self.command(), self.environment())
        rc = self._child.wait()
        if rc == 0:
            return {"run_dir": self.run_dir, "state": "done"}
        if rc == EXIT_REQUEUE and _cancelled(_this_job(), self.run_dir):
            # scancel's SIGTERM reached the training first, which saved as for a preemption: a cancelled
            # job stays cancelled (launch.grid --cancel marks the run; --retry resumes it)
            print("[launch] training saved a checkpoint; the job was cancelled, so it is not requeued", flush=True)
            return {"run_dir": self.run_dir, "state": "cancelled"}
        if rc == EXIT_REQUEUE:
            print(f"[launch] training saved a checkpoint and asked to be requeued (exit {rc})", flush=True)
            _raise_requeue_signal()
        _mark_failed(self.run_dir, "train", f"training exited with code {rc} (see the job log and status.json)")
        raise RuntimeError(f"python -m {self.MODULE} {self.run_dir} exited with code {rc}")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        child = self._child
        if child is not None and child.returncode is None:
            # the signal reached this process, maybe not the ranks: pass it on to the job's steps
            job_id = _this_job()
            print(f"[launch] preemption signal: asking the training step of job {job_id} to save", flush=True)
            if job_id:
                subprocess.run(["scancel", f"--signal={submitit.JobEnvironment.USR_SIG}", job_id], check=False)
            rc = child.wait(SAVE_WAIT_S)
            print(f"[launch] training step ended with {rc} before the requeue", flush=True)
        return submitit.helpers.DelayedSubmission(self.fresh())

    def fresh(self) -> "TrainJob":
        return TrainJob(self.run_dir, self.python, self.nodes, self.tasks_per_node, self.cpus_per_task)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_child"} | {"_child": None}


class ProbeJob(TrainJob):
    """A calibration probe (launch.probe): the training's ranks and signals, a probe folder for a run
    folder, and the time of a few dozen steps instead of a model."""
    MODULE = "launch.probe"

    def __init__(self, run_dir: str, python: str, nodes: int, tasks_per_node: int, cpus_per_task: int,
                 warmup: int = 5):
        super().__init__(run_dir, python, nodes, tasks_per_node, cpus_per_task)
        self.warmup = warmup

    def extra_args(self) -> list[str]:
        return [str(self.warmup)]

    def fresh(self) -> "ProbeJob":
        return ProbeJob(self.run_dir, self.python, self.nodes, self.tasks_per_node, self.cpus_per_task, self.warmup)


class StageJob(submitit.helpers.Checkpointable):
    def __init__(self, python: str, module: str, path: str, stage: str):
        self.python = python
        self.module = module
        self.path = str(path)
        self.stage = stage  # status.json stage name when the process dies without writing one
        self._child: Optional[_Child] = None

    def command(self) -> list[str]:
        return [*shlex.split(self.python), "-m", self.module, self.path]

    def __call__(self) -> dict:
        print(f"[launch] {shlex.join(self.command())}", flush=True)
        # its own session: the preemption signal goes to this process, which decides what to do
        self._child = _Child(self.command(), dict(os.environ), new_session=True)
        rc = self._child.wait()
        if rc == 0:
            return {"path": self.path, "stage": self.stage, "state": "done"}
        if (Path(self.path) / "config.yaml").exists():
            _mark_failed(self.path, self.stage, f"{self.module} exited with code {rc} (see the job log)")
        raise RuntimeError(f"python -m {self.module} {self.path} exited with code {rc}")

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        child = self._child
        if child is not None and child.returncode is None:
            try:
                os.killpg(child.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if child.wait(60) is None:
                child.proc.kill()
        return submitit.helpers.DelayedSubmission(StageJob(self.python, self.module, self.path, self.stage))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_child"} | {"_child": None}


def main(argv: list[str] | None = None) -> int:
    """Not a command: the job bodies are pickled by launch.grid and run by submitit inside the jobs."""
    from lorafull.runs import command_parser

    parser = command_parser("python -m launch.job_bodies", "What runs inside a Slurm job (not a command of its own).",
                            "python -m launch.grid configs/demo.yaml    # submits these job bodies")
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
