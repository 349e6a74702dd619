"""One training loop for full FT and LoRA under DeepSpeed ZeRO or plain torch; checkpoints; metrics.

    python -m lorafull.train RUN_DIR
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'EXIT_PREEMPTED': 'trainer',
    'Trainer': 'trainer',
    'is_done': 'trainer',
    'lr_lambda': 'schedule',
    'lr_multiplier': 'schedule',
    'build_optimizer': 'engine',
    'TorchEngine': 'engine',
    'DeepSpeedEngine': 'engine',
    'Checkpoints': 'checkpoint',
    'safe_load': 'checkpoint',
    'DistEnv': 'distributed',
    'first_host': 'distributed',
    'port_from_job_id': 'distributed',
    'rendezvous': 'distributed',
    'EXIT_REQUEUE': 'distributed',
    'detect_env': 'distributed',
    'torchrun_command': 'distributed',
    'ds_config': 'distributed',
    'grad_accumulation': 'distributed',
    'MetricsLog': 'metrics',
    'BatchOrder': 'order',
    'seed_everything': 'order',
    'StabilityMonitor': 'instability',
    'prepare_base_model': 'speed',
    'finish_model': 'speed',
    'enable_fused_kernels': 'speed',
})
