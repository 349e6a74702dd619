"""Analyses beside the scores: learning vs forgetting on target/source tasks, spectra of the weight
change, training instability, learning-rate and data-size sensitivity.

    python -m lorafull.analysis spectrum RUN_DIR
    python -m lorafull.analysis tasks RUN_DIR          # everything the study's analysis section asks
    python -m lorafull.analysis instability RUN_DIR

Entry points for the other stages: run_analyses(run_dir) (analysis/stage.py, called by lorafull.evaluate) and
extend_report(study_dir, rows, report_dir) (lorafull.report). Imports are deferred so that
`import lorafull.analysis` stays cheap for the report.
"""
from __future__ import annotations


def run_analyses(run_dir):
    from lorafull.analysis.stage import run_analyses as _run

    return _run(run_dir)


def extend_report(study_dir, rows, report_dir):
    from lorafull.analysis.report_hook import extend_report as _extend

    return _extend(study_dir, rows, report_dir)


__all__ = ["run_analyses", "extend_report"]
