"""Which layers a method adapts: the keywords of method.target_modules (attention | mlp | all-linear | names)
resolved against a model's linear layers. Shared by the model loader and the methods (lorafull.models.methods)."""
from __future__ import annotations

from typing import Union

import torch


# Keyword -> module names, for LLaMA-style decoders (LLaMA, Mistral, Qwen2, Gemma share these names).
TARGET_KEYWORDS = {
    "attention": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}


def linear_module_names(model) -> list[str]:
    """Short names (last path component) of the model's linear layers, e.g. q_proj, lm_head."""
    from transformers.pytorch_utils import Conv1D

    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, (torch.nn.Linear, Conv1D)) and name})


def resolve_target_modules(model, target_modules) -> Union[str, list[str]]:
    """Config value -> what peft gets. Keywords expand to module names; every named module must match a
    linear layer of this model, otherwise the error lists the names that would."""
    if isinstance(target_modules, str):
        if target_modules == "all-linear":
            return "all-linear"  # peft picks every linear layer except the output head
        names = TARGET_KEYWORDS.get(target_modules, [target_modules])
    else:
        names = []
        for t in target_modules:
            names.extend(TARGET_KEYWORDS.get(t, [t]))
    available = linear_module_names(model)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"method.target_modules: {', '.join(missing)} match no linear layer of this model; "
                         f"its linear modules are: {', '.join(available)} "
                         f"(or use attention | mlp | all-linear)")
    return list(dict.fromkeys(names))
