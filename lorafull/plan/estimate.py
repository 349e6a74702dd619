"""The plan of a study before any GPU time is spent: parameters, memory per GPU, fit, GPU-hours.

    python -m lorafull.plan configs/belle_comparative.yaml [dotted.key=value ...]

For every run (launch.grid --dry-run prints the same table):
- trainable / total / added parameters, counted on the meta device from the architecture's config
  (no weights are read): model.name_or_path when it is a folder with a config.json here, its
  parent's architecture for run:<name>, else model.arch (a shipped arch or a config.json path);
- memory per GPU for the run's ZeRO stage, precision and world size:
      weights    P x bytes(dtype)                        / N at ZeRO-3 (offloaded at ZeRO-3 + offload)
      gradients  T x bytes(dtype)                        / N at ZeRO-2 and 3
      optimizer  T x (4 fp32 master, unless fp32, + 4 m + 4 v) / N at ZeRO-1..3 (0 with offload)
      activations micro_batch x max_length x (20 h + 8 i) bytes per layer at 16 bit (attention by SDPA,
                 O(s) memory), + LoRA dropout copies of each adapted input, + logits (10 bytes per vocab
                 entry: bf16 logits, fp32 copy, gradient); checkpointing: layer inputs + one layer
      overhead   plan.overhead_gb (CUDA context, communication buckets)
  and whether it fits slurm.gpu_mem_gb with plan.mem_margin kept free (micro_batch_size and
  gradient_checkpointing: auto are chosen first by lorafull.plan.auto, and the notes say how);
- tokens = samples x tokens/sample x epochs (capped by train.max_steps), where samples =
  data.num_samples or the file's records, and tokens/sample = plan.avg_tokens_per_sample, else the
  mean over the file's first records tokenized with the run's tokenizer, else max_length / 2;
- GPU-hours = tokens x FLOPs/token / (plan.mfu x plan.gpu_tflops), FLOPs/token =
      full:  6 N + 12 L h s                     (N = parameters in matmuls: all but the input embedding)
      lora:  4 N + 6 T + 12 L h s               (frozen weights: forward + input gradients only)
      + 2 N + 4 L h s with gradient checkpointing (the recomputed forward)
  with L layers, h hidden size, s tokens per sample.
"""
from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from lorafull.config import ConfigError, RunConfig, Study, load_study

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
GB = 1024 ** 3
SAMPLE_RECORDS = 2000  # records read to estimate tokens per sample
COUNT_LINES_MAX_BYTES = 256 * 1024 ** 2  # larger files: records estimated from their mean size
FORMULA = ("GPU-h = tokens x FLOPs/token / (mfu x peak); FLOPs/token: full 6N, lora 4N + 6T, "
           "+ 12 L h s attention, + 2N + 4 L h s with gradient checkpointing")


# ---------------------------------------------------------------------------------------------
# Architecture and parameter counts
# ---------------------------------------------------------------------------------------------
def _root_run(run: RunConfig, study: Study) -> RunConfig:
    """The run a chain of run:<name> references starts from (load_study has ruled out cycles)."""
    while run.parent is not None:
        run = study.run(run.parent)
    return run


def resolve_arch(run: RunConfig, study: Study) -> Optional[str]:
    """What count_params_meta accepts for this run's base model, or None when nothing here names it."""
    run = _root_run(run, study)  # a chained run has its root's architecture
    path = run.model.name_or_path
    if path.startswith("scratch:"):
        return path
    if (Path(path).expanduser() / "config.json").exists():
        return str(Path(path).expanduser())
    arch = run.model.arch
    if arch:
        p = Path(arch).expanduser()
        if p.suffix == ".json" and not p.is_absolute():
            p = (Path(study.path).parent / p) if (Path(study.path).parent / p).exists() else p.resolve()
        return str(p) if p.suffix == ".json" else arch
    return None


def arch_dict(arch: str) -> dict:
    """The config dict (hidden_size, layers, ...) behind a resolve_arch() answer."""
    from lorafull.models.tiny import arch_config

    if arch.startswith("scratch:"):
        arch = arch[len("scratch:"):]
    p = Path(arch)
    if (p / "config.json").exists():
        return json.loads((p / "config.json").read_text())
    return arch_config(arch)


@functools.lru_cache(maxsize=256)
def _count(arch: str, method_key: str) -> dict:
    from lorafull.config import MethodConfig
    from lorafull.models.load import count_params_meta

    return dict(count_params_meta(arch, MethodConfig(**json.loads(method_key))))


