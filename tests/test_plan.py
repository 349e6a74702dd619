"""The plan: parameter counts on the meta device, memory per GPU and its fit, tokens and GPU-hours."""
from __future__ import annotations

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
    # the compute part of the step time is the FLOPs formula at mfu x peak; the other parts add to it
    compute_gpu_hours = row["steps"] * row["step_parts_s"]["compute"] * 8 / 3600
    assert compute_gpu_hours == pytest.approx(row["tokens"] * flops / (0.5 * 100e12) / 3600)
    parts = row["step_parts_s"]
    assert parts["total"] == pytest.approx(sum(parts[p] for p in ("compute", "optimizer", "communication", "offload")))
    # wall = steps x step + the run's start-up once (lorafull.plan.startup)
    assert row["gpu_hours"] == pytest.approx((row["steps"] * parts["total"] + row["startup_s"]) * 8 / 3600)
    assert row["gpu_hours"] > compute_gpu_hours
    assert row["hours_per_epoch"] == pytest.approx(row["gpu_hours"] / 2 / 8) and row["basis"] == "modelled"


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


def test_the_papers_grid_plans_with_its_adapter_counts(capsys):
    """The BELLE grid plans end to end: Baize's six modules at r=8 counted, every run fitting. How long the
    plan takes is a benchmark's business (bench/bench_launcher.py), not a timed test's."""
    assert main([str(REPO / "configs" / "belle_comparative.yaml")]) == 0
    out = capsys.readouterr().out
    assert "17,891,328" in out and "28,016,640" in out and "every run fits" in out  # Baize's six modules at r 8


def test_a_scratch_model_is_planned_with_its_tokenizers_vocabulary(tmp_path):
    """The demo's tokenizer (1024 entries) is larger than tiny-llama's vocabulary (512): training grows
    the embeddings, and the plan counts the model that trains, not the arch file."""
    from lorafull.examples.demo import make_data
    from lorafull.models.tiny import build_tiny_model

    data = make_data(tmp_path / "data")
    base = {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(data / "tokenizer"), "dtype": "fp32"},
            "method": {"kind": "full"}, "data": {"train": str(data / "corpus.jsonl"), "format": "text"}}
    path = study_file(tmp_path, base, [{"name": "pretrain"}], slurm={"gpus_per_node": 1, "gpu_mem_gb": 1})
    row = estimate_run(load_study(path).runs[0], load_study(path))
    real = sum(p.numel() for p in build_tiny_model("tiny-llama", vocab_size=1024).parameters())
    assert row["trainable_params"] == row["total_params"] == real
    assert row["samples"] == 2400 and row["tokens_source"] == "counted (tokenizer)"


# ---------------------------------------------------------------------------------------------
# The step-time model's parts, by hand, on a small model and round hardware figures
# ---------------------------------------------------------------------------------------------
def _small_case(tmp_path, runs: list[dict], nodes: int = 1):
    """4 GPUs per node, global batch 8 of micro batch 1 (2 micro batches per rank and step), bf16."""
    from lorafull.plan.hardware import Hardware

    base = {"model": {**LLAMA_7B, "dtype": "bf16"}, "method": {"kind": "full"},  # counts and arch given below
            "data": {"num_samples": 80, "max_length": 16},
            "train": {"global_batch_size": 8 * nodes, "micro_batch_size": 1, "zero_stage": 2}}
    study = load_study(study_file(tmp_path, base, runs, slurm={"gpus_per_node": 4, "gpu_mem_gb": 1, "nodes": nodes},
                                  plan={"mfu": 0.5}))
    hw = Hardware("test", {"bf16": 1.0, "fp16": 1.0, "fp32": 1.0}, mem_bw_gbs=100.0, intra_node_gbs=10.0,
                  inter_node_gbs=1.0, pcie_gbs=2.0, host_mem_bw_gbs=50.0, devices_per_node=4)
    arch = {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 128}
    counts = {"total": 10_000, "trainable": 10_000, "added": 0}
    return study, hw, arch, counts


