"""Evaluate one run: generate -> judge -> analyses (what the launcher's eval job calls).

    python -m lorafull.evaluate RUN_DIR

Checks what can fail cheaply first (the eval set reads, the judge has a key and a prompt for every
class) so a typo never costs a generation pass. Each step is resumable on its own, so a rerun after
preemption or a crash continues with the first unfinished one. The analyses run when the study's
analysis section asks for any (STUDY_DIR/study.yaml) and lorafull.analysis is installed.

With eval.judge.mode: batch the judge submits a batch and returns: status.json says "waiting" (stage
judge) and the command exits 0. Running it again (or `launch.grid CONFIG --status`) polls the batch;
once it has ended, the scores are written and the analyses run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from lorafull.config import load_run_config, load_study_settings, study_dir_of_run
from lorafull.generate.stage import generate_run, run_eval_items
from lorafull.judge.stage import check_judge_setup, judge_run
from lorafull.runs import Stage, read_status, run_stage_cli, status as run_status
from lorafull.tracking import log_eval_scores


def wants_analyses(run_dir: Path) -> bool:
    a = load_study_settings(study_dir_of_run(run_dir)).analysis
    return bool(a.target_tasks or a.source_tasks or a.spectrum or a.checkpoints)


def run_analyses_if_asked(run_dir: Path) -> bool:
    if not wants_analyses(run_dir):
        return False
    from lorafull.analysis.stage import run_analyses

    run_analyses(run_dir)
    return True


def evaluate_run(run_dir: str | Path, progress: bool = True) -> dict:
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    items = run_eval_items(run_dir, cfg)
    check_judge_setup(cfg.eval.judge, {it["class"] for it in items})
    # an evaluation under way is not done, also when an earlier one was (eval settings changed since):
    # launch.state reads stages.evaluate, so a failed or waiting re-evaluation never shows as done
    run_status.started(run_dir, Stage.EVALUATE)
    generated = generate_run(run_dir, progress=progress)
    summary = judge_run(run_dir, progress=progress)
    if summary.get("waiting"):  # a judge batch runs at the provider: status.json says waiting, not failed
        return {"generate": generated, "judge": summary, "analyses": False}
    log_eval_scores(run_dir, cfg, summary)  # into the training's TensorBoard / W&B / MLflow run
    analysed = run_analyses_if_asked(run_dir)
    run_status.done(run_dir, Stage.EVALUATE)
    return {"generate": generated, "judge": summary, "analyses": analysed}


def failed_stage(run_dir: Path) -> str:
    """The step to blame: one that started and did not finish, else evaluate itself."""
    status = read_status(run_dir)
    return status.get("stage") if status.get("state") == run_status.State.RUNNING else Stage.EVALUATE.value


def describe(run_dir: Path, result: dict) -> str:
    if result["judge"].get("waiting"):
        return f"{run_dir.name}: waiting: {result['judge']['waiting']}"
    avg = result["judge"]["average"]
    return (f"{run_dir.name}: average {'-' if avg is None else f'{avg:.4f}'}, "
            f"{result['judge']['unscored']} unscored, analyses {'run' if result['analyses'] else 'not asked'}")


def main(argv: list[str] | None = None) -> int:
    return run_stage_cli("evaluate", __doc__, evaluate_run, describe, argv, failed_stage=failed_stage)


if __name__ == "__main__":
    sys.exit(main())
