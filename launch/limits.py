"""The cluster's limits on what one submission may hold: the largest job array (MaxArraySize) and how
many jobs the user may have queued or running at once (the QOS's or association's MaxSubmitJobs).

Each comes from the study's settings when set there (slurm.max_array_size, slurm.max_submit_jobs),
else from the cluster: `scontrol show config` for MaxArraySize, `sacctmgr show assoc / show qos` for
the submit limit (of slurm.qos, else the association's default QOS). A cluster that does not say
(no accounting database, no permission) gets Slurm's default MaxArraySize and no submit limit, and
the plan says so. Every array task counts as one job against a submit limit, as Slurm counts it.

Library module (no command): launch.grid reads them once per call.
"""
from __future__ import annotations

import getpass
import re
import subprocess
from dataclasses import dataclass
from typing import Optional

from lorafull.config import SlurmConfig

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default: array indices 0 .. 1000


@dataclass(frozen=True)
class Limits:
    max_array_size: int  # most tasks in one array (indices 0 .. max_array_size - 1)
    max_submit_jobs: Optional[int]  # most jobs of this user queued or running at once; None: no limit known
    array_source: str  # where each came from, for the plan's note
    submit_source: str

    def describe(self) -> str:
        submit = (f"submit limit {self.max_submit_jobs} jobs ({self.submit_source})" if self.max_submit_jobs
                  else f"no submit limit ({self.submit_source})")
        return f"arrays of at most {self.max_array_size} tasks ({self.array_source}); {submit}"


def _run(cmd: list[str], timeout_s: float = 30) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def scontrol_max_array_size() -> Optional[int]:
    out = _run(["scontrol", "show", "config"])
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", out or "", re.M)
    return int(m.group(1)) if m else None


def _number(text: str) -> Optional[int]:
    return int(text) if text.strip().isdigit() else None


def sacctmgr_submit_limit(slurm: SlurmConfig, user: Optional[str] = None) -> tuple[Optional[int], str]:
    """(the smallest MaxSubmitJobs that applies to this user's jobs, where it was read); (None, why) when
    the accounting database does not say."""
    user = user or getpass.getuser()
    assoc = _run(["sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={user}",
                  "format=account,qos,defaultqos,maxsubmit"])
    if assoc is None:
        return None, "sacctmgr did not answer"
    rows = [line.split("|") for line in assoc.splitlines() if line.count("|") >= 3]
    if slurm.account:
        rows = [r for r in rows if r[0] == slurm.account] or rows
    if not rows:
        return None, f"no association of user {user} in sacctmgr"
    account, qos_list, default_qos, maxsubmit = rows[0][:4]
    qos = slurm.qos or default_qos or (qos_list if qos_list and "," not in qos_list else "normal")
    found = {}
    if _number(maxsubmit):
        found[f"association {account or user} MaxSubmitJobs"] = int(maxsubmit)
    qos_rows = _run(["sacctmgr", "-n", "-P", "show", "qos", "where", f"name={qos}", "format=name,maxsubmitpu"]) or ""
    for line in qos_rows.splitlines():
        name, _, value = line.partition("|")
        if name == qos and _number(value):
            found[f"QOS {qos} MaxSubmitJobsPerUser"] = int(value)
    if not found:
        return None, f"sacctmgr: no MaxSubmitJobs for user {user}, QOS {qos}"
    where = min(found, key=found.get)
    return found[where], where


def read_limits(slurm: SlurmConfig, ask: bool) -> Limits:
    """The limits from the settings, else from the cluster when `ask` (a controller answers)."""
    array, array_source = slurm.max_array_size, "slurm.max_array_size"
    if array is None:
        value = scontrol_max_array_size() if ask else None
        array, array_source = ((value, "MaxArraySize, scontrol show config") if value is not None
                               else (DEFAULT_MAX_ARRAY_SIZE, "Slurm's default MaxArraySize; not read from a cluster"))
    submit, submit_source = slurm.max_submit_jobs, "slurm.max_submit_jobs"
    if submit is None:
        submit, submit_source = sacctmgr_submit_limit(slurm) if ask else (None, "not read from a cluster")
    return Limits(max(1, array), submit, array_source, submit_source)
