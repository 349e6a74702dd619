"""Base models (hub, folder, scratch architectures, run:<name>), training methods, parameter counts, merges.
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'DTYPES': 'load',
    'torch_dtype': 'load',
    'resolve_run_reference': 'load',
    'load_tokenizer': 'load',
    'load_final': 'load',
    'base_folder': 'load',
    'resolve_base_path': 'load',
    'prepare_base': 'load',
    'load_base': 'load',
    'TARGET_KEYWORDS': 'targets',
    'linear_module_names': 'targets',
    'resolve_target_modules': 'targets',
    'apply_method': 'load',
    'param_counts': 'load',
    'count_params_meta': 'load',
    'merge_run': 'load',
    'ARCH_DIR': 'tiny',
    'SPECIAL_TOKENS': 'tiny',
    'arch_config': 'tiny',
    'build_tokenizer': 'tiny',
    'build_tiny_model': 'tiny',
    'SAMPLE_TEXTS': 'tiny',
})
