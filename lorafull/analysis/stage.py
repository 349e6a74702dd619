"""The analyses of one finished run: everything the study's `analysis` section asks for.

    python -m lorafull.analysis tasks RUN_DIR       # what `python -m lorafull.evaluate` calls last

tasks (+ the base model, + checkpoints) -> RUN_DIR/analysis/tasks.json (lorafull.analysis.forgetting);
spectrum -> spectrum.json (lorafull.analysis.spectrum); instability -> instability.json
(lorafull.analysis.instability). The first two load models: they run in the eval job, never on a
login node.
"""
from __future__ import annotations

import os
from pathlib import Path

from lorafull.analysis.forgetting import evaluate_run_tasks
from lorafull.analysis.instability import run_instability
from lorafull.config import load_study_settings, study_dir_of_run
from lorafull.runs import RunPaths, write_json_atomic


def run_analyses(run_dir: str | os.PathLike) -> Path:
    """Every analysis the study's `analysis` section asks for, on one finished run:
    tasks (+ base, + checkpoints) -> RUN_DIR/analysis/tasks.json; spectrum -> spectrum.json;
    instability -> instability.json (always: it only reads metrics.jsonl). Returns the analysis folder."""
    run_dir = Path(run_dir).resolve()
    settings = load_study_settings(study_dir_of_run(run_dir))
    analysis = settings.analysis
    paths = RunPaths.of(run_dir)
    write_json_atomic(paths.analysis / "instability.json", run_instability(run_dir, analysis.spike_factor))
    specs = analysis.target_tasks + analysis.source_tasks
    if specs:
        write_json_atomic(paths.analysis / "tasks.json", evaluate_run_tasks(run_dir, analysis))
    if analysis.spectrum:
        from lorafull.analysis.spectrum import analyse_run

        analyse_run(run_dir)
    return paths.analysis
