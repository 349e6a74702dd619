"""Peak memory of one GPU of a run, by part (GiB):
    weights    P x bytes(dtype)                        / N at ZeRO-3 (offloaded at ZeRO-3 + offload)
    gradients  T x bytes(dtype)                        / N at ZeRO-2 and 3
    optimizer  T x (4 fp32 master, unless fp32, + 4 m + 4 v) / N at ZeRO-1..3 (0 with offload)
    activations micro_batch x max_length x (20 h + 8 i) bytes per layer at 16 bit (attention by SDPA,
               O(s) memory), + LoRA dropout copies of each adapted input, + logits (10 bytes per vocab
               entry: bf16 logits, fp32 copy, gradient); checkpointing: layer inputs + one layer
    overhead   plan.overhead_gb (CUDA context, communication buckets)
with P parameters, T trained ones, N data-parallel ranks, h hidden size, i MLP width.

Library module (no command): lorafull.plan.estimate uses it; memory_gb(run, study, arch, counts,
micro_batch=m, checkpointing=c) answers "what peak would this run have with micro batch m".
"""
from __future__ import annotations

from typing import Optional

from lorafull.config import resources
from lorafull.config import RunConfig, Study
from lorafull.models.method_table import method_of

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GB = 1024 ** 3


_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _adapted_inputs(run: RunConfig, h: int, i: int) -> int:
    """Sum of the input widths of the linear layers LoRA adapts in one decoder layer."""
    width = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h, "up_proj": h, "down_proj": i}
    t = run.method.target_modules
    names = {"attention": _ATTENTION, "mlp": _MLP, "all-linear": _ATTENTION + _MLP}.get(t, t) if isinstance(t, str) else t
    return sum(width.get(n, h) for n in names)


def world_size(run: RunConfig, study: Study) -> int:
    return resources.world_size(run, study.slurm)  # the launcher's rule: they cannot drift apart


def memory_gb(run: RunConfig, study: Study, arch: dict, counts: dict, micro_batch: Optional[int] = None,
              checkpointing: Optional[bool] = None) -> dict:
    """Peak memory of one GPU for this run, by part and "total", in GiB; micro_batch and checkpointing
    (default: the run's train.micro_batch_size and train.gradient_checkpointing) let a caller try
    other settings, e.g. the largest micro batch that fits."""
    micro_batch = run.train.micro_batch_size if micro_batch is None else micro_batch
    checkpointing = run.train.gradient_checkpointing if checkpointing is None else checkpointing
    n = world_size(run, study)
    stage, offload = run.train.zero_stage, run.train.offload and run.train.zero_stage >= 1
    b = DTYPE_BYTES[run.model.dtype]
    mixed = run.model.dtype != "fp32"
    P, T = counts["total"], counts["trainable"]
    h, i = arch["hidden_size"], arch["intermediate_size"]
    L, V = arch["num_hidden_layers"], arch["vocab_size"]

    weights = P * b / (n if stage >= 3 else 1)
    if stage >= 3:  # parameters gathered for the layers being computed (about two layers at a time)
        layer = (P - 2 * V * h) / L
        weights = (0 if offload else weights) + 2 * layer * b
    grads = T * b / (n if stage >= 2 else 1)
    optimizer = 0 if offload else T * ((4 if mixed else 0) + 8) / (n if stage >= 1 else 1)

    tokens = micro_batch * run.data.max_length
    act_scale = b / 2  # the 20h + 8i bytes/token/layer figure is for 16-bit activations
    per_layer = tokens * (20 * h + 8 * i) * act_scale
    if method_of(run).dropout_memory and run.method.dropout > 0:  # dropout output + mask per adapted input
        per_layer += tokens * _adapted_inputs(run, h, i) * (b + 1)
    if checkpointing:
        activations = L * tokens * h * b + per_layer
    else:
        activations = L * per_layer
    activations += tokens * V * (b + 8)
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations}
    out = {k: v / GB for k, v in parts.items()}
    out["overhead"] = study.plan.overhead_gb
    out["total"] = sum(out.values())
    return out
