"""Merge a LoRA run's adapter into its base: RUN_DIR/merged/ is a plain Hugging Face model folder.

    python -m lorafull.models.merge RUN_DIR

Chained runs (model.name_or_path: run:<lora run>) and generation backends that want one model folder
(vLLM) use it. Saved in the run's model.dtype, with the tokenizer.
A full fine-tune has nothing to merge: its final/ already is such a folder (and is what merge_run returns).
"""
from __future__ import annotations

import sys
from typing import Optional

from lorafull.models.load import merge_run  # the merge lives beside the loader (run: parents need it)
from lorafull.runs import command_parser, error_line, not_a_run_folder


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("python -m lorafull.models.merge", __doc__,
                            "python -m lorafull.models.merge studies/demo/runs/lora-num_samples600-seed1-ff88b81b")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a trained run folder (its final/ is merged)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        print(merge_run(args.run_dir))
    except Exception as e:  # noqa: BLE001 -- one line naming what is wrong
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