def count_params(arch: str, run: RunConfig) -> dict:
    """{"total", "trainable", "added"}, cached: a grid shares a handful of (arch, method) pairs."""
    m = run.method
    key = {"kind": m.kind} if m.kind == "full" else {
        "kind": m.kind, "r": m.r, "alpha": m.alpha, "dropout": m.dropout, "target_modules": m.target_modules}
    return _count(arch, json.dumps(key, sort_keys=True))


def _grow_vocab(run: RunConfig, study: Study, arch_name: str, arch: dict, counts: dict) -> tuple[dict, dict]:
    """A scratch: model's embeddings grow to its tokenizer's vocabulary (lorafull.models.load.prepare_base)."""
    tok = _tokenizer_file(run, study)
    if not arch_name.startswith("scratch:") or tok is None:
        return arch, counts
    from tokenizers import Tokenizer

    extra = Tokenizer.from_file(str(tok)).get_vocab_size(with_added_tokens=True) - arch["vocab_size"]
    if extra <= 0:
        return arch, counts
    grown = extra * arch["hidden_size"] * (1 if arch.get("tie_word_embeddings") else 2)
    counts = {**counts, "total": counts["total"] + grown}
    if run.method.kind == "full":
        counts["trainable"] += grown
    return {**arch, "vocab_size": arch["vocab_size"] + extra}, counts


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------
def _tokenizer_file(run: RunConfig, study: Study) -> Optional[Path]:
    root = _root_run(run, study)
    for cand in (run.model.tokenizer, root.model.tokenizer, root.model.name_or_path):
        if cand and not cand.startswith(("run:", "scratch:")) and (Path(cand) / "tokenizer.json").exists():
            return Path(cand) / "tokenizer.json"
    return None


@functools.lru_cache(maxsize=64)
def _file_stats(path: str, fmt: str, tokenizer_file: Optional[str], max_length: int) -> dict:
    """Records in the file and mean tokens per record (first SAMPLE_RECORDS records)."""
    from lorafull.data.read import detect_format, iter_records, to_sample

    size = os.path.getsize(path)
    lengths, last_bytes, n = [], 0, 0
    tok = None
    if tokenizer_file:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer_file)
    for lineno, rec, done_bytes in iter_records(path):
        if fmt == "auto":
            fmt = detect_format(rec, f"{path}:{lineno}")
        n += 1
        if n <= SAMPLE_RECORDS:
            sample = to_sample(rec, fmt, f"{path}:{lineno}")
            if sample is not None:
                text = "".join((f"Human: {q}\n\nAssistant: " if q is not None else "") + a + " "
                               for q, a in sample.turns)
                count = len(tok.encode(text).ids) if tok else len(text.encode()) / 3.0  # ~3 bytes/token
                lengths.append(min(count, max_length))
            last_bytes = done_bytes
        elif size > COUNT_LINES_MAX_BYTES:  # too big to read through: extrapolate from the mean size
            n = int(size / max(last_bytes / SAMPLE_RECORDS, 1))
            break
    mean = sum(lengths) / len(lengths) if lengths else None
    return {"records": n, "tokens_per_sample": mean, "counted_with": "tokenizer" if tok else "bytes/3"}


