"""Where each run of a study stands: what its run folder says (lorafull.runs.classify_folder: config.yaml,
status.json, final/) joined with what the scheduler says about the jobs the ledger recorded for it.

States shown and acted on:
    new          never submitted (or stopped outside the launcher with a resumable checkpoint): submit
    trained      training done, evaluation never submitted: submit the evaluation
    queued       a job of the run waits in the queue          running   a job of the run runs
    done         trained and evaluated                         failed    a stage failed or its job ended
                                                                         badly: resubmitted with --retry
    waiting      its judge batch (eval.judge.mode: batch) runs at the provider: `--status` polls it
    interrupted  a local run stopped by Ctrl-C / SIGTERM: the same command resumes it (no --retry)
    superseded   the folder failed under settings the study no longer gives it: --retry sets it aside
                 (runs/.superseded/) and starts the run afresh
    conflict     the folder holds another signature: never overwritten, never submitted
"""
from __future__ import annotations

import os

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, RunConfig, Study, eval_is_current, run_signature_from_folder, study_signatures
from lorafull.runs import classify_folder, path_inside, read_status, status as run_status

from .jobs import JobInfo, Ledger, job_state, pid_alive

# the launcher's states, in the order --status counts them
STATES = ("done", "running", "queued", "waiting", "trained", "interrupted", "new", "failed", "superseded", "conflict")


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


def classify(view: RunView, ledger_entry: dict, infos: dict[str, JobInfo]) -> None:
    """Set view.state and view.detail from the folder (classify_folder) and the scheduler."""
    status = view.status
    folder = classify_folder(view.run_dir, status, eval_current=lambda: eval_is_current(view.run_dir, view.run))
    view.trained, view.evaluated, view.eval_stale = folder.trained, folder.evaluated, folder.eval_stale
    view.train_job, view.eval_job = ledger_entry.get("train"), ledger_entry.get("eval")
    view.train_info, view.eval_info = job_state(infos, view.train_job), job_state(infos, view.eval_job)

    if view.folder_signature and view.folder_signature != view.signature:
        _signature_changed(view)
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
    claimed = status.get("state")
    if local_pid and claimed in ("queued", "running") and not folder.evaluated and pid_alive(int(local_pid)):
        view.state, view.detail = claimed, f"local launcher pid {local_pid}"
        return
    if folder.state in ("done", "failed", "waiting"):
        view.state, view.detail = folder.state, folder.detail
        return
    bad = [(j, i) for j, i in ((view.train_job, view.train_info), (view.eval_job, view.eval_info)) if i and i.bad]
    if bad:
        j, i = bad[0]
        why = " (a job it depends on failed)" if i.state == "CANCELLED" and i.start in ("", "None", "Unknown") else ""
        view.state, view.detail = "failed", f"job {j} ended {i.state}{why}"
        return
    if folder.state == "running":
        view.state = "failed"
        view.detail = f"status.json says {status.get('stage', '?')} is running, but no job of this study runs it"
        return
    # a folder that says queued with no job of it left: submit again (from its checkpoint, if any)
    view.state = "new" if folder.state == "queued" else folder.state
    view.detail = folder.detail


def _signature_changed(view: RunView) -> None:
    """The folder holds another signature: a failed run with no trained model is superseded (--retry
    sets it aside); anything else is a conflict the user resolves."""
    changed = (f"{view.run_dir}/config.yaml has signature {view.folder_signature}, the study now gives "
               f"{view.signature}: its settings changed")
    if view.status.get("state") == run_status.State.FAILED and not view.trained:
        view.state = "superseded"
        view.detail = f"{changed}; --retry sets the failed folder aside and starts the run afresh"
    else:
        view.state = "conflict"
        view.detail = f"{changed}. Give the run a new name, or move the folder away"


def study_run_dir(study: Study, run) -> Path:
    """The run's folder, refused (one line) unless it lies under the study folder."""
    try:
        return path_inside(study.output_dir / "runs", study.run_dir(run), f"runs: name {run.name!r}")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def study_views(study: Study, ledger: Ledger, infos: dict[str, JobInfo]) -> list[RunView]:
    """One RunView per run, parents first (the study's order)."""
    sigs = study_signatures(study)
    views: list[RunView] = []
    by_name: dict[str, RunView] = {}
    for run in study.runs:
        run_dir = study_run_dir(study, run)
        view = RunView(run=run, signature=sigs[run.name], run_dir=run_dir, status=read_status(run_dir),
                       folder_signature=run_signature_from_folder(run_dir))
        classify(view, ledger.run(run.name), infos)
        views.append(view)
        by_name[run.name] = view
    for view in views:
        if view.parent in by_name:
            by_name[view.parent].children.append(view.name)
    return views


def counts(views: list[RunView]) -> str:
    c = {s: sum(v.state == s for v in views) for s in STATES}
    return ", ".join(f"{n} {s}" for s, n in c.items() if n) or "no runs"


def set_aside_failed(views: list[RunView]) -> list[str]:
    """--retry of a run that failed and whose settings or input files changed since (its data fixed in
    place, say): the folder holds no trained model to protect, only the failure and checkpoints of the
    old settings, so it moves to runs/.superseded/<name>-<old signature> and the run starts afresh.
    A run that finished training is never moved: that conflict stays the user's to resolve."""
    moved = []
    for v in views:
        if v.state != "superseded":
            continue
        dest = v.run_dir.parent / ".superseded" / f"{v.name}-{v.folder_signature}"
        k = 1
        while dest.exists():
            k += 1
            dest = dest.with_name(f"{v.name}-{v.folder_signature}-{k}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_status.superseded(v.run_dir, by=v.signature)
        os.replace(v.run_dir, dest)
        moved.append(f"{v.name} -> {dest}")
    return moved
