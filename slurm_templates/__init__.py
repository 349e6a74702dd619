"""The sbatch templates of launch.render (train_array.sbatch, eval.sbatch, report.sbatch), shipped as
package data so that an ordinary `pip install .` renders a study's scripts too.

Library package (no command): launch.render reads the templates from this folder.
"""
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent
