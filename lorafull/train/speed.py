"""The fast path of training, one setting each (train.adapter_dtype, compile, fused_kernels,
gradient_checkpointing): what each does to the model, applied in one place by the trainer.

Library module (no command); the trainer calls prepare_base_model before the method is applied and
finish_model after it. Every option leaves the loss curve the plain path gives, within float
rounding (tests/test_speed.py states the tolerances).
"""
from __future__ import annotations

from typing import Optional

import torch

from lorafull.models.load import torch_dtype
from lorafull.models.method_table import method_of


def adapter_dtype(run, deepspeed: bool) -> Optional[torch.dtype]:
    """None (peft's fp32 adapters, input upcast) unless train.adapter_dtype: compute. Then DeepSpeed
    holds the adapters in the compute dtype (its ZeRO optimizer keeps the fp32 master copy); plain torch
    keeps them in fp32 -- they are the master weights the optimizer updates -- and autocast computes
    them in model.dtype, so in both the adapted layer's input is no longer copied up to fp32."""
    if not method_of(run).compute_dtype_adapters or run.train.adapter_dtype != "compute":
        return None
    return torch_dtype(run.model.dtype) if deepspeed else torch.float32


def enable_fused_kernels(model) -> None:
    """Liger-Kernel's Triton kernels (RMSNorm, RoPE, SwiGLU, fused linear cross-entropy) patched into
    this model instance; they need a CUDA GPU, so anything else is one line naming the setting."""
    if not torch.cuda.is_available():
        raise ValueError("train.fused_kernels: the Liger-Kernel kernels need a CUDA GPU and this process has "
                         "none (set train.fused_kernels: false)")
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
    except ImportError as e:
        raise ValueError(f"train.fused_kernels: needs the liger-kernel package ({e}); "
                         f"pip install liger-kernel, or set train.fused_kernels: false") from None
    _apply_liger_kernel_to_instance(model=model)


def enable_gradient_checkpointing(model) -> None:
    # non-reentrant: works with a frozen base (LoRA) without forcing input grads
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def prepare_base_model(model, train) -> None:
    """Options that act on the base model before LoRA wraps it."""
    if train.fused_kernels:
        enable_fused_kernels(model)
    if train.gradient_checkpointing is True:
        enable_gradient_checkpointing(model)


def finish_model(model, train):
    """torch.compile in place (nn.Module.compile): parameter names, state dicts and save_pretrained stay
    those of the plain model, so checkpoints and final/ are the same whether compiled or not. Shapes
    vary with the batch's longest sample; dynamic=True compiles one shape-generic graph from the first
    step, so a resumed job runs the very kernels the uninterrupted one did (a static graph for the
    first shape seen, then a generic one, would make the kernels depend on where a job started)."""
    if train.compile:
        model.compile(dynamic=True)
    return model