def token_estimate(run: RunConfig, study: Study) -> dict:
    """{"samples", "tokens_per_sample", "tokens_source", "tokens", "epochs"} for one run."""
    notes = []
    records, per_sample, source = None, study.plan.avg_tokens_per_sample, "plan.avg_tokens_per_sample"
    data = run.data.train
    if data and Path(data).is_file():
        tok = _tokenizer_file(run, study)
        try:
            stats = _file_stats(data, run.data.format, str(tok) if tok else None, run.data.max_length)
        except Exception as e:  # a bad file is the data stage's error to report; the plan goes on
            notes.append(f"cannot read {data}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        else:
            records = stats["records"]
            if per_sample is None and stats["tokens_per_sample"] is not None:
                per_sample, source = stats["tokens_per_sample"], f"counted ({stats['counted_with']})"
    if per_sample is None:
        per_sample, source = run.data.max_length / 2, "assumed max_length/2"
    samples = run.data.num_samples
    if samples is None:
        samples = records
    elif records is not None:
        samples = min(samples, records)
    if samples is None:
        notes.append("unknown number of samples: set data.num_samples")
        return {"samples": None, "tokens_per_sample": per_sample, "tokens_source": source, "tokens": None,
                "epochs": run.train.epochs, "notes": notes}
    epochs = run.train.epochs
    if run.train.max_steps is not None:
        epochs = min(epochs, run.train.max_steps * run.train.global_batch_size / max(samples, 1))
    return {"samples": samples, "tokens_per_sample": per_sample, "tokens_source": source,
            "tokens": samples * per_sample * epochs, "epochs": epochs, "notes": notes}


# ---------------------------------------------------------------------------------------------
# Memory and compute
# ---------------------------------------------------------------------------------------------
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def _adapted_inputs(run: RunConfig, h: int, i: int) -> int:
    """Sum of the input widths of the linear layers LoRA adapts in one decoder layer."""
    width = {"q_proj": h, "k_proj": h, "v_proj": h, "o_proj": h, "gate_proj": h, "up_proj": h, "down_proj": i}
    t = run.method.target_modules
    names = {"attention": _ATTENTION, "mlp": _MLP, "all-linear": _ATTENTION + _MLP}.get(t, t) if isinstance(t, str) else t
    return sum(width.get(n, h) for n in names)


def world_size(run: RunConfig, study: Study) -> int:
    return max(1, study.slurm.nodes * (run.train.nproc or study.slurm.gpus_per_node))


def memory_gb(run: RunConfig, study: Study, arch: dict, counts: dict) -> dict:
    """Estimated peak memory of one GPU, by part, in GiB."""
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

    tokens = run.train.micro_batch_size * run.data.max_length
    act_scale = b / 2  # the 20h + 8i bytes/token/layer figure is for 16-bit activations
    per_layer = tokens * (20 * h + 8 * i) * act_scale
    if run.method.kind == "lora" and run.method.dropout > 0:  # dropout output + mask per adapted input
        per_layer += tokens * _adapted_inputs(run, h, i) * (b + 1)
    if run.train.gradient_checkpointing:
        activations = L * tokens * h * b + per_layer
    else:
        activations = L * per_layer
    activations += tokens * V * (b + 8)
    parts = {"weights": weights, "gradients": grads, "optimizer": optimizer, "activations": activations}
    out = {k: v / GB for k, v in parts.items()}
    out["overhead"] = study.plan.overhead_gb
    out["total"] = sum(out.values())
    return out


def flops_per_token(run: RunConfig, arch: dict, counts: dict, tokens_per_sample: float) -> float:
    h, L, V = arch["hidden_size"], arch["num_hidden_layers"], arch["vocab_size"]
    n_matmul = counts["total"] - counts["trainable"] - V * h if run.method.kind == "lora" else counts["total"] - V * h
    attention = 4 * L * h * tokens_per_sample  # forward: QK^T and attention x V
    if run.method.kind == "full":
        flops = 6 * n_matmul + 3 * attention
    else:
        flops = 4 * n_matmul + 6 * counts["trainable"] + 3 * attention
    if run.train.gradient_checkpointing:
        flops += 2 * n_matmul + attention
    return flops


def estimate_run(run: RunConfig, study: Study) -> dict:
    """The plan of one run (keys listed in the module docstring's order; None where unknown)."""
    row = {"run": run.name, "method": run.method.kind, "dtype": run.model.dtype, "zero_stage": run.train.zero_stage,
           "world_size": world_size(run, study), "trainable_params": None, "total_params": None,
           "added_params": None, "mem_per_gpu_gb": None, "mem_parts_gb": None, "fits": None,
           "gpu_mem_gb": study.slurm.gpu_mem_gb, "tokens": None, "gpu_hours": None, "hours_per_epoch": None,
           "flops_per_token": None, "notes": []}
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
    arch, counts = _grow_vocab(run, study, arch_name, arch, counts)
    row.update({"trainable_params": counts["trainable"], "total_params": counts["total"],
                "added_params": counts["added"]})
    from lorafull.plan.auto import settle_in_plan  # micro_batch_size / gradient_checkpointing: auto
    run = settle_in_plan(run, study, arch, counts, row)
    mem = memory_gb(run, study, arch, counts)
    usable = study.slurm.gpu_mem_gb * (1 - study.plan.mem_margin)
    row.update({"mem_per_gpu_gb": mem["total"], "mem_parts_gb": mem, "fits": mem["total"] <= usable})
    if not row["fits"]:
        biggest = max(("weights", "gradients", "optimizer", "activations"), key=lambda k: mem[k])
        row["notes"].append(f"needs ~{mem['total']:.1f} GB/GPU > {usable:.1f} usable of {study.slurm.gpu_mem_gb:g} GB "
                            f"(largest: {biggest} {mem[biggest]:.1f} GB): raise train.zero_stage, turn on "
                            f"train.gradient_checkpointing or offload, or lower micro_batch_size")
    fpt = flops_per_token(run, arch, counts, row["tokens_per_sample"])
    row["flops_per_token"] = fpt
    if row["tokens"] is not None:
        seconds = row["tokens"] * fpt / (study.plan.mfu * study.plan.gpu_tflops * 1e12)
        row["gpu_hours"] = seconds / 3600
        if row["epochs"]:
            row["hours_per_epoch"] = row["gpu_hours"] / row["epochs"] / row["world_size"]
    return row


def estimate_study(study: Study) -> tuple[list[dict], dict]:
    """(one row per run, totals over the study)."""
    rows = [estimate_run(run, study) for run in study.runs]
    totals = {
        "runs": len(rows),
        "gpu_hours": sum(r["gpu_hours"] or 0 for r in rows),
        "tokens": sum(r["tokens"] or 0 for r in rows),
        "not_fitting": [r["run"] for r in rows if r["fits"] is False],
        "unknown": [r["run"] for r in rows if r["gpu_hours"] is None or r["fits"] is None],
        "assumed_tokens": [r["run"] for r in rows if r["tokens_source"].startswith("assumed")],
        "max_mem_per_gpu_gb": max((r["mem_per_gpu_gb"] or 0 for r in rows), default=0),
        "formula": FORMULA,
        "mfu": study.plan.mfu,
        "gpu_tflops": study.plan.gpu_tflops,
    }
    return rows, totals


def _num(x, unit: str = "") -> str:
    if x is None:
        return "?"
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def _hours(x) -> str:  # short times in seconds: the demo's runs take seconds
    return "?" if x is None else f"{x:.3g}" if x >= 0.01 else f"{x * 3600:.2g}s"


COLUMNS = ("run", "method", "trainable", "total", "added", "tokens", "mem/GPU GB", "fits", "GPU-h", "h/epoch")


def plan_cells(row: dict) -> list[str]:
    """A row's cells under COLUMNS (launch.grid may print these beside its own columns)."""
    mem = "?" if row["mem_per_gpu_gb"] is None else f"{row['mem_per_gpu_gb']:.1f}"
    fits = {True: "yes", False: "NO", None: "?"}[row["fits"]]
    trainable = "?" if row["trainable_params"] is None else f"{row['trainable_params']:,}"
    return [row["run"], f"{row['method']} {row['dtype']} z{row['zero_stage']}x{row['world_size']}", trainable,
            _num(row["total_params"]), _num(row["added_params"]), _num(row["tokens"]), mem, fits,
            _hours(row["gpu_hours"]), _hours(row["hours_per_epoch"])]


def format_plan(rows: list[dict], totals: dict) -> str:
    """The plan as a fixed-width table, notes under it, and the formula used."""
    table = [list(COLUMNS)] + [plan_cells(r) for r in rows]
    widths = [max(len(line[c]) for line in table) for c in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
             for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for r in rows:
        for note in r["notes"]:
            lines.append(f"  {r['run']}: {note}")
    lines.append(f"total: {totals['runs']} runs, {_num(totals['tokens'])} tokens, {totals['gpu_hours']:.4g} GPU-hours "
                 f"at {totals['mfu']:g} MFU of {totals['gpu_tflops']:g} TFLOP/s"
                 + (f"; {len(totals['not_fitting'])} do not fit: {', '.join(totals['not_fitting'])}"
                    if totals["not_fitting"] else "; every run fits"))
    if totals["assumed_tokens"]:
        lines.append(f"tokens/sample assumed to be max_length/2 for {len(totals['assumed_tokens'])} run(s): set "
                     f"plan.avg_tokens_per_sample, or plan where data.train is readable")
    return "\n".join(lines + [totals["formula"]])


def prepare_study(study: Study) -> None:
    """Call study.prepare ("module:function") with the study, as launch.grid does before planning."""
    if not study.study.prepare:
        return
    module, _, func = study.study.prepare.partition(":")
    try:
        fn = getattr(importlib.import_module(module), func or "prepare")
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{study.path}: study.prepare: cannot load {study.study.prepare!r}: {e}") from None
    fn(study)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2])
        return 2
    start = time.perf_counter()
    try:
        study = load_study(argv[0], argv[1:])
        prepare_study(study)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, totals = estimate_study(study)
    print(format_plan(rows, totals))
    print(f"(planned in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
