"""lorafull: full-parameter vs LoRA fine-tuning studies, end to end, from one YAML file."""
__version__ = "0.1.0"
