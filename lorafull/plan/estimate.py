"""The plan of a study before any GPU time is spent: parameters, memory per GPU, fit, step time and
hours per epoch of every run.

    python -m lorafull.plan configs/belle_comparative.yaml [dotted.key=value ...]

For every run (launch.grid --dry-run prints the same table):
- trainable / total / added parameters, counted on the meta device (lorafull.plan.params);
- tokens = samples x tokens/sample x epochs (train.max_tokens replaces epochs; lorafull.plan.tokens: counted from the data file, set by
  plan.avg_tokens_per_sample, or assumed max_length / 2, which the row then says);
- memory per GPU by part, and whether it fits slurm.gpu_mem_gb with plan.mem_margin free
  (lorafull.plan.memory; micro_batch_size and gradient_checkpointing: auto are chosen first by
  lorafull.plan.auto, and the notes say how);
- the time of an optimizer step as compute + optimizer + communication + offload on plan.hardware
  (lorafull.plan.steptime), or from a measured probe of the run's shape (lorafull.plan.calibration:
  the row's basis is then "measured", else "modelled");
- the start-up of the run, once: set-up, model load, tokenization and the first step (lorafull.plan.startup;
  measured by a calibration probe where one ran);
- hours per epoch = (steps x step time + start-up) / epochs (wall clock), GPU-hours = wall hours x ranks.
"""
from __future__ import annotations

import sys
import time
from typing import Optional

from lorafull.config import ConfigError, RunConfig, Study, load_study
from lorafull.plan.calibration import load_calibration, measured_step, shape_key, shape_of
from lorafull.plan.hardware import resolve_hardware
from lorafull.plan.memory import memory_gb, world_size
from lorafull.plan.params import arch_dict, count_params, grow_vocab, resolve_arch
from lorafull.plan.startup import measured_startup, modelled_startup
from lorafull.plan.steptime import grad_accumulation, step_time
from lorafull.plan.judge import judge_lines, judge_servers
from lorafull.plan.table import format_plan
from lorafull.models.method_table import method_of
from lorafull.plan.tokens import token_estimate


def _blank_row(run: RunConfig, study: Study) -> dict:
    return {"run": run.name, "method": run.method.kind, "method_label": method_of(run).label(run.method, sep=""),
            "dtype": run.model.dtype, "zero_stage": run.train.zero_stage,
            "world_size": world_size(run, study), "trainable_params": None, "total_params": None,
            "added_params": None, "mem_per_gpu_gb": None, "mem_parts_gb": None, "fits": None,
            "gpu_mem_gb": study.slurm.gpu_mem_gb, "tokens": None, "gpu_hours": None, "hours_per_epoch": None,
            "wall_hours": None,
            "flops_per_token": None, "step_s": None, "step_parts_s": None, "startup_s": None, "startup_parts_s": None,
            "basis": None, "shape": None,
            "shape_key": None, "reference_hours_per_epoch": study.plan.reference_hours_per_epoch.get(run.name),
            "notes": []}


def _fit(row: dict, mem: dict, study: Study) -> None:
    usable = study.slurm.gpu_mem_gb * (1 - study.plan.mem_margin)
    row.update({"mem_per_gpu_gb": mem["total"], "mem_parts_gb": mem, "fits": mem["total"] <= usable})
    if not row["fits"]:
        biggest = max(("weights", "gradients", "optimizer", "activations"), key=lambda k: mem.get(k, 0))
        row["notes"].append(f"needs ~{mem['total']:.1f} GB/GPU > {usable:.1f} usable of {study.slurm.gpu_mem_gb:g} GB "
                            f"(largest: {biggest} {mem.get(biggest, 0):.1f} GB): raise train.zero_stage, turn on "
                            f"train.gradient_checkpointing or offload, or lower micro_batch_size")


