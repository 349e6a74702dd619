"""Judge batches (eval.judge.mode: batch) seen from the launcher: `launch.grid CONFIG --status` polls the
batch of every run that has one. Polling and scoring from the reply cache load no model, so they run in
the launcher's process (a login node allows that); a finished batch leaves its run judged, and --status
then submits a short eval job for it (python -m lorafull.evaluate finds generation and judging done and
runs what is left: the analyses, which load models) -- or the local executor runs it here. A batch still
running leaves the run "waiting". Once every run is settled, the report follows.
"""
from __future__ import annotations

from lorafull.config import Study
from lorafull.runs import Stage, error_line, status as run_status


def poll_judge_batches(study: Study) -> tuple[list[str], list[str]]:
    """One line per run with a judge batch (still running, finished, or the error), and the names of
    the runs whose batch finished."""
    from lorafull.judge.batch import STATE_FILE

    notes, finished = [], []
    for run in study.runs:
        run_dir = study.run_dir(run)
        if not (run_dir / STATE_FILE).exists():
            continue
        from lorafull.judge.stage import judge_run  # the judge stack only when a batch exists; no model

        try:
            summary = judge_run(run_dir, progress=False)
        except Exception as e:  # noqa: BLE001 -- one line per run; the others are still polled
            run_status.failed(run_dir, Stage.EVALUATE, error=error_line(e))
            notes.append(f"{run.name}: error: {error_line(e)}")
            continue
        if summary.get("waiting"):
            notes.append(f"{run.name}: {summary['waiting']}")
        else:
            finished.append(run.name)
            notes.append(f"{run.name}: judge batch finished, scores written; its evaluation's last steps follow")
    return notes, finished
