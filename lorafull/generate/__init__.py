"""Generation on the eval set -> RUN_DIR/responses.jsonl.

    python -m lorafull.generate RUN_DIR
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'GREEDY_BELOW': 'stage',
    'REQUIRED_FIELDS': 'stage',
    'EvalSetError': 'stage',
    'read_eval_set': 'stage',
    'run_eval_items': 'stage',
    'pending_items': 'stage',
    'choose_backend': 'stage',
    'left_pad': 'stage',
    'generate_batch': 'stage',
    'load_for_generation': 'stage',
    'run_hf': 'stage',
    'run_vllm': 'stage',
    'vllm_setup': 'stage',
    'compare_responses': 'stage',
    'generate_run': 'stage',
    'describe': 'stage',
})
