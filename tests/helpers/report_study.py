"""A finished study shaped like the demo, written by hand in a second: 13 run folders (a pre-trained
base, four grid groups and two chained math groups, two seeds each) with their config.yaml,
status.json, metrics.jsonl, scores.jsonl, analysis/tasks.json and analysis/spectrum.json (+ .png),
STUDY_DIR/study.yaml with the study's run order, and the plan the report holds runs against.
Scores are drawn from a fixed RNG around a mean per group, so the report has real intervals,
comparisons both beyond and within noise, and every figure the demo draws -- without training.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import yaml

from helpers.common import write_jsonl

CLASSES = ("math", "rewrite", "extract", "classification", "closed qa")
TARGETS = ("math", "rewrite", "extract", "classification", "closed_qa")
SOURCES = {"facts_en": 36, "facts_zh": 20}
# group -> (method, r, lr, num_samples, epochs, parent group, mean score, learning, forgetting, sig)
GROUPS = {
    "pretrain": ("full", 8, 3e-3, None, 4, None, 0.0, 0.0, 0.0, None),
    "full-num_samples600": ("full", 8, 1e-3, 600, 8, "pretrain", 0.53, 0.56, 0.0, ("ceda8b0c", "2e120846")),
    "full-num_samples2400": ("full", 8, 1e-3, 2400, 2, "pretrain", 0.55, 0.58, 0.0, ("4f816010", "ec2df3bd")),
    "lora-num_samples600": ("lora", 8, 5e-3, 600, 8, "pretrain", 0.25, 0.21, 0.03, ("ff88b81b", "d304ce8d")),
    "lora-num_samples2400": ("lora", 8, 5e-3, 2400, 2, "pretrain", 0.21, 0.22, 0.06, ("b696f2f1", "9ee27b12")),
    "ft_math_full": ("full", 8, 3e-4, None, 2, "full-num_samples2400", 0.53, -0.04, 0.0, None),
    "ft_math_lora": ("lora", 8, 2e-3, None, 2, "full-num_samples2400", 0.48, -0.09, 0.0, None),
}


def run_names() -> list[tuple[str, str, int]]:
    """(run folder, group, seed) in the study's order: the base first, then the grid, then the math runs."""
    out = [("pretrain", "pretrain", 42)]
    for group, spec in GROUPS.items():
        if group == "pretrain":
            continue
        for seed in (1, 2):
            sig = spec[9]
            out.append((f"{group}-seed{seed}" + (f"-{sig[seed - 1]}" if sig else ""), group, seed))
    return out


def _items(rng: random.Random, mean: float, n: int) -> list[float]:
    return [1.0 if rng.random() < mean else 0.0 for _ in range(n)]


def _config(study: Path, name: str, group: str, seed: int, parents: dict) -> None:
    from lorafull.config import RunConfig, save_run_config

    kind, r, lr, samples, epochs, parent = GROUPS[group][:6]
    run = RunConfig(name=name, group=None if group == "pretrain" else group)
    run.method.kind, run.method.r, run.train.lr, run.train.epochs, run.train.seed = kind, r, lr, epochs, seed
    run.data.num_samples = samples
    run.data.train = str(study / "data" / ("corpus.jsonl" if group == "pretrain" else
                                           "math.jsonl" if group.startswith("ft_math") else "instructions.jsonl"))
    run.model.name_or_path = "scratch:tiny-llama" if parent is None else f"run:{parents[parent, seed]}"
    save_run_config(run, study / "runs" / name, f"sig{seed}")


def _metrics(run_dir: Path, rng: random.Random, kind: str, steps: int) -> None:
    losses = [{"step": s, "epoch": s / 40, "loss": 6.5 * (0.985 ** s) + 0.6 + 0.05 * rng.random(), "lr": 1e-3,
               "grad_norm": 1.0, "tokens_per_s": 2000.0, "step_time_s": 0.1, "peak_mem_gb": 0.61}
              for s in range(10, steps + 1, 10)]
    wall = 0.1 * steps + 5.0
    summary = {"summary": True, "wall_time_s": wall, "hours_per_epoch": wall / 3600 / 2, "steps": steps,
               "tokens_seen": steps * 600, "trainable_params": 230208 if kind == "full" else 19520,
               "total_params": 230208 if kind == "full" else 249728, "added_params": 0 if kind == "full" else 19520,
               "world_size": 1, "device": "cpu"}
    write_jsonl(run_dir / "metrics.jsonl", losses + [summary])


