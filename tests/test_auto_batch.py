"""train.micro_batch_size: auto and train.gradient_checkpointing: auto (lorafull.plan.auto): the plan and
the job choose the values README documents from the memory model, and the global batch never changes."""
from __future__ import annotations

import pytest
import yaml

from lorafull.config import load_study
from lorafull.plan.estimate import estimate_run
from lorafull.runs import read_jsonl
from lorafull.train import trainer as train

MIB_AS_GB = 1 / 1024


def test_the_plan_chooses_readmes_llama_7b_values(tmp_path):
    """README's example: LLaMA-7B, LoRA r=8 all-linear, bf16, max_length 1024, global batch 32, one GPU."""
    body = {"study": {"name": "t", "output_dir": str(tmp_path / "s")},
            "base": {"model": {"name_or_path": "/PATH/TO/llama-7b-hf", "arch": "llama-7b"},
                     "method": {"kind": "lora", "r": 8, "target_modules": "all-linear"},
                     "data": {"num_samples": 1000, "max_length": 1024},
                     "train": {"global_batch_size": 32, "micro_batch_size": "auto", "gradient_checkpointing": "auto",
                               "nproc": 1}},
            "runs": [{"name": "a40"}], "slurm": {"gpus_per_node": 1, "gpu_mem_gb": 40}}
    path = tmp_path / "study.yaml"
    chosen = {}
    for gpu in (80, 40, 24):
        body["slurm"]["gpu_mem_gb"] = gpu
        path.write_text(yaml.safe_dump(body))
        study = load_study(path)
        row = estimate_run(study.runs[0], study)
        s = row["batch_settings"]
        assert s["micro_batch_size"] * s["grad_accum"] == 32 and s["fits"] and row["fits"]
        assert any(n.startswith("auto: micro_batch_size") for n in row["notes"])
        chosen[gpu] = (s["micro_batch_size"], s["gradient_checkpointing"])
    # 80 GB: micro 4 without checkpointing; 40 GB: micro 2 still without; 24 GB: even micro 1 needs
    # ~23 GB without checkpointing, so it turns on, and then micro 8 fits
    assert chosen == {80: (4, False), 40: (2, False), 24: (8, True)}


def test_a_set_value_is_kept_and_only_the_auto_one_is_chosen(tmp_path):
    from lorafull.config import RunConfig, StudySettings
    from lorafull.config.schema import AnalysisConfig, PlanConfig, SlurmConfig, StudySection
    from lorafull.models.load import count_params_meta
    from lorafull.plan.auto import choose
    from lorafull.plan.estimate import arch_dict

    run = RunConfig(name="x")
    run.data.max_length, run.train.global_batch_size = 1024, 32
    run.train.micro_batch_size, run.train.gradient_checkpointing = 8, "auto"
    settings = StudySettings(StudySection(), SlurmConfig(gpu_mem_gb=40), PlanConfig(), AnalysisConfig())
    counts = count_params_meta("scratch:llama-7b", run.method)
    s = choose(run, settings, arch_dict("llama-7b"), counts, 1, 40)
    assert (s["micro_batch_size"], s["gradient_checkpointing"], s["auto"]) == (8, True, ["gradient_checkpointing"])
    run.train.micro_batch_size, run.train.gradient_checkpointing = "auto", False
    s = choose(run, settings, arch_dict("llama-7b"), counts, 8, 40)  # 8 processes: 4 samples each per step
    assert (s["micro_batch_size"], s["grad_accum"], s["auto"]) == (2, 2, ["micro_batch_size"])


def settings_events(run_dir) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("event") == "settings"]


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r
            and not r.get("summary")]


# The tiny llama (fp32, max_length 64, LoRA all-linear, global batch 8, one process) under a GPU limit
# set in MiB, with no margin and no overhead: the estimates are 2.29 / 3.65 / 6.38 / 11.83 MiB for micro
# 1 / 2 / 4 / 8 without checkpointing, 1.83 / 2.73 / 4.53 / 8.13 MiB with it.
@pytest.mark.parametrize("limit_mib, expected", [(7.0, (4, False, 2)), (2.0, (1, True, 8))])
def test_a_job_settles_auto_from_the_memory_model_and_keeps_the_global_batch(make_run, limit_mib, expected):
    auto = make_run("auto", **{"method.kind": "lora", "train.max_steps": 4, "train.save_every_steps": 0,
                               "train.micro_batch_size": "auto", "train.gradient_checkpointing": "auto"})
    (auto.parent.parent / "study.yaml").write_text(yaml.safe_dump(
        {"slurm": {"gpu_mem_gb": limit_mib * MIB_AS_GB}, "plan": {"mem_margin": 0.0, "overhead_gb": 0.0}}))
    assert train.main([str(auto)]) == 0
    (event,) = settings_events(auto)
    micro, checkpointing, accum = expected
    assert (event["micro_batch_size"], event["gradient_checkpointing"], event["grad_accum"]) == expected
    assert event["global_batch_size"] == 8 == micro * accum and event["fits"] is True
    assert event["auto"] == ["micro_batch_size", "gradient_checkpointing"]
    summary = [r for r in read_jsonl(auto / "metrics.jsonl") if r.get("summary")][-1]
    assert summary["batch_settings"]["micro_batch_size"] == micro
    # the job trained exactly as one with those values set by hand
    fixed = make_run("fixed", **{"method.kind": "lora", "train.max_steps": 4, "train.save_every_steps": 0,
                                 "train.micro_batch_size": micro, "train.gradient_checkpointing": checkpointing})
    assert train.main([str(fixed)]) == 0
    assert losses(auto) == losses(fixed) and len(losses(auto)) == 4
    assert settings_events(fixed)[0]["auto"] == []


def test_a_misspelt_auto_is_one_line_naming_the_key(tmp_path):
    from lorafull.config import ConfigError

    body = {"study": {"name": "t", "output_dir": str(tmp_path / "s")}, "base": {"train": {"micro_batch_size": "max"}},
            "runs": [{"name": "a"}]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError, match=r"train.micro_batch_size: expected an integer or auto, got 'max'"):
        load_study(tmp_path / "s.yaml")
