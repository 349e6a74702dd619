"""The study's job ledger (STUDY_DIR/launch/jobs.json) and what the scheduler says about those jobs.

The ledger maps each run to the ids of its latest training and evaluation jobs ("<array>_<task>")
and keeps the latest report job, so --status, --cancel and a re-run ask Slurm about exactly this
study's jobs. It holds job ids and run names only: never settings or environment.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from lorafull.runs import LockBusy, file_lock, write_json_atomic

# squeue states of a job that has not ended yet
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                 "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED"}
# end states that mean the stage did not finish (sacct prints e.g. "CANCELLED by 0": first word counts)
BAD_END_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
                  "DEADLINE", "REVOKED"}


def launch_dir(study_dir: Path) -> Path:
    return Path(study_dir) / "launch"


class Ledger:
    """jobs.json: {"runs": {name: {"train": id, "eval": id, "executor": ...}}, "report": id,
    "submissions": [{"time", "kind", "job_id", "tasks", "runs"}]}."""

    def __init__(self, study_dir: Path):
        self.path = launch_dir(study_dir) / "jobs.json"
        self.data = {"runs": {}, "report": None, "submissions": []}
        if self.path.exists():
            try:
                self.data.update(json.loads(self.path.read_text()))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{self.path}:{e.lineno}: malformed job ledger ({e.msg}); move it away to start "
                                 "a new one (jobs it lists are then no longer tracked)") from None

    def run(self, name: str) -> dict:
        return self.data["runs"].get(name, {})

    def set_job(self, run_name: str, stage: str, job_id: Optional[str], **extra) -> None:
        entry = self.data["runs"].setdefault(run_name, {})
        entry[stage] = job_id
        entry.update(extra)

    def add_submission(self, kind: str, job_id: str, tasks: int, runs: list[str]) -> None:
        self.data["submissions"].append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "kind": kind,
                                         "job_id": job_id, "tasks": tasks, "runs": runs})

    def job_ids(self) -> set[str]:
        ids = {j for e in self.data["runs"].values() for k, j in e.items() if k in ("train", "eval") and j}
        if self.data.get("report"):
            ids.add(self.data["report"])
        return ids

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


@contextlib.contextmanager
def study_lock(study_dir: Path):
    """One submitting launcher per study at a time (two at once could submit a run twice)."""
    held = contextlib.ExitStack()
    try:
        held.enter_context(file_lock(launch_dir(study_dir) / ".lock", wait=False))
    except LockBusy as e:
        raise SystemExit(f"{e}: another launch.grid is submitting this study; wait for it to finish") from None
    with held:
        yield


# ---------------------------------------------------------------------------------------------
# Scheduler queries
# ---------------------------------------------------------------------------------------------
@dataclass
class JobInfo:
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ... or UNKNOWN
    reason: str = ""  # squeue's reason (Dependency, DependencyNeverSatisfied, ...) or sacct's exit code
    start: str = ""
    end: str = ""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def bad(self) -> bool:
        return self.state in BAD_END_STATES


def slurm_available() -> bool:
    """sbatch is installed and a controller answers: a laptop with Slurm's client tools but no
    cluster (or a stopped local one) runs the study locally instead of failing at submission."""
    return shutil.which("sbatch") is not None and slurm_controller_answers()


def slurm_controller_answers() -> bool:
    return shutil.which("scontrol") is not None and _run(["scontrol", "ping"], timeout_s=15) is not None


def _run(cmd: list[str], timeout_s: float = 60) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _base_ids(job_ids: Iterable[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids if j})


def expand_job_id(job_id: str) -> list[str]:
    """sacct/squeue print array tasks that never started folded, e.g. "89_[0-3%2]" or "89_[1,4]":
    unfold them into "89_0", ... so that every task can be looked up by its own id."""
    m = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(%\d+)?\]", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def query_jobs(job_ids: Iterable[str]) -> dict[str, JobInfo]:
    """State of each job id ("123" or "123_4"): squeue for jobs still queued or running (one call),
    sacct for the ones that ended. Ids the scheduler does not know are absent from the result."""
    job_ids = {j for j in job_ids if j}
    if not job_ids or not slurm_available():
        return {}
    bases = _base_ids(job_ids)
    info: dict[str, JobInfo] = {}
    # -r: one line per array task ("123_4"), also for pending tasks that Slurm keeps folded
    out = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(bases)])
    if out is None:  # squeue -j fails when one of the ids left slurmctld's memory: ask per job
        out = "".join(_run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", b]) or "" for b in bases)
    for line in out.splitlines():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        info[jid.strip()] = JobInfo(state=state.strip(), reason=reason.strip())
    missing = [j for j in job_ids if j not in info and not any(k.startswith(j + "_") for k in info)]
    if missing and shutil.which("sacct"):
        out = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode,Start,End", "-j",
                    ",".join(_base_ids(missing))])
        for line in (out or "").splitlines():
            parts = line.split("|")
            if len(parts) < 5 or parts[0] in info:
                continue
            state = parts[1].split()[0] if parts[1] else "UNKNOWN"
            for jid in expand_job_id(parts[0]):
                info.setdefault(jid, JobInfo(state=state, reason=parts[2], start=parts[3], end=parts[4]))
    return info


def job_state(info: dict[str, JobInfo], job_id: Optional[str]) -> Optional[JobInfo]:
    """The state of one job id; a plain id of an array stands for its tasks (active if any is)."""
    if not job_id:
        return None
    if job_id in info:
        return info[job_id]
    tasks = [v for k, v in info.items() if k.startswith(job_id + "_")]
    if not tasks:
        return None
    active = [t for t in tasks if t.active]
    return active[0] if active else tasks[-1]


def summarize_ids(job_ids: Iterable[str]) -> str:
    """["97_0", "97_1", "98_0", "99"] -> "97_[0-1] 98_[0] 99" (for messages)."""
    tasks: dict[str, list[int]] = {}
    plain = []
    for j in job_ids:
        base, _, task = j.partition("_")
        if task.isdigit():
            tasks.setdefault(base, []).append(int(task))
        else:
            plain.append(j)
    parts = []
    for base, ids in sorted(tasks.items()):
        ids.sort()
        ranges, start = [], ids[0]
        for a, b in zip(ids, ids[1:] + [None]):
            if b != a + 1:
                ranges.append(f"{start}-{a}" if a != start else f"{a}")
                start = b
        parts.append(f"{base}_[{','.join(ranges)}]")
    return " ".join(parts + sorted(plain)) or "-"


def cancel_jobs(job_ids: Iterable[str], timeout_s: float = 90.0) -> list[str]:
    """Stop the jobs for good and wait until Slurm has none of them queued or running. A running
    training takes scancel's SIGTERM as a preemption: it saves a checkpoint (which --retry resumes
    from) and its job body, seeing the job cancelled, does not requeue it. Should a job come back
    anyway (a requeue that raced the cancel), it is cancelled again."""
    ids = sorted({j for j in job_ids if j})
    deadline = time.monotonic() + timeout_s
    left = set(ids)
    while left and time.monotonic() < deadline:
        infos = {j: info for j, info in query_jobs(left).items() if info.active}
        left = set(infos)
        queued = [j for j, info in infos.items() if info.state != "COMPLETING"]
        if queued:
            subprocess.run(["scancel", *queued], check=False, capture_output=True, text=True)
        if left:
            time.sleep(1.0)
    return ids


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
