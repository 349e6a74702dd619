"""Before launch: parameters, memory per GPU, fit, step time and hours of every run of a study.

    python -m lorafull.plan STUDY.yaml
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'DTYPE_BYTES': 'memory',
    'GB': 'memory',
    'memory_gb': 'memory',
    'world_size': 'memory',
    'SAMPLE_RECORDS': 'tokens',
    'COUNT_LINES_MAX_BYTES': 'tokens',
    'token_estimate': 'tokens',
    'FORMULA': 'table',
    'COLUMNS': 'table',
    'plan_lines': 'table',
    'format_plan': 'table',
    'estimates': 'cache',
    'write_planned': 'cache',
    'resolve_arch': 'params',
    'arch_dict': 'params',
    'count_params': 'params',
    'flops_per_token': 'steptime',
    'step_time': 'steptime',
    'PRESETS': 'hardware',
    'resolve_hardware': 'hardware',
    'shape_of': 'calibration',
    'shape_key': 'calibration',
    'calibration_path': 'calibration',
    'load_calibration': 'calibration',
    'estimate_run': 'estimate',
    'estimate_study': 'estimate',
    'peak_memory_gb': 'estimate',
    'is_auto': 'auto',
    'choose': 'auto',
    'settle_auto': 'auto',
    'settle_in_plan': 'auto',
})
