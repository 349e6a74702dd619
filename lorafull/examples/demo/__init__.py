"""The demo study's data, made offline and deterministically (configs/demo.yaml calls it):

    study.prepare: "lorafull.examples.demo:prepare"      # launch.grid calls prepare(study) before planning
    python -m lorafull.examples.demo STUDY_DIR            # or make the files by hand

writes, under STUDY_DIR/data/:

    corpus.jsonl          pre-training documents {"text"} about a made-up world (world.py)
    tokenizer/            byte-level BPE trained on the corpus (lorafull.models.tiny.build_tokenizer)
    instructions.jsonl    instruction data, five classes with checkable answers, ~1/3 Chinese (tasks.py);
                          runs take num_samples subsets of it (the study's data scales)
    math.jsonl            math word problems only: the incremental stage (BELLE's school_math)
    eval.jsonl            held-out eval set in BELLE's fields {"id", "question", "class", "std_answer"}
    tasks/target_<class>.jsonl   one generation task per class (more held-out items), analysis targets
    tasks/facts_en.jsonl, tasks/facts_zh.jsonl   choice tasks about the corpus facts, forgetting sources
    manifest.json         what was made, from which seed and sizes; a rerun with the same ones is a no-op
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from lorafull.examples.demo import tasks, world
from lorafull.generated import already_made, write_files

VERSION = 4  # bump when the generators change, so existing demo data is remade
SEED = 20230401
SIZES = {
    "corpus_docs": 2400,
    "instructions": 2400,
    "math": 1200,
    # 40 eval items per class (200 in all). Not more: held-out questions never appear in training, and
    # the classification class has only 104 distinct questions (80 held out left it 4 to train on)
    "eval_per_class": 40,
    "target_per_class": 10,
    "vocab_size": 1024,
}
# BELLE's data has little math; the incremental stage adds it. The general mix mirrors that.
GENERAL_WEIGHTS = {"math": 0.08, "rewrite": 0.23, "extract": 0.23, "classification": 0.23, "closed qa": 0.23}


def make_data(data_dir: str | os.PathLike, seed: int = SEED, sizes: dict | None = None) -> Path:
    """Write every demo file into data_dir (skipped when manifest.json says they are already there)."""
    data_dir = Path(data_dir)
    sizes = {**SIZES, **(sizes or {})}
    recipe = {"version": VERSION, "seed": seed, "sizes": sizes}
    if already_made(data_dir, recipe):
        return data_dir

    taken: set[str] = set()
    eval_items = tasks.held_out(seed + 10, sizes["eval_per_class"], taken)
    target_items = tasks.held_out(seed + 11, sizes["target_per_class"], taken)
    general = tasks.instructions(seed + 20, sizes["instructions"], GENERAL_WEIGHTS, exclude=taken)
    math = tasks.instructions(seed + 21, sizes["math"], {"math": 1.0}, exclude=taken)
    docs = world.corpus(seed, sizes["corpus_docs"])
    choice = world.choice_tasks(seed)

    files = {"corpus.jsonl": docs, "instructions.jsonl": general, "math.jsonl": math, "eval.jsonl": eval_items}
    for cls in tasks.CLASSES:
        files[f"tasks/target_{cls.replace(' ', '_')}.jsonl"] = [t for t in target_items if t["class"] == cls]
    for name, items in choice.items():
        files[f"tasks/{name}.jsonl"] = items
    from lorafull.models.tiny import build_tokenizer

    # the base model's tokenizer comes from its pre-training text only, as a real one does: instruction
    # data is cut into pieces the base model has seen
    build_tokenizer([d["text"] for d in docs], data_dir / "tokenizer", vocab_size=sizes["vocab_size"])

    write_files(data_dir, recipe, files)
    return data_dir


def prepare(study) -> Path:
    """study.prepare hook: the demo data under STUDY_DIR/data/ (the study's paths point there)."""
    return make_data(Path(study.output_dir) / "data")


def main(argv: list[str] | None = None) -> int:
    from lorafull.runs import command_parser

    parser = command_parser("python -m lorafull.examples.demo", __doc__, "python -m lorafull.examples.demo studies/demo")
    parser.add_argument("study_dir", type=Path, metavar="STUDY_DIR", help="the study folder: writes STUDY_DIR/data/ "
                        "(made if missing)")
    out = make_data(parser.parse_args(sys.argv[1:] if argv is None else argv).study_dir / "data")
    print(json.dumps(json.loads((out / "manifest.json").read_text())["files"], indent=1))
    return 0
