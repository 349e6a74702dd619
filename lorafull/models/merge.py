"""Merge a LoRA run's adapter into its base: RUN_DIR/merged/ is a plain Hugging Face model folder.

    python -m lorafull.models.merge RUN_DIR

Chained runs (model.name_or_path: run:<lora run>) and generation backends that want one model folder
(vLLM) use it. Saved in the run's model.dtype, with the tokenizer.
A full fine-tune has nothing to merge: its final/ already is such a folder (and is what merge_run returns).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Optional

from lorafull.runs import RunPaths, error_line


def merge_run(run_dir: str | os.PathLike) -> Path:
    """RUN_DIR/merged/ (built once, atomically); final/ itself for a full fine-tune."""
    from lorafull.config import load_run_config
    from lorafull.models.load import load_final, torch_dtype

    from lorafull.models.bottleneck import is_adapter_folder

    paths = RunPaths.of(run_dir)
    if (paths.final / "config.json").exists() and not (paths.final / "adapter_config.json").exists():
        return paths.final
    if is_adapter_folder(paths.final) or load_run_config(run_dir).method.kind in ("prompt", "prefix"):
        raise ValueError(f"{paths.final}: method.kind {load_run_config(run_dir).method.kind} adds layers or "
                         "inputs that cannot be folded into the base weights: no merged model to build")
    if not (paths.final / "adapter_config.json").exists():
        raise FileNotFoundError(f"{paths.final}: no finished adapter (run python -m lorafull.train {run_dir} first)")
    if (paths.merged / "config.json").exists():
        return paths.merged
    # the base in its own dtype (half the memory of fp32 for a 13B merge on a login node); peft adds
    # the fp32 adapter product into it, one rounding as when the merged weights are saved
    dtype = load_run_config(run_dir).model.dtype
    model, tokenizer = load_final(run_dir, dtype=dtype, merge=True)
    tmp = paths.root / f".merged.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.dtype = torch_dtype(dtype)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    try:
        os.replace(tmp, paths.merged)
    except OSError:  # another job merged the same run meanwhile: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (paths.merged / "config.json").exists():
            raise
    return paths.merged


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
