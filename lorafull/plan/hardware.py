"""The hardware figures the step-time model divides by: presets from vendors' data sheets, and a
study's `plan.hardware` settings (a preset name plus any figure that overrides it).

Library module (no command): lorafull.plan.estimate uses it.

Every figure is per device (one GPU, or one CPU core for the CPU preset) unless it says "per node",
and every bandwidth is one direction, in GB/s (1e9 bytes/s):
    peak_tflops      dense tensor-core TFLOP/s by training dtype (no sparsity)
    mem_bw_gbs       device memory (HBM) bandwidth: the optimizer step on the device streams its states
    intra_node_gbs   device-to-device bandwidth inside a node (NVLink), one direction
    inter_node_gbs   per node: the network between nodes (InfiniBand), one direction
    pcie_gbs         host <-> device bandwidth (PCIe), one direction: ZeRO offload's traffic
    host_mem_bw_gbs  per node: CPU memory bandwidth, shared by the node's ranks: CPU Adam's traffic
    devices_per_node the node the inter-node and host figures describe
    startup_s        a training job's fixed set-up before its first step (seconds; lorafull.plan.startup)
    load_gbs         the read bandwidth of the storage the base model's weights come from
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from lorafull.config import ConfigError


@dataclass(frozen=True)
class Hardware:
    name: str
    peak_tflops: dict
    mem_bw_gbs: float
    intra_node_gbs: float
    inter_node_gbs: float
    pcie_gbs: float
    host_mem_bw_gbs: float
    devices_per_node: int = 8
    # start-up (lorafull.plan.startup): fixed set-up seconds of a training job, storage read GB/s
    startup_s: float = 30.0
    load_gbs: float = 2.0

    def peak(self, dtype: str) -> float:
        return self.peak_tflops[dtype]


# Sources (vendor data sheets):
# - NVIDIA A100 Tensor Core GPU data sheet (2020/2021): SXM 40GB: 312 TFLOP/s BF16/FP16 dense, 19.5 FP32
#   (no TF32: torch's default matmul precision), 1,555 GB/s HBM2; 80GB SXM: 2,039 GB/s HBM2e; NVLink 3
#   600 GB/s per GPU (both directions: 300 each way); PCIe Gen4 x16 64 GB/s (32 each way).
# - NVIDIA DGX A100 data sheet: 8 x A100, 8 x 200 Gb/s HDR InfiniBand for compute (200 GB/s per node),
#   2 x AMD EPYC 7742 with 8 DDR4-3200 channels each (AMD: 204.8 GB/s per socket, 410 per node).
# - NVIDIA H100 Tensor Core GPU data sheet: H100 SXM 989 TFLOP/s BF16/FP16 dense, 67 FP32, 3.35 TB/s
#   HBM3, NVLink 4 900 GB/s (450 each way), PCIe Gen5 128 GB/s (64 each way).
# - NVIDIA DGX H100 data sheet: 8 x 400 Gb/s NDR InfiniBand (400 GB/s per node), 2 x Intel Xeon
#   Platinum 8480C with 8 DDR5-4800 channels each (Intel: 307 GB/s per socket, 614 per node).
# - NVIDIA H200 Tensor Core GPU data sheet: H200 SXM the H100's 989 / 67 TFLOP/s, 4.8 TB/s HBM3e, NVLink
#   900 GB/s, PCIe Gen5; the HGX H200 platform has the DGX H100's network and hosts.
# - CPU: one core of an AMD EPYC 9005 (Zen 5: AMD's "5th Gen EPYC" architecture brief gives two 512-bit
#   FMA pipes, 64 FP32 FLOP per cycle; at a 2.6 GHz clock 0.166 TFLOP/s; no bf16/fp16 matmul units
#   torch uses for training, so the 16-bit figures are the FP32 one); one DDR5-6000 channel 48 GB/s as
#   its memory bandwidth; no devices to talk to over PCIe or a network.
# Start-up (not on a data sheet). GPUs: startup_s 30 s and load_gbs 2 GB/s are assumptions, not
# measurements (NCCL and DeepSpeed initialisation; weights read from a parallel file system); a
# calibration (launch.grid --calibrate) measures the real figure of a study's own cluster. CPU: the
# set-up of the demo's training (Trainer.setup: model, cached data, DeepSpeed ZeRO-2 engine on one
# core) took 12.0 s (full) and 12.3 s (LoRA) of CPU time here, as the wall time of an idle core; see
# lorafull/plan/startup.py.
CPU_STARTUP_S = 12.0
_A100_PCIE_HOST = dict(pcie_gbs=32.0, host_mem_bw_gbs=410.0, inter_node_gbs=200.0)
_H_HOST = dict(pcie_gbs=64.0, host_mem_bw_gbs=614.0, inter_node_gbs=400.0)
PRESETS = {
    "A100-40GB-SXM": Hardware("A100-40GB-SXM", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 1555.0, 300.0,
                              **_A100_PCIE_HOST),
    "A100-80GB": Hardware("A100-80GB", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}, 2039.0, 300.0, **_A100_PCIE_HOST),
    "H100-SXM": Hardware("H100-SXM", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 3350.0, 450.0, **_H_HOST),
    "H200": Hardware("H200", {"bf16": 989.0, "fp16": 989.0, "fp32": 67.0}, 4800.0, 450.0, **_H_HOST),
    "CPU": Hardware("CPU", {"bf16": 0.166, "fp16": 0.166, "fp32": 0.166}, 48.0, 48.0, 12.5, 48.0, 48.0,
                    devices_per_node=1, startup_s=CPU_STARTUP_S, load_gbs=1.0),
}
FIGURES = ("mem_bw_gbs", "intra_node_gbs", "inter_node_gbs", "pcie_gbs", "host_mem_bw_gbs", "startup_s", "load_gbs")


def resolve_hardware(settings, where: str = "plan.hardware", gpu_tflops: Optional[float] = None) -> Hardware:
    """The preset named by settings.preset with every figure settings sets (and plan.gpu_tflops, the
    older key, as the peak for every dtype) put over it."""
    if settings.preset not in PRESETS:
        raise ConfigError(f"{where}.preset: unknown hardware {settings.preset!r} (known: {', '.join(PRESETS)})")
    hw = PRESETS[settings.preset]
    changes = {k: getattr(settings, k) for k in FIGURES if getattr(settings, k) is not None}
    peak = settings.peak_tflops if settings.peak_tflops is not None else gpu_tflops
    if peak is not None:
        changes["peak_tflops"] = {d: float(peak) for d in hw.peak_tflops}
    if settings.devices_per_node is not None:
        changes["devices_per_node"] = settings.devices_per_node
    return replace(hw, **changes) if changes else hw
