"""Spectral analysis cost at LLaMA-7B matrix shapes: seconds per matrix on the GPU vs the CPU, and
peak memory of the analysis process vs the size of the two models it compares (it streams one
matrix at a time, so it should stay far below base + tuned).

    python bench/bench_spectrum.py --arch llama-7b --layers 2 --devices cuda,cpu
    python bench/bench_spectrum.py --arch tiny-llama --layers 2 --devices cpu     # a quick look on a laptop

A "tuned" model = base + a rank-16 change + small noise on every decoder matrix; both saved in bf16,
sharded, as a full fine-tune's final/ would be. The analysis runs in a child process (the CLI), so
its peak RSS is its own, not the builder's.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build(out: Path, arch: str, layers: int) -> Path:
    from lorafull.config import ModelConfig, MethodConfig, RunConfig, save_run_config
    from lorafull.models.tiny import build_tiny_model

    model = build_tiny_model(arch, num_hidden_layers=layers).to(torch.bfloat16)
    base = out / "base"
    model.save_pretrained(base, max_shard_size="1GB")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".layers." in name and p.ndim == 2:
                o, i = p.shape
                low = torch.randn(o, 16, generator=gen) @ torch.randn(16, i, generator=gen) * 1e-3
                p.add_((low + torch.randn(o, i, generator=gen) * 1e-4).to(p.dtype))
    run_dir = out / "study" / "runs" / "full"
    model.save_pretrained(run_dir / "final", max_shard_size="1GB")
    run = RunConfig(name="full", model=ModelConfig(name_or_path=str(base), dtype="bf16"),
                    method=MethodConfig(kind="full"))
    save_run_config(run, run_dir, "bench")
    return run_dir


def svd_seconds(shape: tuple[int, int], device: str, repeat: int = 3) -> float:
    """Median seconds of one torch.linalg.svdvals of a float32 matrix of `shape` on `device`."""
    import statistics

    x = torch.randn(*shape, device=device)
    torch.linalg.svdvals(x)  # warm-up (cuSOLVER handles, LAPACK workspaces)
    times = []
    for _ in range(repeat):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.linalg.svdvals(x)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def folder_gb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 2 ** 30


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="llama-7b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--devices", default="cuda,cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = build(Path(tmp), args.arch, args.layers)
        print(f"built {args.arch} x {args.layers} layers in {time.perf_counter() - t0:.1f} s: base "
              f"{folder_gb(Path(tmp) / 'base'):.2f} GB + tuned {folder_gb(run_dir / 'final'):.2f} GB (bf16)")
        per_matrix = {}
        for device in args.devices.split(","):
            t0 = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "lorafull.analysis", "spectrum", str(run_dir),
                                   "--device", device], cwd=REPO, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode:
                print(f"{device}: failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            data = json.loads((run_dir / "analysis" / "spectrum.json").read_text())
            n = data["summary"]["modules"]
            per_matrix[device] = data["seconds"] / n
            print(f"{device}: {n} matrices in {data['seconds']:.1f} s ({data['seconds'] / n:.2f} s/matrix; "
                  f"{wall:.1f} s with process start), peak RSS of the analysis process {data['peak_rss_gb']:.2f} GB; "
                  f"median rank90 {data['summary']['median_rank90']} "
                  f"(random {data['summary']['median_baseline_rank90']})")
        if len(per_matrix) == 2:
            a, b = per_matrix
            print(f"ratio {b}/{a} seconds per matrix: {per_matrix[b] / per_matrix[a]:.1f}x")
        from lorafull.models.tiny import arch_config

        cfg = arch_config(args.arch)
        shape = (cfg["hidden_size"], cfg["intermediate_size"])
        svd = {d: svd_seconds(shape, d) for d in args.devices.split(",")}
        print("svdvals of one " + "x".join(map(str, shape)) + " fp32 matrix: "
              + ", ".join(f"{d} {t:.2f} s" for d, t in svd.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