def test_step_parts_of_each_zero_stage_by_hand(tmp_path):
    from lorafull.plan.steptime import step_time

    study, hw, arch, counts = _small_case(tmp_path, [{"name": f"z{s}", "train.zero_stage": s} for s in range(4)])
    parts = {r.name: step_time(r, study, arch, counts, 10, hw) for r in study.runs}
    # compute: 80 tokens x (6 x 3,600 matmul params + 12 x 2 layers x 64 x 10) / (4 GPUs x 1e12 x 0.5)
    for p in parts.values():
        assert p["compute"] == pytest.approx(80 * 36_960 / 2e12)
    # Adam's 30 bytes per trained parameter at 100 GB/s: all 10,000 at stage 0, a quarter from stage 1 on
    assert parts["z0"]["optimizer"] == pytest.approx(10_000 * 30 / 100e9)
    assert parts["z1"]["optimizer"] == parts["z3"]["optimizer"] == pytest.approx(2_500 * 30 / 100e9)
    # bytes each rank moves at 10 GB/s, a ring moving 3/4 of 20,000 bytes of bf16 gradients or weights:
    assert parts["z0"]["communication"] == pytest.approx(2 * 0.75 * 20_000 / 10e9)      # all-reduce
    assert parts["z1"]["communication"] == pytest.approx(2 * 0.75 * 20_000 / 10e9)      # reduce-scatter + gather
    assert parts["z2"]["communication"] == pytest.approx(3 * 0.75 * 20_000 / 10e9)      # per micro batch + gather
    assert parts["z3"]["communication"] == pytest.approx(2 * 0.75 * 3 * 20_000 / 10e9)  # 2 x (fwd+bwd gathers + rs)
    # ZeRO-3 overlaps its collectives with compute: the shorter of the two is hidden
    assert parts["z3"]["hidden"] == pytest.approx(-parts["z3"]["compute"])
    assert parts["z2"]["hidden"] == 0 and all(p["offload"] == 0 for p in parts.values())
    for p in parts.values():
        assert p["total"] == pytest.approx(sum(p[k] for k in ("compute", "optimizer", "communication", "offload",
                                                             "hidden")))


def test_offload_moves_adam_to_the_host_and_adds_pcie_traffic(tmp_path):
    from lorafull.plan.steptime import step_time

    study, hw, arch, counts = _small_case(tmp_path, [
        {"name": "z2", "train.zero_stage": 2, "train.offload": True},
        {"name": "z3", "train.zero_stage": 3, "train.offload": True},
        {"name": "z3_ckpt", "train.zero_stage": 3, "train.offload": True, "train.gradient_checkpointing": True}])
    by = {r.name: step_time(r, study, arch, counts, 10, hw) for r in study.runs}
    # the 4 ranks of the node step their 2,500-parameter shards on the host at once: 50 GB/s shared
    assert by["z2"]["optimizer"] == pytest.approx(4 * 2_500 * 30 / 50e9)
    # PCIe at 2 GB/s: the shard's bf16 gradients down and weights up
    assert by["z2"]["offload"] == pytest.approx(2 * 2_500 * 2 / 2e9)
    # stage 3: also the shard's weights for every gathered pass (2 micro batches x forward, backward)
    assert by["z3"]["offload"] == pytest.approx(2 * 2_500 * 2 / 2e9 + 2 * 2 * 2_500 * 2 / 2e9)
    # gradient checkpointing gathers once more (the recompute), and computes 2 N + 4 L h s more per token
    assert by["z3_ckpt"]["offload"] == pytest.approx(2 * 2_500 * 2 / 2e9 + 2 * 3 * 2_500 * 2 / 2e9)
    assert by["z3_ckpt"]["flops_per_token"] - by["z3"]["flops_per_token"] == 2 * 3_600 + 4 * 2 * 64 * 10
    # stage 3's fetches and collectives exceed its compute: only the compute is hidden
    assert by["z3"]["total"] == pytest.approx(by["z3"]["optimizer"] + by["z3"]["communication"] + by["z3"]["offload"])


