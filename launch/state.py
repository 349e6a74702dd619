"""Where each run of a study stands: its run folder (config.yaml, status.json, final/) joined with
what the scheduler says about the jobs the ledger recorded for it.

States shown and acted on:
    new       never submitted (or stopped outside the launcher with a resumable checkpoint): submit
    interrupted  stopped by the user (Ctrl-C / SIGTERM to the local launcher) after saving: submitted
              again by the same command, from its checkpoint
    trained   training done, evaluation never submitted: submit the evaluation
    queued    a job of the run waits in the queue            running   a job of the run runs
    done      trained and evaluated                           failed    a stage failed or its job ended
                                                                        badly: resubmitted with --retry
    waiting   its judge batch (eval.judge.mode: batch) runs at the provider: `--status` polls it
    conflict  the folder holds another signature: never overwritten, never submitted
"""
from __future__ import annotations

import os

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorafull.config import (ConfigError, RunConfig, Study, eval_fingerprint, eval_is_current, run_signature_from_folder,
                             study_signatures)
from lorafull.runs import RunPaths, path_inside, read_status

from .jobs import JobInfo, Ledger, job_state, pid_alive

# status.json stage names written by `python -m lorafull.evaluate` and the stages it runs
EVAL_STAGES = ("evaluate", "generate", "judge", "analysis")


def train_done(run_dir: Path, status: dict) -> bool:
    final = RunPaths.of(run_dir).final
    # an HF folder (full), a peft adapter folder, or bottleneck adapters (lorafull.models.bottleneck)
    complete = any((final / f).exists() for f in ("config.json", "adapter_config.json", "bottleneck_config.json"))
    return complete and status.get("stages", {}).get("train") == "done"


def eval_done(status: dict) -> bool:
    stages = status.get("stages", {})
    if "evaluate" in stages:
        return stages["evaluate"] == "done"
    # an evaluate that records only its sub-stages: done when the last one it ran is done
    return status.get("stage") in EVAL_STAGES[1:] and status.get("state") == "done" and stages.get("judge") == "done"


@dataclass
class RunView:
    run: RunConfig
    signature: str
    run_dir: Path
    status: dict
    folder_signature: Optional[str]
    state: str = "new"
    detail: str = ""  # the error, or why a run is in its state
    train_job: Optional[str] = None
    eval_job: Optional[str] = None
    train_info: Optional[JobInfo] = None
    eval_info: Optional[JobInfo] = None
    trained: bool = False
    evaluated: bool = False
    eval_stale: bool = False  # evaluated, but under other eval settings (lorafull.config.fingerprint)
    children: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def parent(self) -> Optional[str]:
        return self.run.parent


class Fingerprints:
    """The eval fingerprint of each distinct eval section, computed once per call (runs of a sweep
    share one: hashing the eval set's path and settings 10,000 times is most of a --status)."""

    def __init__(self):
        self.memo: dict[tuple, str] = {}

    def current(self, run: RunConfig) -> str:
        key = (repr(run.eval), run.data.cache_dir)
        if key not in self.memo:
            self.memo[key] = eval_fingerprint(run)["fingerprint"]
        return self.memo[key]

    def is_current(self, run_dir: Path, run: RunConfig) -> bool:
        return eval_is_current(run_dir, run, self.current(run))