def _analysis(run_dir: Path, rng: random.Random, group: str, kind: str) -> None:
    from lorafull.analysis.forgetting import with_intervals
    from lorafull.analysis.spectrum import plot_spectrum

    learning, forgetting = GROUPS[group][7:9]
    base = {t: {"item_scores": _items(random.Random(i), 0.05, 10)} for i, t in enumerate(TARGETS)}
    base.update({t: {"item_scores": [1.0] * n} for t, n in SOURCES.items()})
    tasks = {t: {"item_scores": _items(rng, max(0.0, 0.05 + learning), 10)} for t in TARGETS}
    tasks.update({t: {"item_scores": _items(rng, 1.0 - forgetting, n)} for t, n in SOURCES.items()})
    for d in (base, tasks):
        for v in d.values():
            v["score"] = sum(v["item_scores"]) / len(v["item_scores"])
    mean = lambda d, names: sum(d[t]["score"] for t in names) / len(names)  # noqa: E731
    result = {"run": run_dir.name, "target_tasks": list(TARGETS), "source_tasks": list(SOURCES), "tasks": tasks,
              "base": base, "learning": mean(tasks, TARGETS) - mean(base, TARGETS),
              "forgetting": mean(base, SOURCES) - mean(tasks, SOURCES), "checkpoints": []}
    (run_dir / "analysis").mkdir(parents=True, exist_ok=True)
    (run_dir / "analysis" / "tasks.json").write_text(json.dumps(with_intervals(result)))
    types = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    top = 18 if kind == "full" else 5
    modules = [{"name": f"model.layers.{layer}.{t}", "layer": layer, "type": t, "rank90": top + rng.randint(-3, 3),
                "baseline_rank90": 40, "max_rank": 64} for layer in (0, 1) for t in types]
    spec = {"run": run_dir.name, "kind": kind, "modules": modules,
            "summary": {"modules": len(modules), "median_rank90": top, "median_baseline_rank90": 40}}
    (run_dir / "analysis" / "spectrum.json").write_text(json.dumps(spec))
    drawn = run_dir.parent / f".spectrum-{kind}.png"  # one figure per method, copied: drawing 13 takes long
    if not drawn.exists():
        plot_spectrum([spec], drawn)
    shutil.copyfile(drawn, run_dir / "analysis" / "spectrum.png")


def make_demo_study(root: Path) -> Path:
    """STUDY_DIR of a finished demo-shaped study under root; returns it (report not built yet)."""
    study = root / "demo"
    names = run_names()
    parents = {(g, s): n for n, g, s in names} | {("pretrain", s): "pretrain" for s in (1, 2)}
    (study / "data").mkdir(parents=True)
    (study / "study.yaml").write_text(yaml.safe_dump({"study": {"name": "demo", "seeds": [1, 2]},
                                                      "runs": [n for n, _, _ in names]}))
    plan = {}
    for i, (name, group, seed) in enumerate(names):
        rng = random.Random(1000 + i)
        kind, mean = GROUPS[group][0], GROUPS[group][6]
        run_dir = study / "runs" / name
        _config(study, name, group, seed, parents)
        (run_dir / "status.json").write_text(json.dumps({"state": "done", "stage": "evaluate", "step": 300}))
        _metrics(run_dir, rng, kind, 600 if group == "pretrain" else 300)
        write_jsonl(run_dir / "scores.jsonl", [
            {"id": f"{c}-{k}", "class": c, "score": s, "judge": "reference", "tokens": 0, "cost": 0.0}
            for c in CLASSES for k, s in enumerate(_items(rng, mean, 40))])
        _analysis(run_dir, rng, group, kind)
        plan[name] = {"hours_per_epoch": 0.004, "mem_per_gpu_gb": 1.5, "basis": "modelled", "startup_s": 4.2}
    (study / "launch").mkdir()
    (study / "launch" / "plan.json").write_text(json.dumps(plan))
    return study
