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
from lorafull.runs import error_line


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m lorafull.models.merge RUN_DIR", file=sys.stderr)
        return 2
    try:
        print(merge_run(argv[0]))
    except Exception as e:  # noqa: BLE001 -- one line naming what is wrong
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