def classify(view: RunView, ledger_entry: dict, infos: dict[str, JobInfo],
             fingerprints: Optional[Fingerprints] = None) -> None:
    """Set view.state and view.detail from the folder and the scheduler."""
    status = view.status
    fingerprints = fingerprints or Fingerprints()
    view.trained = train_done(view.run_dir, status)
    # evaluated under the study's current eval settings; results of older ones are evaluated again
    view.eval_stale = view.trained and eval_done(status) and not fingerprints.is_current(view.run_dir, view.run)
    view.evaluated = view.trained and eval_done(status) and not view.eval_stale
    view.train_job, view.eval_job = ledger_entry.get("train"), ledger_entry.get("eval")
    view.train_info, view.eval_info = job_state(infos, view.train_job), job_state(infos, view.eval_job)
    folder_state = status.get("state")

    if view.folder_signature and view.folder_signature != view.signature:
        view.state = "conflict"
        view.detail = (f"{view.run_dir}/config.yaml has signature {view.folder_signature}, the study now gives "
                       f"{view.signature}: its settings changed. Give the run a new name, or move the folder away")
        return
    active = [i for i in (view.train_info, view.eval_info) if i and i.active]
    if active:
        view.state = "running" if any(i.state == "RUNNING" for i in active) else "queued"
        # squeue's reason: Dependency, BeginTime (requeued), Priority, Resources, ...
        view.detail = next((i.reason for i in active if i.reason and i.reason != "None"), "")
        if status.get("preempted"):
            reason = f" ({view.detail})" if view.detail else ""
            view.detail = f"preempted at step {status.get('step', '?')}, requeued{reason}"
        return
    local_pid = ledger_entry.get("local_pid")
    if (local_pid and folder_state in ("queued", "running", None) and int(local_pid) != os.getpid()
            and pid_alive(int(local_pid)) and not view.evaluated):  # (None: waits for its turn there)
        view.state, view.detail = folder_state or "queued", f"local launcher pid {local_pid}"
        return
    if view.evaluated:
        view.state = "done"
        return
    if folder_state == "failed":
        view.state, view.detail = "failed", f"{status.get('stage', '?')}: {status.get('error') or 'failed'}"
        return
    if folder_state == "interrupted":
        where = f"at step {status['step']}" if status.get("stage", "train") == "train" and "step" in status else \
            f"in {status.get('stage', '?')}"
        view.state, view.detail = "interrupted", f"stopped {where}: the same command resumes it"
        return
    if folder_state == "waiting" and fingerprints.is_current(view.run_dir, view.run):  # else: evaluate anew
        view.state, view.detail = "waiting", status.get("waiting_for") or "waiting for the judge batch"
        return
    bad = [(j, i) for j, i in ((view.train_job, view.train_info), (view.eval_job, view.eval_info)) if i and i.bad]
    if bad:
        j, i = bad[0]
        why = " (a job it depends on failed)" if i.state == "CANCELLED" and i.start in ("", "None", "Unknown") else ""
        view.state, view.detail = "failed", f"job {j} ended {i.state}{why}"
        return
    if folder_state == "running":
        view.state = "failed"
        view.detail = f"status.json says {status.get('stage', '?')} is running, but no job of this study runs it"
        return
    if view.trained:
        view.state, view.detail = "trained", ("eval settings changed since it was scored: evaluate again (the old "
                                              "results move to eval_history/)" if view.eval_stale
                                              else "evaluation not submitted yet")
        return
    view.state = "new"
    if folder_state == "queued" and status.get("preempted"):
        view.detail = f"stopped at step {status.get('step', '?')}: resumes from its checkpoint"


def study_run_dir(study: Study, run) -> Path:
    """The run's folder, refused (one line) unless it lies under the study folder."""
    try:
        return path_inside(study.output_dir / "runs", study.run_dir(run), f"runs: name {run.name!r}")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def signatures(study: Study) -> dict[str, str]:
    """name -> signature: those load_study computed while the runs are as loaded, else computed now."""
    if study.signatures and len(study.signatures) == len(study.runs) and all(r.name in study.signatures
                                                                              for r in study.runs):
        return study.signatures
    return study_signatures(study)


def study_views(study: Study, ledger: Ledger, infos: dict[str, JobInfo]) -> list[RunView]:
    """One RunView per run, parents first (the study's order)."""
    sigs = signatures(study)
    views: list[RunView] = []
    by_name: dict[str, RunView] = {}
    fingerprints = Fingerprints()
    for run in study.runs:
        run_dir = study_run_dir(study, run)
        view = RunView(run=run, signature=sigs[run.name], run_dir=run_dir, status=read_status(run_dir),
                       folder_signature=run_signature_from_folder(run_dir))
        classify(view, ledger.run(run.name), infos, fingerprints)
        views.append(view)
        by_name[run.name] = view
    for view in views:
        if view.parent in by_name:
            by_name[view.parent].children.append(view.name)
    return views


def counts(views: list[RunView]) -> str:
    order = ("done", "running", "queued", "waiting", "trained", "interrupted", "new", "failed", "conflict")
    c = {s: sum(v.state == s for v in views) for s in order}
    return ", ".join(f"{n} {s}" for s, n in c.items() if n) or "no runs"


def set_aside_failed(views: list[RunView]) -> list[str]:
    """--retry of a run that failed and whose settings or input files changed since (its data fixed in
    place, say): the folder holds no trained model to protect, only the failure and checkpoints of the
    old settings, so it moves to runs/.superseded/<name>-<old signature> and the run starts afresh.
    A run that finished training is never moved: that conflict stays the user's to resolve."""
    moved = []
    for v in views:
        if v.state != "conflict" or v.status.get("state") != "failed" or v.trained:
            continue
        dest = v.run_dir.parent / ".superseded" / f"{v.name}-{v.folder_signature}"
        k = 1
        while dest.exists():
            k += 1
            dest = dest.with_name(f"{v.name}-{v.folder_signature}-{k}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(v.run_dir, dest)
        moved.append(f"{v.name} -> {dest}")
    return moved
