"""Judge batches (eval.judge.mode: batch) seen from the launcher: `launch.grid CONFIG --status` pumps the
study's shared judge batches once (lorafull.judge.batch_pool.poll_study: one call per batch in flight,
whatever the number of runs). A run whose every request is answered is scored from the reply cache in
this process -- polling and scoring load no model, so they may run on a login node -- and --status then
submits a short eval job for it (python -m lorafull.evaluate finds generation and judging done and runs
what is left: the analyses, which load models), or the local executor runs it here. The other runs stay
"waiting", and the pool's line says what they wait for. Once every run is settled, the report follows.
"""
from __future__ import annotations

from lorafull.config import Study
from lorafull.runs import Stage, error_line, status as run_status


def poll_judge_batches(study: Study) -> tuple[list[str], list[str]]:
    """One line per judge batch pool and per run it finished (or the error), and the names of the runs
    whose judging finished."""
    runs = {study.run_dir(run): (run.name, run.eval.judge) for run in study.runs}
    if not any(cfg.kind == "openai" and cfg.mode == "batch" for _, cfg in runs.values()):
        return [], []
    from lorafull.judge.batch import STATE_FILE
    from lorafull.judge.batch_pool import poll_study
    from lorafull.judge.stage import judge_run  # the judge stack only when batches exist; no model

    polled = poll_study([(run_dir, cfg) for run_dir, (_, cfg) in runs.items()])
    # runs judged by an earlier version keep a batch of their own: their judge moves it into the pool
    earlier = [run_dir for run_dir in runs if (run_dir / STATE_FILE).exists()]
    notes, finished = list(polled.notes), []
    for run_dir in dict.fromkeys(polled.settled + earlier):
        name = runs[run_dir][0] if run_dir in runs else run_dir.name
        try:
            summary = judge_run(run_dir, progress=False)
        except Exception as e:  # noqa: BLE001 -- one line per run; the others are still finished
            run_status.failed(run_dir, Stage.EVALUATE, error=error_line(e))
            notes.append(f"{name}: error: {error_line(e)}")
            continue
        if summary.get("waiting"):
            notes.append(f"{name}: {summary['waiting']}")
        else:
            finished.append(name)
            notes.append(f"{name}: judge batch finished, scores written; its evaluation's last steps follow")
    return notes, finished
