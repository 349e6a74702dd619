"""Models: load a base, apply the method (full | lora), count parameters, load a run's final model.

The run folder's final/ is the contract between training and every later stage:
- full FT: final/ is a Hugging Face model folder (config.json, *.safetensors) plus the tokenizer;
- LoRA:    final/ is a peft adapter folder (adapter_config.json, adapter_model.safetensors) plus the
           tokenizer; adapter_config.json's base_model_name_or_path is the resolved base folder.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch

from .config import ModelConfig, RunConfig, load_run_config
from .runs import RunPaths

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def torch_dtype(name: str) -> torch.dtype:
    return DTYPES[name]


def resolve_run_reference(name_or_path: str, run_dir: Path) -> str:
    """'run:<name>' -> that run's final model folder (a sibling of run_dir); LoRA parents are
    merged into <parent>/merged first (chained runs train from a plain HF model)."""
    if not name_or_path.startswith("run:"):
        return name_or_path
    parent_dir = Path(run_dir).parent / name_or_path[len("run:"):]
    paths = RunPaths.of(parent_dir)
    if (paths.final / "adapter_config.json").exists():
        if not (paths.merged / "config.json").exists():
            from .merge import merge_run  # local import: merge needs peft

            merge_run(parent_dir)
        return str(paths.merged)
    if not (paths.final / "config.json").exists():
        raise FileNotFoundError(f"{name_or_path}: {paths.final} holds no finished model (has the parent run finished?)")
    return str(paths.final)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name_or_path)
    if tok.pad_token_id is None:  # LLaMA tokenizers ship without a pad token
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def load_final(run_dir: str | os.PathLike, dtype: Optional[str] = None, merge: bool = False):
    """(model, tokenizer) of a finished run, in eval mode. LoRA runs come back as a PeftModel
    (or merged into the base weights when merge=True)."""
    from transformers import AutoModelForCausalLM

    paths = RunPaths.of(run_dir)
    cfg: RunConfig = load_run_config(run_dir)
    td = torch_dtype(dtype or cfg.model.dtype)
    if (paths.final / "adapter_config.json").exists():
        from peft import PeftConfig, PeftModel

        base_path = PeftConfig.from_pretrained(str(paths.final)).base_model_name_or_path
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=td)
        model = PeftModel.from_pretrained(base, str(paths.final))
        if merge:
            model = model.merge_and_unload()
    elif (paths.final / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(str(paths.final), dtype=td)
    else:
        raise FileNotFoundError(f"{paths.final}: no finished model (run python -m lorafull.train {run_dir} first)")
    tokenizer = load_tokenizer(str(paths.final))
    model.eval()
    return model, tokenizer
