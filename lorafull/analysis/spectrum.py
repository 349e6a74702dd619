"""Spectral analysis of a run's weight change: how many directions did fine-tuning use?

    python -m lorafull.analysis spectrum RUN_DIR [--device cuda]

For every adapted matrix, dW = W_tuned - W_base (LoRA: B @ A * alpha/r, read from the adapter), its
singular values, and rank90 = the number of singular directions that explain 90% of the variance
(cumulative sum of squared singular values >= 0.9 of the total). Biderman et al. 2024 found full
fine-tuning's dW to be 10-100x higher rank than LoRA's r; the random-matrix baseline (a Gaussian of
the same shape, same Frobenius norm) shows what "full rank" looks like for that shape.

Writes RUN_DIR/analysis/spectrum.json (per module: name, layer, type, shape, rank90,
baseline_rank90, fro_norm) and spectrum.png. Matrices are streamed one at a time from the
safetensors files: never two whole models in memory.
"""
from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Optional

import torch

from lorafull.config import load_run_config
from lorafull.runs import RunPaths, write_json_atomic
from lorafull.analysis.weights import base_folder_of_run, full_deltas, layer_of, lora_factors, module_type

VARIANCE_FRACTION = 0.9


def rank_for_variance(singular_values: torch.Tensor, fraction: float = VARIANCE_FRACTION) -> int:
    """Smallest k whose top-k singular values hold `fraction` of sum(s^2); 0 for a zero matrix."""
    energy = singular_values.double().pow(2)
    total = float(energy.sum())
    if total <= 0.0:
        return 0
    cum = torch.cumsum(energy.sort(descending=True).values, 0) / total
    # tolerance: a rank-k matrix must give k, not k+1, when its tail is float noise at exactly 0.9
    return int((cum < fraction - 1e-9).sum()) + 1


def lora_singular_values(b: torch.Tensor, a: torch.Tensor, scale: float) -> torch.Tensor:
    """Singular values of B @ A * scale without forming the out x in product: with B = Qb Rb and
    A^T = Qa Ra, B A = Qb (Rb Ra^T) Qa^T, so they are those of the r x r matrix Rb Ra^T."""
    _, rb = torch.linalg.qr(b)
    _, ra = torch.linalg.qr(a.T)
    return torch.linalg.svdvals(rb @ ra.T) * abs(scale)


_baseline_cache: dict[tuple[int, int], int] = {}


def random_baseline_rank90(shape: tuple[int, int], fro_norm: float, device: str = "cpu") -> int:
    """rank90 of a Gaussian matrix of `shape` scaled to `fro_norm`. Scaling leaves rank90 unchanged and
    a Gaussian's spectrum concentrates (Marchenko-Pastur), so one seeded draw per shape is cached."""
    key = tuple(sorted(shape))
    if key not in _baseline_cache:
        gen = torch.Generator(device="cpu").manual_seed(1234 + key[0] * 7919 + key[1])
        g = torch.randn(*key, generator=gen).to(device)
        g = g * (max(fro_norm, 1e-12) / float(torch.linalg.matrix_norm(g)))
        _baseline_cache[key] = rank_for_variance(torch.linalg.svdvals(g).cpu())
    return _baseline_cache[key]


def _entry(name: str, shape, sv: torch.Tensor, device: str, top_k: int = 32) -> dict:
    sv = sv.double().cpu()
    fro = float(sv.pow(2).sum().sqrt())
    shape = [int(s) for s in shape]
    return {"name": name, "layer": layer_of(name + "."), "type": module_type(name), "shape": shape,
            "rank90": rank_for_variance(sv), "baseline_rank90": random_baseline_rank90(tuple(shape), fro, device),
            "max_rank": min(shape), "fro_norm": fro,
            "singular_values_top": [float(x) for x in sv.sort(descending=True).values[:top_k]]}


