"""Typed settings of a study and of each run, loaded from YAML and checked at load; run signatures.

    python -m lorafull.config STUDY.yaml
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'save_run_config': 'files',
    'load_run_config': 'files',
    'run_signature_from_folder': 'files',
    'save_study_settings': 'files',
    'load_study_settings': 'files',
    'study_dir_of_run': 'files',
    'ModelConfig': 'schema',
    'MethodConfig': 'schema',
    'METHOD_KINDS': 'schema',
    'DataConfig': 'schema',
    'TrainConfig': 'schema',
    'JudgeConfig': 'schema',
    'EvalConfig': 'schema',
    'RunConfig': 'schema',
    'StudySection': 'schema',
    'SlurmConfig': 'schema',
    'PlanConfig': 'schema',
    'TaskSpec': 'schema',
    'AnalysisConfig': 'schema',
    'Study': 'schema',
    'StudySettings': 'schema',
    'ConfigError': 'typed',
    'to_dict': 'typed',
    'set_dotted': 'study',
    'parse_override': 'study',
    'signature_payload': 'study',
    'signature': 'study',
    'study_signatures': 'study',
    'validate_run': 'study',
    'load_study': 'study',
})
