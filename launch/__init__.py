"""launch: submit a study's runs as Slurm job arrays (or run them here), watch, retry and cancel them.

    python -m launch.grid configs/demo.yaml [dotted.key=value ...] [--dry-run|--status|--retry|--cancel]
    python -m launch.render configs/demo.yaml OUT_DIR        # plain sbatch scripts for the same study
"""
