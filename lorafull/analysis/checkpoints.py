"""Intermediate checkpoints as models, for learning/forgetting along training.

The trainer's checkpoints (RUN_DIR/checkpoints/step-N/, see lorafull.train.checkpoint) hold engine state,
not a loadable model: engine/state.pt (the plain-torch engine: {"model": trainable tensors, ...}) or a
DeepSpeed checkpoint under engine/ with tag "state" (rebuilt to fp32 by DeepSpeed's zero_to_fp32).
Every file is read with torch.load(weights_only=True) (lorafull.train.checkpoint.safe_load): no pickle.
The trainable tensors are loaded over the run's base (+ a fresh LoRA wrapper for LoRA runs, merged
afterwards). A checkpoint folder that already holds an HF model or peft adapter folder is used as is.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import torch

from lorafull.config import RunConfig
from lorafull.runs import RunPaths
from lorafull.train.checkpoint import fp32_state_from_zero_checkpoint, safe_load

_STEP = re.compile(r"^(?:step|checkpoint)[-_]?(\d+)$")


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first; temporary folders are skipped."""
    root = RunPaths.of(run_dir).checkpoints
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        m = _STEP.match(d.name)
        if d.is_dir() and m and (_hf_folder(d) or (d / "trainer_state.json").exists()):
            out.append((int(m.group(1)), d))
    return sorted(out)


def total_steps_of(ckpt: Path) -> Optional[int]:
    state = ckpt / "trainer_state.json"
    return json.loads(state.read_text()).get("total_steps") if state.exists() else None


def _hf_folder(ckpt: Path) -> Optional[Path]:
    for cand in [ckpt] + sorted(p for p in ckpt.iterdir() if p.is_dir()):
        if (cand / "config.json").exists() or (cand / "adapter_config.json").exists():
            return cand
    return None


def trainable_state(ckpt: Path) -> dict[str, torch.Tensor]:
    """The trained tensors of a trainer checkpoint, in fp32 on the CPU."""
    engine = ckpt / "engine"
    if (engine / "state.pt").exists():
        return torch.load(engine / "state.pt", map_location="cpu", weights_only=True)["model"]
    if engine.is_dir():
        tags = [p.name for p in engine.iterdir() if p.is_dir()]
        tag = "state" if "state" in tags else (tags[0] if len(tags) == 1 else None)
        if tag is None:
            raise FileNotFoundError(f"{engine}: no DeepSpeed checkpoint tag folder (found {tags})")
        if not list((engine / tag).glob("*optim_states.pt")):
            # ZeRO stage 0 keeps no partitioned optimizer files: the module states hold the weights
            states = safe_load(engine / tag / "mp_rank_00_model_states.pt")
            return {k: v.float() for k, v in states["module"].items()}
        return fp32_state_from_zero_checkpoint(engine, tag)
    raise FileNotFoundError(f"{ckpt}: neither engine/state.pt nor a DeepSpeed engine/ folder")


def load_checkpoint_model(run_dir: Path, ckpt: Path, cfg: RunConfig, dtype: str):
    """The model as it was at checkpoint `ckpt` (LoRA merged), in `dtype`, in eval mode."""
    from lorafull.models.load import apply_method, load_base, torch_dtype
    from lorafull.models.method_table import method_of
    from lorafull.models.methods import load_trained_folder

    folder = _hf_folder(ckpt)
    if folder is not None:
        return load_trained_folder(folder, torch_dtype(dtype), merge=True).eval()
    state = trainable_state(ckpt)
    model = load_base(cfg.model, run_dir, seed=cfg.train.seed, dtype="fp32")
    method = method_of(cfg)
    if method.frozen_base:
        model = apply_method(model, cfg.method, seed=cfg.train.seed)
    own = dict(model.named_parameters())
    unknown = [k for k in state if k not in own]
    if unknown:
        raise KeyError(f"{ckpt}: {len(unknown)} tensors match no parameter of the run's model (e.g. {unknown[0]})")
    missing = [n for n, p in own.items() if p.requires_grad and n not in state]
    if missing:
        raise KeyError(f"{ckpt}: lacks {len(missing)} trainable tensors (e.g. {missing[0]})")
    model.load_state_dict(state, strict=False)
    if method.frozen_base and method.mergeable:
        model = model.merge_and_unload()
    return model.to(torch_dtype(dtype)).eval()
