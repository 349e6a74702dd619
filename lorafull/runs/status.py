"""A run's life cycle: status.json, written only by the named transitions below, and read back by one
classifier (what the folder says of the run; the launcher adds what the scheduler says).

Library module (no command).

    status.json  {"state", "stage", "error", "updated", "stages": {stage: state}, ...extra keys}

The transitions, and who calls them:
    queued(run, stage)           the launcher, before it submits the stage's job (or runs it here)
    started(run, stage)          a stage begins its work (training, generation, judging, an evaluation)
    preempted(run, step)         training saved a checkpoint on a preemption signal: requeued, resumes
    interrupted(run, stage, why) a local run stopped by Ctrl-C / SIGTERM: resumes with the same command
    waiting(run, stage, why)     the stage handed its work to an outside service (a judge batch)
    done(run, stage)             the stage finished
    failed(run, stage, error)    the stage failed: --retry resubmits it
    superseded(run, by)          the folder was set aside because the study's settings for it changed
Earlier keys are kept (a transition updates, never replaces), every string is redacted, and the file is
replaced atomically.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional

from lorafull.runs.paths import RunPaths, write_json_atomic
from lorafull.runs.secrets import redact_obj


class State(str, Enum):
    """status.json "state": the state of the whole run."""
    QUEUED = "queued"
    RUNNING = "running"
    # a stage handed its work to an outside service and is not done until it answers (a judge batch,
    # eval.judge.mode: batch); neither running here nor failed
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"
    # a local run stopped by the user with its checkpoint saved: the same command resumes it (no --retry)
    INTERRUPTED = "interrupted"
    # set aside under runs/.superseded/: the study now gives the run other settings
    SUPERSEDED = "superseded"


class Stage(str, Enum):
    """status.json "stage": what the state refers to."""
    TRAIN = "train"
    EVALUATE = "evaluate"  # generate -> judge -> analyses (python -m lorafull.evaluate)
    GENERATE = "generate"
    JUDGE = "judge"
    ANALYSIS = "analysis"
    PROBE = "probe"  # a calibration probe's folder (launch.probe)


STATES = tuple(s.value for s in State)
STAGES = tuple(s.value for s in Stage)
# the stages `python -m lorafull.evaluate` records: itself and the steps it runs
EVAL_STAGES = (Stage.EVALUATE.value, Stage.GENERATE.value, Stage.JUDGE.value, Stage.ANALYSIS.value)


def read_status(run_dir: str | os.PathLike) -> dict:
    path = RunPaths.of(run_dir).status
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _write(run_dir: str | os.PathLike, state: State, stage: Stage | str, error: Optional[str] = None,
           **extra) -> dict:
    """The one writer of status.json: only the transitions below call it."""
    state, stage = State(state), Stage(stage)
    status = read_status(run_dir)
    status.update(extra)
    status.update({"state": state.value, "stage": stage.value, "error": error,
                   "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    status.setdefault("stages", {})[stage.value] = state.value
    status = redact_obj(status)
    write_json_atomic(RunPaths.of(run_dir).status, status)
    return status


# ---- the transitions -------------------------------------------------------------------------------
def queued(run_dir, stage: Stage | str, **extra) -> dict:
    """The launcher is about to submit (or run here) the stage: written before sbatch, so a job that
    starts at once writes `running` after it, never before."""
    return _write(run_dir, State.QUEUED, stage, **extra)


def started(run_dir, stage: Stage | str, **extra) -> dict:
    return _write(run_dir, State.RUNNING, stage, **extra)


def preempted(run_dir, step: int, **extra) -> dict:
    """Training saved its checkpoint at `step` on a preemption signal and asks to be requeued."""
    return _write(run_dir, State.QUEUED, Stage.TRAIN, preempted=True, step=step, **extra)


def interrupted(run_dir, stage: Stage | str, why: str, **extra) -> dict:
    """A local run stopped by the user (Ctrl-C, SIGTERM) with what it had done saved: the same command
    resumes it."""
    return _write(run_dir, State.INTERRUPTED, stage, error=why, **extra)


def waiting(run_dir, stage: Stage | str, waiting_for: str, **extra) -> dict:
    return _write(run_dir, State.WAITING, stage, waiting_for=waiting_for, **extra)


def done(run_dir, stage: Stage | str, **extra) -> dict:
    return _write(run_dir, State.DONE, stage, **extra)


def failed(run_dir, stage: Stage | str, error: str, keep_earlier: bool = False, **extra) -> Optional[dict]:
    """The stage failed with `error` (one line). keep_earlier: a run already failed keeps its own, more
    precise line (a job body that sees its stage die writes only when the stage could not)."""
    if keep_earlier and read_status(run_dir).get("state") == State.FAILED.value:
        return None
    return _write(run_dir, State.FAILED, stage, error=error, **extra)


def superseded(run_dir, by: str, **extra) -> dict:
    """The folder is being set aside: the study now gives this run the settings of signature `by`."""
    stage = read_status(run_dir).get("stage") or Stage.TRAIN.value
    return _write(run_dir, State.SUPERSEDED, stage, superseded_by=by, **extra)


def write_status(run_dir, state: str, stage: str = "train", error: Optional[str] = None, **extra) -> dict:
    """Deprecated: code written before the named transitions. Kept so that such code still runs; it
    goes through the same writer. New code calls queued(), started(), done(), failed() ..."""
    return _write(run_dir, State(state), stage, error=error, **extra)


# ---- reading it back -------------------------------------------------------------------------------
def train_done(run_dir, status: dict) -> bool:
    """Training finished: status says so and final/ exists (training renames a complete folder into
    place, so final/ is never half written, whatever the method's save format)."""
    return status.get("stages", {}).get(Stage.TRAIN.value) == State.DONE.value and RunPaths.of(run_dir).final.is_dir()


def eval_done(status: dict) -> bool:
    stages = status.get("stages", {})
    if Stage.EVALUATE.value in stages:
        return stages[Stage.EVALUATE.value] == State.DONE.value
    # an evaluate that records only its sub-stages: done when the last one it ran is done
    return (status.get("stage") in EVAL_STAGES[1:] and status.get("state") == State.DONE.value
            and stages.get(Stage.JUDGE.value) == State.DONE.value)


@dataclass
class FolderView:
    """What a run folder says of its run, without asking anyone:
    new, queued, running, waiting, trained, done, failed, interrupted (see the launcher's states).
    `running` and `queued` are claims the launcher checks against the scheduler."""
    state: str
    detail: str
    trained: bool
    evaluated: bool
    eval_stale: bool  # evaluated, but under other eval settings (lorafull.config.fingerprint)


def classify_folder(run_dir, status: dict, eval_current: Callable[[], bool]) -> FolderView:
    """The folder's own view of the run. eval_current() says whether its eval results match the study's
    eval settings (asked only where it matters: it reads the eval set)."""
    trained = train_done(run_dir, status)
    stale = trained and eval_done(status) and not eval_current()
    evaluated = trained and eval_done(status) and not stale
    state = status.get("state")
    view = FolderView("new", "", trained, evaluated, stale)
    if evaluated:
        view.state = "done"
    elif state == State.FAILED.value:
        view.state, view.detail = "failed", f"{status.get('stage', '?')}: {status.get('error') or 'failed'}"
    elif state == State.WAITING.value and eval_current():  # else: evaluate anew
        view.state, view.detail = "waiting", status.get("waiting_for") or "waiting for the judge batch"
    elif state == State.RUNNING.value:
        view.state = "running"
    elif state == State.INTERRUPTED.value:
        view.state = "interrupted"
        view.detail = status.get("error") or "interrupted: the same command resumes it"
    elif trained:
        view.state = "trained"
        view.detail = ("eval settings changed since it was scored: evaluate again (the old results move to "
                       "eval_history/)" if stale else "evaluation not submitted yet")
    elif state == State.QUEUED.value:
        view.state = "queued"
        if status.get("preempted"):
            view.detail = f"stopped at step {status.get('step', '?')}: resumes from its checkpoint"
    return view
