"""How each save format's methods are built, saved and loaded back: the work behind the rows of
lorafull.models.method_table (which says what each method.kind is; ask it, not method.kind).

    python -c "from lorafull.models.load import count_params_meta as c; from lorafull.config import MethodConfig as M; print(c('llama-7b', M(kind='dora')))"

Every kind but full freezes the base; final/ then holds only what trained (a peft adapter folder, or
the bottleneck adapters), and the base is named inside it.
"""
from __future__ import annotations

from pathlib import Path

from typing import Optional

import torch

from lorafull.models.method_table import final_format, method_of

# names of the parameters a method adds (peft's tuner prefixes; our adapters)
ADDED_NAME_PARTS = ("lora_", "hada_", "ia3_", "prompt_encoder", "bottleneck_adapter")


def _targets(model, method_cfg) -> list[str] | str:
    from lorafull.models.targets import linear_module_names, resolve_target_modules

    targets = resolve_target_modules(model, method_cfg.target_modules)
    if targets == "all-linear":  # written out: not every peft tuner takes the keyword
        targets = [n for n in linear_module_names(model) if n != "lm_head"]
    return targets


def _lora(model, m, use_dora: bool = False):
    import peft

    targets = m.target_modules if m.target_modules == "all-linear" else _targets(model, m)
    return peft.LoraConfig(r=m.r, lora_alpha=m.alpha, lora_dropout=m.dropout, target_modules=targets, bias="none",
                           use_dora=use_dora, task_type="CAUSAL_LM")


def _loha(model, m):
    import peft

    return peft.LoHaConfig(r=m.r, alpha=m.alpha, module_dropout=m.dropout, target_modules=_targets(model, m),
                           task_type="CAUSAL_LM")


def _ia3(model, m):
    import peft

    from lorafull.models.targets import TARGET_KEYWORDS

    targets = _targets(model, m)
    feedforward = [t for t in targets if t in TARGET_KEYWORDS["mlp"]]
    return peft.IA3Config(target_modules=targets, feedforward_modules=feedforward, task_type="CAUSAL_LM")


def _prompt(model, m):
    import peft

    return peft.PromptTuningConfig(num_virtual_tokens=m.num_virtual_tokens, task_type="CAUSAL_LM")


def _prefix(model, m):
    import peft

    return peft.PrefixTuningConfig(num_virtual_tokens=m.num_virtual_tokens, task_type="CAUSAL_LM")


# method_table's Method.peft_config names one of these
PEFT_CONFIGS = {"lora": _lora, "dora": lambda model, m: _lora(model, m, use_dora=True), "loha": _loha, "ia3": _ia3,
                "prompt": _prompt, "prefix": _prefix}


def peft_config(model, method_cfg):
    """The peft config of a method whose save format is peft (method_table's peft_config names it)."""
    return PEFT_CONFIGS[method_of(method_cfg).peft_config](model, method_cfg)


def apply_method(model, method_cfg, seed: int = 0, adapter_dtype: Optional[torch.dtype] = None):
    """full: every parameter trains; any other kind: the base frozen and the method's parameters added.
    The RNG is seeded first so every process (and every rerun) starts from the same added weights.

    adapter_dtype (peft methods) None: peft's default, adapters in fp32 and each adapted layer's input cast
    up to fp32 (a copy of every activation an adapter reads). A dtype: the adapters are held in it and the
    input cast is off, so an adapter computes in the dtype its input arrives in -- pass fp32 when the
    adapters are themselves the master weights (plain torch under autocast), the compute dtype when the
    engine keeps an fp32 master copy (DeepSpeed bf16/fp16). dropout 0: peft puts an Identity in place of
    the dropout, so no dropout kernel runs (tests/test_speed.py checks it)."""
    return method_of(method_cfg).build(model, method_cfg, seed, adapter_dtype)


def _build_full(model, method_cfg, seed: int, adapter_dtype) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _build_peft(model, method_cfg, seed: int, adapter_dtype):
    from peft import get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(model, peft_config(model, method_cfg))
    if adapter_dtype is not None:
        _hold_adapters_in(model, adapter_dtype)
    return model


def _build_bottleneck(model, method_cfg, seed: int, adapter_dtype):
    from lorafull.models.bottleneck import add_adapters

    torch.manual_seed(seed)
    return add_adapters(model, method_cfg.adapter_size)


BUILDERS = {"hf": _build_full, "peft": _build_peft, "bottleneck": _build_bottleneck}


def _save_full(model, folder: Path, state: dict, method_cfg, base_path: str, dtype) -> None:
    model.config.dtype = dtype
    model.save_pretrained(str(folder), state_dict=state)  # gathered weights: ZeRO-3 shards are empty


def _save_peft(model, folder: Path, state: dict, method_cfg, base_path: str, dtype) -> None:
    model.peft_config["default"].base_model_name_or_path = base_path  # saves only the adapter
    model.save_pretrained(str(folder), state_dict=state)


def _save_bottleneck(model, folder: Path, state: dict, method_cfg, base_path: str, dtype) -> None:
    from lorafull.models.bottleneck import save_adapters

    save_adapters(folder, state, method_cfg.adapter_size, base_path)


SAVERS = {"hf": _save_full, "peft": _save_peft, "bottleneck": _save_bottleneck}


def _hold_adapters_in(model, dtype: torch.dtype) -> None:
    for p in model.parameters():
        if p.requires_grad:  # the method's added parameters: the base is frozen
            p.data = p.data.to(dtype)
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = False


def is_added(name: str) -> bool:
    return any(part in name for part in ADDED_NAME_PARTS)


def is_trained_folder(folder: Path) -> bool:
    """A finished model of any method: an HF folder, a peft adapter folder, or a bottleneck adapter folder."""
    return final_format(folder) is not None


def load_trained_folder(folder: Path, dtype: torch.dtype, merge: bool = False):
    """The model a trained folder holds: a peft adapter on its base (merged into it when merge=True and the
    method can be merged), bottleneck adapters on their base (never merged: nonlinear), or an HF folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    fmt = final_format(folder)
    if fmt == "peft":
        from peft import PeftConfig, PeftModel

        config = PeftConfig.from_pretrained(str(folder))
        base = AutoModelForCausalLM.from_pretrained(config.base_model_name_or_path, dtype=dtype)
        model = PeftModel.from_pretrained(base, str(folder))
        return model.merge_and_unload() if merge and not config.is_prompt_learning else model
    if fmt == "bottleneck":
        from lorafull.models.bottleneck import load_with_adapters

        return load_with_adapters(folder, dtype)
    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