def spectrum_of_full(tuned_dir, base_dir, device: str = "cpu", progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    out = []
    for name, delta in tqdm(full_deltas(tuned_dir, base_dir), desc="spectrum (full)", disable=not progress,
                            unit="matrix"):
        sv = torch.linalg.svdvals(delta.to(device))
        out.append(_entry(name, delta.shape, sv, device))
        del delta, sv
    return out


def spectrum_of_lora(adapter_dir, device: str = "cpu", progress: bool = True) -> list[dict]:
    from tqdm import tqdm

    out = []
    for name, b, a, scale in tqdm(lora_factors(adapter_dir), desc="spectrum (lora)", disable=not progress,
                                  unit="matrix"):
        sv = lora_singular_values(b.to(device), a.to(device), scale)
        out.append(_entry(name, (b.shape[0], a.shape[1]), sv, device))
    return out


def summarise(modules: list[dict]) -> dict:
    if not modules:
        return {"modules": 0}
    by_type: dict[str, list[int]] = {}
    for m in modules:
        by_type.setdefault(m["type"], []).append(m["rank90"])
    # median_low: a rank stays a whole number of directions
    return {"modules": len(modules), "median_rank90": statistics.median_low(m["rank90"] for m in modules),
            "median_baseline_rank90": statistics.median_low(m["baseline_rank90"] for m in modules),
            "median_rank90_by_type": {t: statistics.median_low(v) for t, v in sorted(by_type.items())}}


def peak_rss_gb() -> Optional[float]:
    """Peak resident memory of this process image (VmHWM). Not ru_maxrss: Linux carries that across
    exec, so a child started by a big parent would report the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2 ** 20, 3)  # kB -> GB
    except OSError:
        pass
    return None


def analyse_run(run_dir: str | os.PathLike, device: Optional[str] = None, progress: bool = True) -> Path:
    """Spectrum of one finished run -> RUN_DIR/analysis/spectrum.json (+ spectrum.png)."""
    import time

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    paths = RunPaths.of(run_dir)
    cfg = load_run_config(run_dir)
    if (paths.final / "adapter_config.json").exists():
        kind, base = "lora", None
        modules = spectrum_of_lora(paths.final, device, progress)
    elif (paths.final / "config.json").exists():
        kind = "full"
        base = base_folder_of_run(run_dir, cfg.model.name_or_path)
        modules = spectrum_of_full(paths.final, base, device, progress)
    else:
        raise FileNotFoundError(f"{paths.final}: no finished model (run python -m lorafull.train {run_dir} first)")
    result = {"run": run_dir.name, "kind": kind, "method": cfg.method.kind,
              "r": cfg.method.r if kind == "lora" else None, "base": str(base) if base else None,
              "variance_fraction": VARIANCE_FRACTION, "device": device,
              "seconds": round(time.perf_counter() - t0, 3),
              "peak_rss_gb": peak_rss_gb(),
              "summary": summarise(modules), "modules": modules}
    out = paths.analysis / "spectrum.json"
    write_json_atomic(out, result)
    plot_spectrum([result], paths.analysis / "spectrum.png")
    return out


def plot_spectrum(results: list[dict], out_png: Path) -> Path:
    """rank90 by layer, one panel per module type; one colour per run (the seeds of one setting share it
    and one legend entry), full FT solid circles, adapters dashed triangles; the random baseline dotted
    grey; the legend right of the panels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.ticker import MaxNLocator

    from lorafull.figures import colors_for, plt, short_label

    types = sorted({m["type"] for r in results for m in r["modules"]})
    if not types:
        return out_png
    cols = min(4, len(types))
    rows = (len(types) + cols - 1) // cols
    names = [short_label(r["run"]) for r in results]
    colors = colors_for(names)
    fig, axes = plt.subplots(rows, cols, figsize=(3.1 * cols + 2.2, 2.6 * rows + 0.3), squeeze=False, sharex=True)
    legend: dict = {}
    for ax, t in zip(axes.flat, types):
        baseline_drawn = False
        for r, name in zip(results, names):
            ms = sorted((m for m in r["modules"] if m["type"] == t), key=lambda m: m["layer"] or 0)
            if not ms:
                continue
            layers = [m["layer"] for m in ms]
            style = dict(marker="o", linestyle="-") if r["kind"] == "full" else dict(marker="^", linestyle="--")
            line, = ax.plot(layers, [m["rank90"] for m in ms], color=colors[name], markersize=3, **style)
            legend.setdefault(name, line)
            if not baseline_drawn:
                legend.setdefault("random", ax.plot(layers, [m["baseline_rank90"] for m in ms], color="grey",
                                                     linestyle=":")[0])
                baseline_drawn = True
        ax.set_title(t, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer", fontsize=8)
        ax.set_ylabel("rank for 90 %", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(types):]:
        ax.axis("off")
    right = 1 - 2.0 / fig.get_figwidth()  # room for the legend, right of the panels
    fig.legend(list(legend.values()), list(legend), loc="upper left", bbox_to_anchor=(right + 0.01, 0.98),
               fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, right, 1))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
