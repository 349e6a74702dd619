"""Stop signals of a training: SIGUSR2 and SIGTERM (Slurm's preemption and time-limit signals, and
scancel's) and SIGINT (Ctrl-C, the local launcher's stop).

Library module (no command): lorafull.train.trainer holds a StopGate over its whole run.

Once the training loop runs, a signal only asks it to save at its next step boundary (the loop polls
`requested`). Before that (imports, loading the model and data, resuming from a checkpoint, DeepSpeed's
start) nothing new exists to save, and loading can take longer than a scheduler waits between its
SIGTERM and its SIGKILL (Slurm's KillWait: 30 s by default, a few seconds on some clusters). Waiting for
the loop there ended in a SIGKILL, a job that exited 137 and a run marked failed. So a signal before the
loop stops the process at once (StopBeforeTraining), and the run is reported as preempted (requeued) or
interrupted, as a stop in the loop is.
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from lorafull.runs import RunPaths, Stage, status as run_status
from lorafull.train.checkpoint import Checkpoints, checkpoint_step
from lorafull.train.distributed import EXIT_INTERRUPTED, EXIT_REQUEUE

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class StopBeforeTraining(BaseException):
    """A stop signal before the training loop ran (a BaseException: no `except Exception` on the way out
    takes it for a failure)."""

    def __init__(self, signum: int):
        super().__init__(f"{signal.Signals(signum).name} before training started")
        self.signum = signum


class StopGate:
    """The stop signals' handler while a training process runs (a context manager: the handlers it
    replaced come back on exit)."""

    def __init__(self):
        self.requested = False
        self.interrupted = False  # SIGINT: the user's stop, not the scheduler's preemption
        self.loop_running = False  # set by the training loop: from then on a signal waits for a step boundary
        self.settled = False  # the run ended (or is stopping): no signal raises any more
        self._previous: dict = {}

    def __enter__(self) -> "StopGate":
        self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> bool:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    def _on_signal(self, signum, frame) -> None:
        self.requested = True
        self.interrupted = self.interrupted or signum == signal.SIGINT
        if not (self.loop_running or self.settled):
            self.settled = True  # once: a second signal does not cut the stop's own status write short
            raise StopBeforeTraining(signum)


def report_stop(run_dir: Path, step: int, interrupted: bool, is_main: bool, what: str) -> int:
    """status.json and one line for a stopped training; its exit code (75: requeue me; 130: the user's
    stop, the same command resumes). `what`: what was saved, for the line."""
    if is_main and interrupted:
        run_status.interrupted(run_dir, Stage.TRAIN, f"stopped at step {step} ({what}): the same command resumes it",
                               preempted=False, step=step)
        print(f"interrupted: {what} (step {step}); the same command resumes it", file=sys.stderr)
    elif is_main:
        run_status.preempted(run_dir, step=step)
        print(f"preempted: {what} (step {step}); exit {EXIT_REQUEUE} to be requeued", file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_REQUEUE


def report_early_stop(run_dir: Path, stop: StopBeforeTraining, is_main: bool) -> int:
    """A stop before the loop: the run resumes from its latest complete checkpoint (or starts over)."""
    latest = Checkpoints(RunPaths.of(run_dir).checkpoints).latest()
    return report_stop(run_dir, checkpoint_step(latest) if latest else 0, stop.signum == signal.SIGINT, is_main,
                       "stopped while loading, nothing new to save")