def test_two_nodes_share_the_network_and_lora_skips_weight_gradients(tmp_path):
    from lorafull.plan.steptime import flops_per_token, step_time

    study, hw, arch, counts = _small_case(tmp_path, [{"name": "z2", "train.zero_stage": 2},
                                                     {"name": "lora", "method.kind": "lora"}], nodes=2)
    run = study.runs[0]
    p = step_time(run, study, arch, counts, 10, hw)
    # 8 ranks, 2 micro batches each; the ring crosses the 1 GB/s network that the node's 4 ranks share
    assert p["communication"] == pytest.approx(3 * (7 / 8) * 20_000 / (1e9 / 4))
    lora_counts = {"total": 10_400, "trainable": 400, "added": 400}
    assert flops_per_token(study.runs[1], arch, lora_counts, 10) == 4 * 3_600 + 6 * 400 + 12 * 2 * 64 * 10


def test_hardware_presets_and_overrides(tmp_path):
    from lorafull.config import ConfigError
    from lorafull.plan.hardware import PRESETS, resolve_hardware

    assert set(PRESETS) == {"A100-40GB-SXM", "A100-80GB", "H100-SXM", "H200", "CPU"}
    assert PRESETS["A100-40GB-SXM"].peak("bf16") == 312 and PRESETS["H200"].mem_bw_gbs == 4800
    path = study_file(tmp_path, {"model": LLAMA_7B}, [{"name": "a"}],
                      plan={"hardware": {"preset": "H100-SXM", "pcie_gbs": 10}})
    hw = resolve_hardware(load_study(path).plan.hardware)
    assert hw.pcie_gbs == 10 and hw.peak("bf16") == 989 and hw.mem_bw_gbs == 3350
    bad = study_file(tmp_path, {"model": LLAMA_7B}, [{"name": "a"}], plan={"hardware": {"preset": "TPU"}})
    with pytest.raises(ConfigError, match="plan.hardware.preset: unknown hardware 'TPU'"):
        resolve_hardware(load_study(bad).plan.hardware)


def test_unreadable_data_is_marked_and_tokens_can_be_set_per_run_or_file(tmp_path):
    base = {"model": LLAMA_7B, "method": {"kind": "full"},
            "data": {"train": "/nowhere/train.json", "num_samples": 1000, "max_length": 512}}
    path = study_file(tmp_path, base, [{"name": "guess"}, {"name": "set"}, {"name": "math", "data.train": "/x/math.json"}],
                      plan={"avg_tokens_per_sample": {"set": 300, "math.json": 120}})
    rows, totals = estimate_study(load_study(path))
    by = {r["run"]: r for r in rows}
    assert by["guess"]["tokens_source"] == "assumed max_length/2" and by["guess"]["tokens_per_sample"] == 256
    assert any("assumed 256" in n and "/nowhere/train.json" in n for n in by["guess"]["notes"])
    assert by["set"]["tokens_per_sample"] == 300 and by["math"]["tokens_per_sample"] == 120
    assert totals["assumed_tokens"] == ["guess"] and "guess: tokens/sample assumed" in format_plan(rows, totals)


