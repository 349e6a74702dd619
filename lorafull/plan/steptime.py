"""Time of one optimizer step of a run, from the hardware, in four parts (seconds):

    compute        tokens/step x FLOPs/token / (ranks x peak(dtype) x plan.mfu), FLOPs/token =
                       full:  6 N + 12 L h s           (N = parameters in matmuls: all but the input embedding)
                       lora:  4 N + 6 T + 12 L h s     (frozen base: forward + input gradients, no weight GEMMs)
                       + 2 N + 4 L h s with gradient checkpointing (the recomputed forward)
    optimizer      the Adam step as memory traffic: trained parameters of one rank x bytes per parameter
                   at device memory bandwidth; under offload on the host, where every rank of a node
                   shares the node's CPU memory bandwidth
    communication  ZeRO's collectives per rank, at the intra-node bandwidth (the slowest link when
                   nodes > 1: the node's network shared by its ranks), a ring moving (n-1)/n of the data:
                       stage 0   gradient all-reduce, once per step          2 x T x b
                       stage 1   gradient reduce-scatter once per step + all-gather of the updated weights
                       stage 2   gradient reduce-scatter every micro batch + all-gather of the updated weights
                       stage 3   every micro batch: parameter all-gathers in the forward, the backward (and
                                 the recompute), P x b each, + gradient reduce-scatter T x b
    offload        PCIe traffic of ZeRO-Offload: gradients to the host and updated weights back (T/n x b
                   each way per step); at stage 3 also the rank's weight shard for every gathered pass
with T trained parameters, P all parameters, b bytes of the training dtype, n data-parallel ranks.
The parts are added, except at ZeRO-3, where DeepSpeed overlaps communication with compute by default
(overlap_comm and parameter prefetch): there the collectives and the weight fetches over PCIe count
only where they outlast the compute ("hidden" is the part they hide, subtracted from the total).

Library module (no command): lorafull.plan.estimate uses it.
"""
from __future__ import annotations

from lorafull.config import RunConfig, Study, resources
from lorafull.models.method_table import method_of
from lorafull.plan.hardware import Hardware
from lorafull.plan.memory import DTYPE_BYTES, world_size

# Adam's memory traffic per trained parameter, in bytes.
# A fused kernel (DeepSpeed's fused/CPU Adam; torch's fused CUDA AdamW) reads fp32 weight, gradient, m
# and v (16) and writes weight, m and v (12), plus the 16-bit weight copy under mixed precision (2).
FUSED_ADAM_BYTES = {"bf16": 30, "fp16": 30, "fp32": 28}
# torch's single-tensor AdamW (what runs on CPU tensors): one pass per elementwise op: weight decay
# (r+w 8), m lerp (r m g, w 12), v mul (8) and addcmul (r v g, w 12), sqrt (8), divide (8), + eps (8),
# addcdiv into the weight (r p m d, w 16) = 80.
TORCH_CPU_ADAMW_BYTES = 80


def flops_per_token(run: RunConfig, arch: dict, counts: dict, tokens_per_sample: float) -> float:
    h, L, V = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    frozen_base = method_of(run).frozen_base
    n_matmul = counts["total"] - counts["trainable"] - V * h if frozen_base else counts["total"] - V * h
    attention = 4 * L * h * tokens_per_sample  # forward: QK^T and attention x V
    if not frozen_base:
        flops = 6 * n_matmul + 3 * attention
    else:
        flops = 4 * n_matmul + 6 * counts["trainable"] + 3 * attention
    if run.train.gradient_checkpointing:
        flops += 2 * n_matmul + attention
    return flops


def grad_accumulation(run: RunConfig, study: Study) -> int:
    """Micro batches per optimizer step on each rank: the training loop's rule (lorafull.config.resources),
    which load_study has checked against these resources."""
    return resources.grad_accumulation(run.train.global_batch_size, run.train.micro_batch_size,
                                       world_size(run, study))


