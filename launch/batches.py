"""Judge batches (eval.judge.mode: batch) seen from the launcher: `launch.grid CONFIG --status` polls the
batch of every run that has one. A finished batch is scored and the run's evaluation completed in this
process (python -m lorafull.evaluate finds generation done and only judges, then runs the analyses);
a batch still running leaves the run "waiting". Once every run is settled, --status schedules the report.
"""
from __future__ import annotations

from lorafull.config import Study
from lorafull.runs import Stage, error_line, status as run_status


def poll_judge_batches(study: Study) -> tuple[list[str], int]:
    """One line per run with a judge batch (still running, finished, or the error), and how many finished."""
    from lorafull.judge.batch import STATE_FILE

    notes, finished = [], 0
    for run in study.runs:
        run_dir = study.run_dir(run)
        if not (run_dir / STATE_FILE).exists():
            continue
        from lorafull.evaluate import evaluate_run  # loads the judge stack only when a batch exists

        try:
            result = evaluate_run(run_dir, progress=False)
        except Exception as e:  # noqa: BLE001 -- one line per run; the others are still polled
            run_status.failed(run_dir, Stage.EVALUATE, error=error_line(e))
            notes.append(f"{run.name}: error: {error_line(e)}")
            continue
        if result["judge"].get("waiting"):
            notes.append(f"{run.name}: {result['judge']['waiting']}")
        else:
            finished += 1
            notes.append(f"{run.name}: judge batch finished, scores written")
    return notes, finished