def test_tokens_of_a_large_jsonl_file_come_from_a_seeded_sample(tmp_path):
    from lorafull.plan.tokens import file_stats

    records = [{"instruction": "q" * (i % 50), "input": "", "output": "a" * (i % 97)} for i in range(30_000)]
    data = write_jsonl(tmp_path / "big.jsonl", records)
    a = file_stats(str(data), "alpaca", None, 4096, 1)
    b = file_stats(str(data), "alpaca", None, 4096, 2)  # recomputed (another cache key): the same sample
    assert a == b and a["records"] == 30_000 and 1950 < a["sampled"] <= 2000  # empty answers dropped
    true_mean = sum(len(f"Human: {r['instruction']}\n\nAssistant: {r['output']} ".encode()) / 3 for r in records) / 30_000
    assert a["tokens_per_sample"] == pytest.approx(true_mean, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Calibration probes and planned-versus-measured in the report
# ---------------------------------------------------------------------------------------------
def _tiny_study(tmp_path, tiny_tokenizer_dir, runs: list[dict], **sections) -> tuple[Path, Path]:
    from helpers.grid import make_data, study_dict, write_study

    files = make_data(tmp_path, tiny_tokenizer_dir)
    study = study_dict(tmp_path, files, runs=runs, plan={"probe_steps": 8, "probe_warmup_steps": 2}, **sections)
    return write_study(tmp_path / "study.yaml", study), tmp_path / "gridtest"


def _check_calibrated(study_dir: Path, out: str, runs: list[str], shapes: int) -> dict:
    import json

    cal = json.loads((study_dir / "launch" / "calibration.json").read_text())["shapes"]
    assert len(cal) == shapes, out
    for m in cal.values():
        assert m["steps_timed"] == 6 and 0 < m["optimizer_s"] < m["step_s"] and m["fwd_bwd_s"] > 0
        assert m["peak_mem_gb"] > 0 and m["tokens_per_sample"] > 0 and m["startup_s"] > 0
    assert not (study_dir / "runs").exists()  # a probe never makes, reads or writes a run folder
    rows = {r.split()[0]: r for r in out.splitlines() if r.split() and r.split()[0] in runs}
    assert all("measured" in rows[name] for name in runs), out
    return cal


@pytest.mark.slow
def test_calibrate_locally_then_the_plan_is_measured_and_the_report_holds_it_against_the_runs(
        tmp_path, tiny_tokenizer_dir):
    import csv

    from helpers.grid import grid

    path, study_dir = _tiny_study(tmp_path, tiny_tokenizer_dir, [
        {"name": "lora_a"}, {"name": "lora_b", "data.num_samples": 32}, {"name": "full", "method.kind": "full"}])
    before = grid(path, "--dry-run", "--executor", "local").stdout
    assert "modelled" in before and "measured" not in before
    out = grid(path, "--calibrate", "--executor", "local", timeout_s=600).stdout
    cal = _check_calibrated(study_dir, out, ["lora_a", "lora_b", "full"], shapes=2)  # lora_a and lora_b share one
    # the study itself: trained, evaluated, reported; the table holds each run against its plan
    grid(path, "--executor", "local", timeout_s=900)
    with open(study_dir / "report" / "table.csv", encoding="utf-8") as f:
        table = {r["run"]: r for r in csv.DictReader(f)}
    for name, row in table.items():
        assert row["plan_basis"] == "measured"
        assert float(row["h_per_epoch_ratio"]) == pytest.approx(float(row["hours_per_epoch"]) /
                                                                 float(row["planned_h_per_epoch"]), rel=1e-6)
        assert float(row["mem_ratio"]) == pytest.approx(float(row["peak_mem_gb"]) / float(row["planned_mem_gb"]),
                                                        rel=1e-6)
        assert float(row["planned_mem_gb"]) in [pytest.approx(m["peak_mem_gb"]) for m in cal.values()]


@pytest.mark.slurm
@pytest.mark.slow
def test_calibrate_on_slurm_submits_one_probe_job_per_shape(tmp_path, tiny_tokenizer_dir):
    from helpers.grid import grid

    path, study_dir = _tiny_study(tmp_path, tiny_tokenizer_dir, [
        {"name": "lora_a"}, {"name": "full", "method.kind": "full"}])
    out = grid(path, "--calibrate", "--executor", "slurm", timeout_s=600).stdout
    assert out.count("sbatch probe") == 2, out
    _check_calibrated(study_dir, out, ["lora_a", "full"], shapes=2)
    logs = list((study_dir / "launch" / "slurm").rglob("*_log.out"))
    assert any("launch.probe" in p.read_text() for p in logs)


def test_report_columns_hold_measured_against_planned(tmp_path):
    import json

    from lorafull.config import RunConfig, save_run_config
    from lorafull.report.rows import collect_rows

    study = tmp_path / "study"
    for name, wall in (("a", 7200.0), ("b", None)):
        run_dir = study / "runs" / name
        save_run_config(RunConfig(name=name), run_dir, "sig")
        if wall:
            write_jsonl(run_dir / "metrics.jsonl", [
                {"step": 1, "loss": 1.0, "peak_mem_gb": 3.0},
                {"summary": True, "wall_time_s": wall, "hours_per_epoch": wall / 3600 / 2, "world_size": 1}])
    (study / "launch").mkdir()
    plan = {"a": {"hours_per_epoch": 0.8, "mem_per_gpu_gb": 4.0, "basis": "modelled", "startup_s": 12.0},
            "b": {"hours_per_epoch": 2.0, "mem_per_gpu_gb": 1.0, "basis": "measured", "startup_s": 3.0}}
    (study / "launch" / "plan.json").write_text(json.dumps(plan))
    rows, _ = collect_rows(study)
    a, b = rows
    assert a["h_per_epoch_ratio"] == pytest.approx(1.0 / 0.8) and a["mem_ratio"] == pytest.approx(3.0 / 4.0)
    assert a["plan_basis"] == "modelled" and b["planned_h_per_epoch"] == 2.0 and b["h_per_epoch_ratio"] is None
    # a plan from before the start-up term: its hours, but no ratio against a run's whole wall time
    del plan["a"]["startup_s"]
    (study / "launch" / "plan.json").write_text(json.dumps(plan))
    a, _ = collect_rows(study)[0]
    assert a["planned_h_per_epoch"] == 0.8 and a["h_per_epoch_ratio"] is None and a["mem_ratio"] is not None


def test_the_plan_has_a_start_up_term_modelled_or_measured(tmp_path):
    """Set-up, model load, tokenization and the first step, once per run, in its wall time; from a
    calibration probe where one ran."""
    from lorafull.plan.hardware import PRESETS
    from lorafull.plan.startup import TOKENIZE_TOKENS_PER_S, measured_startup

    base = {"model": LLAMA_7B, "method": LORA_R8, "data": {"num_samples": 1000, "max_length": 1024},
            "train": {"micro_batch_size": 4, "zero_stage": 2, "epochs": 1}}
    study = load_study(study_file(tmp_path, base, [{"name": "r"}]))
    row = estimate_run(study.runs[0], study)
    parts, hw = row["startup_parts_s"], PRESETS["A100-40GB-SXM"]
    assert parts["setup"] == hw.startup_s and parts["first_step"] == row["step_s"]
    assert parts["load"] == pytest.approx(row["total_params"] * 2 / (hw.load_gbs * 1e9))  # bf16 weights
    assert parts["tokenize"] == pytest.approx(1000 * row["tokens_per_sample"] / TOKENIZE_TOKENS_PER_S)
    assert row["wall_hours"] * 3600 == pytest.approx(row["steps"] * row["step_s"] + row["startup_s"])
    # a calibrated shape: what its probe measured (set-up, and the first step beyond a steady one)
    measured = measured_startup({"startup_s": 20.0, "first_step_s": 5.0, "step_s": 1.5}, step_s=1.5)
    assert measured["total"] == pytest.approx(23.5) and measured["load"] == 0


def test_status_shows_the_eta_of_a_running_training_from_its_metrics(tmp_path):
    from launch.tables import status_text, training_eta
    from launch.state import RunView
    from lorafull.config import RunConfig

    run_dir = tmp_path / "runs" / "r"
    write_jsonl(run_dir / "metrics.jsonl", [{"step": 10, "loss": 2.0, "step_time_s": 4.0},
                                            {"step": 20, "loss": 1.9, "step_time_s": 2.0}])
    status = {"state": "running", "stage": "train", "total_steps": 120}
    view = RunView(run=RunConfig(name="r"), signature="s", run_dir=run_dir, status=status, folder_signature="s",
                   state="running")
    assert training_eta(view) == "20/120, 5 min left"  # 100 steps x the mean 3 s of the logged windows
    view.status = {**status, "total_steps": 2420}
    assert training_eta(view) == "20/2420, 2.0 h left"
    done = RunView(run=RunConfig(name="d"), signature="s", run_dir=run_dir, status={"state": "done"},
                   folder_signature="s", state="done")
    assert training_eta(done) == "-" and "eta" in status_text([view, done]).splitlines()[0]


def test_dry_run_of_the_papers_rows_prints_their_hours_the_breakdown_and_the_assumption(tmp_path, capsys):
    from launch.grid import main as grid_main

    config = REPO / "configs" / "belle_comparative.yaml"
    assert grid_main([str(config), f"study.output_dir={tmp_path}", "--dry-run", "--executor", "local",
                      "--inputs-on-cluster"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("run "))
    assert "ref h/epoch" in header and "h/epoch" in header and "basis" in header
    ft = next(line for line in lines if line.startswith("ft_2m "))
    assert " 31 " in ft and "modelled*" in ft  # the paper's hours; tokens per sample assumed
    assert any(line.startswith("  ft_2m: step") and "optimizer" in line and "offload" in line for line in lines)
    assert any("ft_2m: tokens/sample assumed 512" in line for line in lines)


def test_the_papers_full_to_lora_cost_ratio_comes_from_the_hardware(tmp_path):
    """Paper (Table 4): full FT / LoRA hours per epoch 31/7 = 4.4x at 2M samples, 17/5 = 3.4x at 0.6M;
    the plan must land within a factor 1.5 of both with nothing fitted to the paper."""
    rows, _ = estimate_study(load_study(REPO / "configs" / "belle_comparative.yaml"))
    by = {r["run"]: r for r in rows}
    for ft, lora, paper in (("ft_2m", "lora_2m", 31 / 7), ("ft_0.6m", "lora_0.6m", 17 / 5)):
        ratio = by[ft]["hours_per_epoch"] / by[lora]["hours_per_epoch"]
        assert 1 / 1.5 < ratio / paper < 1.5, (ft, ratio, paper)
    # what makes full FT dear beyond its FLOPs: the host's Adam step and the offload traffic
    parts = by["ft_2m"]["step_parts_s"]
    assert parts["optimizer"] > 0.3 * parts["compute"] and parts["offload"] > 0


def test_peak_memory_of_a_run_at_another_micro_batch_or_checkpointing(tmp_path):
    from lorafull.plan import peak_memory_gb

    base = {"model": LLAMA_7B, "method": LORA_R8, "data": {"num_samples": 10, "max_length": 1024},
            "train": {"micro_batch_size": 4, "zero_stage": 2}}
    study = load_study(study_file(tmp_path, base, [{"name": "r"}]))
    run = study.runs[0]
    own = peak_memory_gb(run, study)
    assert own == estimate_run(run, study)["mem_parts_gb"]  # the plan's own figure at the run's settings
    m1, m8 = peak_memory_gb(run, study, micro_batch=1), peak_memory_gb(run, study, micro_batch=8)
    # activations scale with the micro batch; weights, gradients and optimizer states do not
    assert m8["activations"] == pytest.approx(8 * m1["activations"]) and m8["weights"] == m1["weights"]
    assert peak_memory_gb(run, study, checkpointing=True)["activations"] < own["activations"]


def test_a_measured_shape_scales_by_accumulation_and_tokens_per_sample():
    from lorafull.plan.calibration import measured_step

    probe = {"fwd_bwd_s": 0.1, "optimizer_s": 0.02, "tokens_per_sample": 40.0, "plan_tokens_per_sample": 50.0}
    # 4 micro batches per step of samples twice as long (by the plan's own count) as the probe's
    parts = measured_step(probe, accum=4, tokens_per_sample=100.0)
    assert parts["compute"] == pytest.approx(4 * 0.1 * 2) and parts["total"] == pytest.approx(0.8 + 0.02)
    old = {k: v for k, v in probe.items() if k != "plan_tokens_per_sample"}  # falls back to the probe's tokens
    assert measured_step(old, accum=1, tokens_per_sample=80.0)["compute"] == pytest.approx(0.1 * 2)