def ring_bandwidth_gbs(run: RunConfig, study: Study, hw: Hardware) -> float:
    """Per-rank bandwidth of a collective: NVLink inside a node; across nodes the network, shared by
    the node's ranks, when it is the slower of the two."""
    if study.slurm.nodes <= 1:
        return hw.intra_node_gbs
    ranks_per_node = max(1, world_size(run, study) // study.slurm.nodes)
    return min(hw.intra_node_gbs, hw.inter_node_gbs / ranks_per_node)


def communication_bytes(run: RunConfig, study: Study, counts: dict) -> float:
    """Bytes one rank sends per optimizer step (ring collectives: (n-1)/n of the data)."""
    n = world_size(run, study)
    if n <= 1:
        return 0.0
    b, stage = DTYPE_BYTES[run.model.dtype], run.train.zero_stage
    P, T, accum = counts["total"], counts["trainable"], grad_accumulation(run, study)
    ring = (n - 1) / n
    if stage == 0:
        return 2 * ring * T * b
    if stage == 1:
        return ring * T * b * 2  # reduce-scatter + all-gather of the updated weights
    if stage == 2:
        return ring * T * b * (accum + 1)
    passes = 3 if run.train.gradient_checkpointing else 2  # forward, (recompute,) backward gathers
    return ring * accum * (passes * P * b + T * b)


def optimizer_seconds(run: RunConfig, study: Study, counts: dict, hw: Hardware) -> float:
    n, T = world_size(run, study), counts["trainable"]
    shard = T / n if run.train.zero_stage >= 1 else T
    offload = run.train.offload and run.train.zero_stage >= 1 and hw.name != "CPU"
    if offload:  # every rank of the node steps its shard on the host at once
        ranks_per_node = min(n, hw.devices_per_node)
        return shard * ranks_per_node * FUSED_ADAM_BYTES[run.model.dtype] / (hw.host_mem_bw_gbs * 1e9)
    per_param = TORCH_CPU_ADAMW_BYTES if hw.name == "CPU" else FUSED_ADAM_BYTES[run.model.dtype]
    return shard * per_param / (hw.mem_bw_gbs * 1e9)


def offload_seconds(run: RunConfig, study: Study, counts: dict, hw: Hardware) -> tuple[float, float]:
    """(gradients down + updated weights up once per step, weight fetches of every gathered pass)."""
    if not (run.train.offload and run.train.zero_stage >= 1) or hw.name == "CPU":
        return 0.0, 0.0
    n, b, pcie = world_size(run, study), DTYPE_BYTES[run.model.dtype], hw.pcie_gbs * 1e9
    per_step = 2 * counts["trainable"] / n * b / pcie
    fetch = 0.0
    if run.train.zero_stage >= 3:  # the weight shard lives on the host: fetched for every gathered pass
        passes = 3 if run.train.gradient_checkpointing else 2
        fetch = grad_accumulation(run, study) * passes * counts["total"] / n * b / pcie
    return per_step, fetch


def step_time(run: RunConfig, study: Study, arch: dict, counts: dict, tokens_per_sample: float,
              hw: Hardware) -> dict:
    """{"compute", "optimizer", "communication", "offload", "hidden", "total"} seconds of one optimizer
    step, and "tokens_per_step", "flops_per_token"."""
    n = world_size(run, study)
    tokens = run.train.global_batch_size * tokens_per_sample
    fpt = flops_per_token(run, arch, counts, tokens_per_sample)
    peak = hw.peak(run.model.dtype) * 1e12
    parts = {
        "compute": tokens * fpt / (n * peak * study.plan.mfu),
        "optimizer": optimizer_seconds(run, study, counts, hw),
        "communication": communication_bytes(run, study, counts) / (ring_bandwidth_gbs(run, study, hw) * 1e9),
    }
    per_step, fetch = offload_seconds(run, study, counts, hw)
    parts["offload"] = per_step + fetch
    overlappable = parts["communication"] + fetch if run.train.zero_stage >= 3 else 0.0
    parts["hidden"] = -min(overlappable, parts["compute"])
    parts["total"] = sum(parts.values())
    return {**parts, "tokens_per_step": tokens, "flops_per_token": fpt}
