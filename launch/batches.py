"""Judge batches (eval.judge.mode: batch) seen from the launcher: `launch.grid CONFIG --status` polls the
study's shared judge batches once (lorafull.judge.batch_pool.poll_study: one call per batch in flight,
whatever the number of runs; no model is loaded). A run whose every request is answered is scored and
its evaluation completed in this process (python -m lorafull.evaluate finds generation done and only
judges, then runs the analyses); the others stay "waiting", and the pool's line says what they wait for.
Once every run is settled, --status schedules the report.
"""
from __future__ import annotations

from lorafull.config import Study
from lorafull.runs import Stage, error_line, status as run_status


def poll_judge_batches(study: Study) -> tuple[list[str], int]:
    """One line per judge batch pool and per run it finished (or the error), and how many finished."""
    runs = [(study.run_dir(run), run.eval.judge) for run in study.runs]
    if not any(cfg.kind == "openai" and cfg.mode == "batch" for _, cfg in runs):
        return [], 0
    from lorafull.judge.batch import STATE_FILE
    from lorafull.judge.batch_pool import poll_study

    polled = poll_study(runs)
    # runs judged by an earlier version keep a batch of their own: their judge moves it into the pool
    earlier = [run_dir for run_dir, _ in runs if (run_dir / STATE_FILE).exists()]
    notes, finished = list(polled.notes), 0
    for run_dir in dict.fromkeys(polled.settled + earlier):
        from lorafull.evaluate import evaluate_run  # loads the judge stack only when a batch exists

        try:
            result = evaluate_run(run_dir, progress=False)
        except Exception as e:  # noqa: BLE001 -- one line per run; the others are still finished
            run_status.failed(run_dir, Stage.EVALUATE, error=error_line(e))
            notes.append(f"{run_dir.name}: error: {error_line(e)}")
            continue
        if result["judge"].get("waiting"):
            notes.append(f"{run_dir.name}: {result['judge']['waiting']}")
        else:
            finished += 1
            notes.append(f"{run_dir.name}: judge batch finished, scores written")
    return notes, finished