def _timing(row: dict, run: RunConfig, study: Study, arch: dict, counts: dict, measured: Optional[dict]) -> None:
    hw = resolve_hardware(study.plan.hardware, gpu_tflops=study.plan.gpu_tflops)
    modelled = step_time(run, study, arch, counts, row["tokens_per_sample"], hw)
    row["flops_per_token"] = modelled["flops_per_token"]
    if measured is not None:
        parts = measured_step(measured, grad_accumulation(run, study), row["tokens_per_sample"])
        row["basis"] = "measured"
    else:
        parts = {k: modelled[k] for k in ("compute", "optimizer", "communication", "offload", "dequantize", "hidden",
                                          "total")}
        row["basis"] = "modelled"
    row["step_parts_s"], row["step_s"] = parts, parts["total"]
    if row["tokens"] is None or not row["samples"]:
        return
    steps_per_epoch = max(1, row["samples"] // run.train.global_batch_size)
    steps = steps_per_epoch * row["epochs"]
    if run.train.max_steps is not None:
        steps = min(steps, run.train.max_steps)
    row["steps"] = steps
    # once per run, beside its steps: set-up, model load, tokenization, the first step (lorafull.plan.startup)
    if measured is not None:
        start = measured_startup(measured, parts["total"])
    else:
        start = modelled_startup(run, counts, row["samples"], row["tokens_per_sample"], parts["total"], hw)
    row["startup_s"], row["startup_parts_s"] = start["total"], start
    wall = steps * parts["total"] + start["total"]
    row["wall_hours"] = wall / 3600
    row["hours_per_epoch"] = wall / 3600 / row["epochs"] if row["epochs"] else None
    row["gpu_hours"] = wall / 3600 * row["world_size"]


def estimate_run(run: RunConfig, study: Study, calibration: Optional[dict] = None) -> dict:
    """The plan of one run (None where unknown, with a note saying why)."""
    row = _blank_row(run, study)
    tok = token_estimate(run, study)
    row.update({k: tok[k] for k in ("samples", "tokens_per_sample", "tokens_source", "tokens", "epochs")})
    row["notes"] += tok["notes"]
    row["arch"] = arch_name = resolve_arch(run, study)
    if arch_name is None:
        row["notes"].append(f"no architecture: {run.model.name_or_path} has no config.json here; set model.arch (e.g. llama-7b)")
        return row
    try:
        arch = arch_dict(arch_name)
        counts = count_params(arch_name, run)
    except (OSError, ValueError, KeyError) as e:
        row["notes"].append(f"cannot count parameters of {arch_name}: {e}")
        return row
    arch, counts = grow_vocab(run, study, arch_name, arch, counts)
    row.update({"trainable_params": counts["trainable"], "total_params": counts["total"],
                "added_params": counts["added"]})
    from lorafull.plan.auto import settle_in_plan  # micro_batch_size / gradient_checkpointing: auto
    run = settle_in_plan(run, study, arch, counts, row)
    shape = shape_of(run, study, arch)
    row["shape"], row["shape_key"] = shape, shape_key(shape)
    calibration = load_calibration(study) if calibration is None else calibration
    measured = calibration.get(row["shape_key"])
    mem = memory_gb(run, study, arch, counts)
    if measured is not None and measured.get("peak_mem_gb") is not None:
        mem = {"measured": measured["peak_mem_gb"], "total": measured["peak_mem_gb"]}
    _fit(row, mem, study)
    _timing(row, run, study, arch, counts, measured)
    return row


def peak_memory_gb(run: RunConfig, study: Study, micro_batch: Optional[int] = None,
                   checkpointing: Optional[bool] = None) -> Optional[dict]:
    """Modelled peak memory per GPU (by part and "total", GiB) of this run with micro batch
    `micro_batch` and gradient checkpointing on/off (default: the run's own); None when the run's
    architecture is not known here."""
    arch_name = resolve_arch(run, study)
    if arch_name is None:
        return None
    arch, counts = grow_vocab(run, study, arch_name, arch_dict(arch_name), count_params(arch_name, run))
    return memory_gb(run, study, arch, counts, micro_batch=micro_batch, checkpointing=checkpointing)


def estimate_study(study: Study) -> tuple[list[dict], dict]:
    """(one row per run, totals over the study)."""
    calibration = load_calibration(study)
    rows = [estimate_run(run, study, calibration) for run in study.runs]
    totals = {
        "runs": len(rows),
        "gpu_hours": sum(r["gpu_hours"] or 0 for r in rows),
        "tokens": sum(r["tokens"] or 0 for r in rows),
        "not_fitting": [r["run"] for r in rows if r["fits"] is False],
        "unknown": [r["run"] for r in rows if r["gpu_hours"] is None or r["fits"] is None],
        "assumed_tokens": [r["run"] for r in rows if r["tokens_source"].startswith("assumed")],
        "max_mem_per_gpu_gb": max((r["mem_per_gpu_gb"] or 0 for r in rows), default=0),
        "measured": sum(r["basis"] == "measured" for r in rows),
        "mfu": study.plan.mfu,
        "hardware": study.plan.hardware.preset,
    }
    return rows, totals


def main(argv: Optional[list[str]] = None) -> int:
    from lorafull.runs import command_parser

    parser = command_parser("python -m lorafull.plan", __doc__, "python -m lorafull.plan configs/demo.yaml",
                            "python -m lorafull.plan configs/belle_comparative.yaml slurm.nodes=2")
    parser.add_argument("config", metavar="CONFIG", help="a study file (YAML)")
    parser.add_argument("overrides", nargs="*", metavar="dotted.key=value", help="settings put over the file's")
    args = parser.parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        study = load_study(args.config, args.overrides, prepare=True)
        rows, totals = estimate_study(study)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(rows, totals))
    for line in judge_lines(judge_servers(study)):  # eval.judge.serve: the judge server's GPU-hours
        print(line)
    print(f"(planned in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
