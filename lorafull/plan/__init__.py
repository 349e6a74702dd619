"""Before launch: parameters, memory per GPU, fit and GPU-hours of every run of a study.

    python -m lorafull.plan STUDY.yaml
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'DTYPE_BYTES': 'estimate',
    'GB': 'estimate',
    'SAMPLE_RECORDS': 'estimate',
    'COUNT_LINES_MAX_BYTES': 'estimate',
    'FORMULA': 'estimate',
    'resolve_arch': 'estimate',
    'arch_dict': 'estimate',
    'count_params': 'estimate',
    'token_estimate': 'estimate',
    'world_size': 'estimate',
    'memory_gb': 'estimate',
    'flops_per_token': 'estimate',
    'estimate_run': 'estimate',
    'estimate_study': 'estimate',
    'COLUMNS': 'estimate',
    'plan_cells': 'estimate',
    'format_plan': 'estimate',
    'prepare_study': 'estimate',
    'is_auto': 'auto',
    'choose': 'auto',
    'settle_auto': 'auto',
    'settle_in_plan': 'auto',
})
