"""Evaluate one run: generate -> judge -> analyses (the launcher's eval job).

    python -m lorafull.evaluate RUN_DIR
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'evaluate_run': 'stage',
    'wants_analyses': 'stage',
    'run_analyses_if_asked': 'stage',
    'failed_stage': 'stage',
    'describe': 'stage',
})
