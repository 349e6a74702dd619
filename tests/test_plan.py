"""The plan: parameter counts on the meta device, memory per GPU and its fit, tokens and GPU-hours."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from helpers.common import REPO, alpaca_records, write_jsonl
from lorafull.config import load_study
from lorafull.plan.estimate import estimate_run, estimate_study, format_plan, main


def study_file(tmp_path: Path, base: dict, runs: list[dict], slurm: dict | None = None, plan: dict | None = None) -> Path:
    body = {"study": {"name": "t", "output_dir": str(tmp_path / "study")}, "base": base, "runs": runs,
            "slurm": slurm or {"gpus_per_node": 8, "gpu_mem_gb": 40}, "plan": plan or {}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


LLAMA_7B = {"name_or_path": "/PATH/TO/llama-7b-hf", "arch": "llama-7b", "dtype": "bf16"}
LORA_R8 = {"kind": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"}


def test_lora_r8_all_linear_adds_the_papers_parameter_counts(tmp_path):
    path = study_file(tmp_path, {"model": LLAMA_7B, "method": LORA_R8, "data": {"num_samples": 1000}}, [
        {"name": "lora7b"},
        {"name": "lora13b", "model.name_or_path": "/PATH/TO/llama-13b-hf", "model.arch": "llama-13b"},
        {"name": "full7b", "method.kind": "full"},
    ])
    rows, totals = estimate_study(load_study(path))
    by = {r["run"]: r for r in rows}
    assert by["lora7b"]["trainable_params"] == 19_988_480 == by["lora7b"]["added_params"]
    assert by["lora13b"]["trainable_params"] == 31_293_440 == by["lora13b"]["added_params"]
    # the adapters come on top of the frozen base; full fine-tuning trains the base itself
    assert by["lora7b"]["total_params"] == by["full7b"]["total_params"] + 19_988_480
    assert by["full7b"]["trainable_params"] == by["full7b"]["total_params"] and by["full7b"]["added_params"] == 0
    text = format_plan(rows, totals)
    assert "19,988,480" in text and "31,293,440" in text


def test_a_run_that_cannot_fit_says_so_and_more_sharding_fits(tmp_path):
    base = {"model": {**LLAMA_7B, "name_or_path": "/PATH/TO/llama-13b-hf", "arch": "llama-13b"},
            "method": {"kind": "full"}, "data": {"num_samples": 1000, "max_length": 1024},
            "train": {"micro_batch_size": 1}}
    path = study_file(tmp_path, base, [
        {"name": "z0", "train.zero_stage": 0},
        {"name": "z1", "train.zero_stage": 1},
        {"name": "z2", "train.zero_stage": 2},
        {"name": "z3", "train.zero_stage": 3, "train.gradient_checkpointing": True},
        {"name": "z3_offload", "train.zero_stage": 3, "train.gradient_checkpointing": True, "train.offload": True},
    ])
    rows, totals = estimate_study(load_study(path))
    by = {r["run"]: r for r in rows}
    assert by["z0"]["fits"] is False
    assert any("40 GB" in n and "zero_stage" in n for n in by["z0"]["notes"])
    assert by["z3"]["fits"] is True
    # each ZeRO stage shards one more kind of state over the 8 GPUs
    mem = [by[n]["mem_per_gpu_gb"] for n in ("z0", "z1", "z2", "z3", "z3_offload")]
    assert mem == sorted(mem, reverse=True) and len(set(mem)) == 5
    # 13B: 16 bytes per trained parameter (weights, grads, fp32 master, m, v) is about 194 GiB at ZeRO-0
    assert 190 < by["z0"]["mem_parts_gb"]["weights"] + by["z0"]["mem_parts_gb"]["gradients"] + \
        by["z0"]["mem_parts_gb"]["optimizer"] < 200
    assert "z0" in totals["not_fitting"] and "z3" not in totals["not_fitting"]
    assert "do not fit" in format_plan(rows, totals)


def test_tokens_are_counted_from_the_data_file_with_the_runs_tokenizer(tmp_path, tiny_tokenizer_dir):
    data = write_jsonl(tmp_path / "train.jsonl", alpaca_records(50))
    base = {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(tiny_tokenizer_dir), "dtype": "fp32"},
            "method": {"kind": "full"}, "data": {"train": str(data), "max_length": 64},
            "train": {"epochs": 3, "global_batch_size": 10, "micro_batch_size": 10}}
    path = study_file(tmp_path, base, [
        {"name": "all"},
        {"name": "subset", "data.num_samples": 20},
        {"name": "capped", "train.max_steps": 2},
        {"name": "lora", "method.kind": "lora"},
    ], slurm={"gpus_per_node": 1, "gpu_mem_gb": 1})
    rows, _ = estimate_study(load_study(path))
    by = {r["run"]: r for r in rows}
    per_sample = by["all"]["tokens_per_sample"]
    assert by["all"]["tokens_source"].startswith("counted (tokenizer)")
    assert 5 < per_sample < 64  # "Human: What is 3 plus 4?\n\nAssistant: 7" and the like
    assert by["all"]["samples"] == 50 and by["all"]["tokens"] == pytest.approx(50 * per_sample * 3)
    assert by["subset"]["tokens"] == pytest.approx(20 * per_sample * 3)
    assert by["capped"]["tokens"] == pytest.approx(2 * 10 * per_sample)  # 2 steps of 10 samples
    # LoRA skips the weight gradients of the frozen base: fewer FLOPs per token, fewer GPU-hours
    assert by["lora"]["flops_per_token"] < by["all"]["flops_per_token"]
    assert 0 < by["lora"]["gpu_hours"] < by["all"]["gpu_hours"]
    assert by["all"]["trainable_params"] == by["all"]["total_params"] > 0


def test_gpu_hours_follow_the_stated_formula(tmp_path):
    base = {"model": LLAMA_7B, "method": {"kind": "full"}, "data": {"num_samples": 1_000_000, "max_length": 512},
            "train": {"epochs": 2}}
    path = study_file(tmp_path, base, [{"name": "ft"}], plan={"mfu": 0.5, "gpu_tflops": 100, "avg_tokens_per_sample": 200})
    row = estimate_run(load_study(path).runs[0], load_study(path))
    n_matmul = row["total_params"] - 32000 * 4096  # all but the input embedding
    flops = 6 * n_matmul + 12 * 32 * 4096 * 200
    assert row["tokens"] == 1_000_000 * 200 * 2 and row["tokens_source"] == "plan.avg_tokens_per_sample"
    assert row["gpu_hours"] == pytest.approx(row["tokens"] * flops / (0.5 * 100e12) / 3600)
    assert row["hours_per_epoch"] == pytest.approx(row["gpu_hours"] / 2 / 8)


def test_chained_runs_plan_with_their_roots_architecture_and_unknowns_are_named(tmp_path):
    path = study_file(tmp_path, {"model": LLAMA_7B, "method": LORA_R8, "data": {"num_samples": 100}}, [
        {"name": "ft", "method.kind": "full"},
        {"name": "ft_math", "model.name_or_path": "run:ft", "data.num_samples": 50},
        {"name": "mystery", "model.name_or_path": "/PATH/TO/unknown-model", "model.arch": None},
    ])
    rows, totals = estimate_study(load_study(path))
    by = {r["run"]: r for r in rows}
    assert by["ft_math"]["trainable_params"] == 19_988_480 and by["ft_math"]["arch"] == "llama-7b"
    assert by["mystery"]["trainable_params"] is None and by["mystery"]["fits"] is None
    assert any("model.arch" in n for n in by["mystery"]["notes"])
    assert "mystery" in totals["unknown"]
    assert "mystery: no architecture" in format_plan(rows, totals)


def test_the_papers_grid_plans_in_under_5_seconds(capsys):
    """Planning itself (imports of torch/transformers/peft are a one-off of any Python tool and excluded)."""
    import peft  # noqa: F401  the one-off imports, outside the timed part
    import transformers  # noqa: F401

    start = time.perf_counter()
    assert main([str(REPO / "configs" / "belle_comparative.yaml")]) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "17,891,328" in out and "28,016,640" in out and "every run fits" in out  # Baize's six modules at r 8
    assert seconds < 5, f"planning took {seconds:.1f} s"


def test_a_scratch_model_is_planned_with_its_tokenizers_vocabulary(tmp_path):
    """The demo's tokenizer (1024 entries) is larger than tiny-llama's vocabulary (512): training grows
    the embeddings, and the plan counts the model that trains, not the arch file."""
    from lorafull.demo import make_data
    from lorafull.models.tiny import build_tiny_model

    data = make_data(tmp_path / "data")
    base = {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(data / "tokenizer"), "dtype": "fp32"},
            "method": {"kind": "full"}, "data": {"train": str(data / "corpus.jsonl"), "format": "text"}}
    path = study_file(tmp_path, base, [{"name": "pretrain"}], slurm={"gpus_per_node": 1, "gpu_mem_gb": 1})
    row = estimate_run(load_study(path).runs[0], load_study(path))
    real = sum(p.numel() for p in build_tiny_model("tiny-llama", vocab_size=1024).parameters())
    assert row["trainable_params"] == row["total_params"] == real
    assert row["samples"] == 2400 and row["tokens_source"] == "counted (tokenizer)"
