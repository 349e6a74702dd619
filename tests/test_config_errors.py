"""Every bad setting is caught when the study loads, in one line naming the file, line and key (or the
command line), before anything is submitted or trained: by load_study, by `launch.grid --dry-run`, and
by `lorafull.train RUN_DIR` on a run folder whose config.yaml was edited by hand.

    pytest tests/test_config_errors.py
"""
from __future__ import annotations

import json
import re
import time
import tracemalloc

import pytest
import yaml

from helpers.common import write_jsonl
from launch import grid as grid_cli
from lorafull.config import ConfigError, load_study

STUDY = """\
# python -m launch.grid s.yaml
study: {name: errs, output_dir: OUT}
base:
  model: {name_or_path: "scratch:tiny-llama", tokenizer: "{study_dir}/tok", dtype: fp32}
  method: {kind: lora, r: 4, alpha: 8, dropout: 0.0}
  data: {train: "{study_dir}/train.jsonl", format: alpaca, max_length: 48, template: belle}
  train: {max_steps: 2, global_batch_size: 4, micro_batch_size: 2, lr: 1.0e-3, scheduler: cosine,
          warmup_ratio: 0.0, zero_stage: 2, save_every_steps: 100, keep_checkpoints: 2, deepspeed: false}
  eval: {eval_set: "{study_dir}/eval.jsonl", max_new_tokens: 4, backend: hf, judge: {kind: reference}}
grid:
  method.kind: [full, lora]
runs:
  - {name: extra, train.seed: 1}
analysis:
  source_tasks:
    - {name: facts, path: "{study_dir}/facts.jsonl", kind: choice, metric: acc}
slurm: {nodes: 1, gpus_per_node: 1, gres: null}
plan: {mfu: 0.5}
"""

# (id, text replaced in STUDY -> replacement, command-line overrides, where: the key the error names,
#  the text of the line it names (None: the command line), what the message says)
CASES = [
    ("lr_negative", ("lr: 1.0e-3", "lr: -1.0e-3"), [], "base.train.lr", "lr: -1.0e-3", r"must be > 0"),
    ("lr_nan", ("lr: 1.0e-3", "lr: .nan"), [], "base.train.lr", "lr: .nan", r"expected a number"),
    ("lr_inf", ("lr: 1.0e-3", "lr: .inf"), [], "base.train.lr", "lr: .inf", r"finite"),
    ("max_steps_zero", ("max_steps: 2", "max_steps: 0"), [], "base.train.max_steps", "max_steps: 0", r">= 1"),
    ("global_batch_zero", ("global_batch_size: 4", "global_batch_size: 0"), [], "base.train.global_batch_size",
     "global_batch_size: 0", r">= 1"),
    ("micro_batch_zero", ("micro_batch_size: 2", "micro_batch_size: 0"), [], "base.train.micro_batch_size",
     "micro_batch_size: 0", r">= 1"),
    ("batch_not_multiple", ("micro_batch_size: 2", "micro_batch_size: 3"), [], "base.train.global_batch_size",
     "global_batch_size: 4", r"not a multiple of micro_batch_size 3 x 1 processes"),
    ("warmup_ratio_1.5", ("warmup_ratio: 0.0", "warmup_ratio: 1.5"), [], "base.train.warmup_ratio",
     "warmup_ratio: 1.5", r">= 0 and < 1"),
    ("warmup_ratio_1", ("warmup_ratio: 0.0", "warmup_ratio: 1"), [], "base.train.warmup_ratio",
     "warmup_ratio: 1", r"< 1"),
    ("zero_stage_5", ("zero_stage: 2", "zero_stage: 5"), [], "base.train.zero_stage", "zero_stage: 5",
     r"expected one of 0, 1, 2, 3, got 5"),
    ("zero_stage_bool", ("zero_stage: 2", "zero_stage: true"), [], "base.train.zero_stage", "zero_stage: true",
     r"got True"),
    ("dtype_unknown", ("dtype: fp32", "dtype: bf32"), [], "base.model.dtype", "dtype: bf32",
     r"expected one of bf16, fp16, fp32, got 'bf32' \(did you mean"),
    ("scheduler_unknown", ("scheduler: cosine", "scheduler: cosine_warmup"), [], "base.train.scheduler",
     "scheduler: cosine_warmup", r"expected one of cosine, linear, constant"),
    ("format_unknown", ("format: alpaca", "format: jsonl"), [], "base.data.format", "format: jsonl",
     r"expected one of auto, alpaca, conversations, text"),
    ("template_unknown", ("template: belle", "template: llama2"), [], "base.data.template", "template: llama2",
     r"expected one of belle, chat"),
    ("max_length_1", ("max_length: 48", "max_length: 1"), [], "base.data.max_length", "max_length: 1", r">= 2"),
    ("judge_kind_unknown", ("judge: {kind: reference}", "judge: {kind: gpt4}"), [], "base.eval.judge.kind",
     "judge: {kind: gpt4}", r"expected one of openai, reference"),
    ("judge_scorer_unknown", ("judge: {kind: reference}", "judge: {kind: reference, scorers: {math: maths}}"), [],
     "base.eval.judge.scorers.math", "judge: {kind: reference", r"expected one of math, code, text"),
    ("judge_timeout_zero", ("judge: {kind: reference}", "judge: {kind: openai, timeout_s: 0}"), [],
     "base.eval.judge.timeout_s", "judge: {kind: openai", r"must be > 0"),
    ("judge_retries_negative", ("judge: {kind: reference}", "judge: {kind: openai, max_retries: -1}"), [],
     "base.eval.judge.max_retries", "judge: {kind: openai", r">= 0"),
    ("backend_unknown", ("backend: hf", "backend: tgi"), [], "base.eval.backend", "backend: tgi",
     r"expected one of auto, hf, vllm"),
    ("max_new_tokens_zero", ("max_new_tokens: 4", "max_new_tokens: 0"), [], "base.eval.max_new_tokens",
     "max_new_tokens: 0", r">= 1"),
    ("dropout_1", ("dropout: 0.0", "dropout: 1.0"), [], "base.method.dropout", "dropout: 1.0", r"< 1"),
    ("r_zero", ("r: 4", "r: 0"), [], "base.method.r", "r: 0", r">= 1"),
    ("method_kind_unknown", ("kind: lora, r: 4", "kind: qlora, r: 4"), [], "base.method.kind", "kind: qlora",
     r"expected one of full, lora"),
    ("keep_checkpoints_zero", ("keep_checkpoints: 2", "keep_checkpoints: 0"), [], "base.train.keep_checkpoints",
     "keep_checkpoints: 0", r">= 1"),
    ("save_every_negative", ("save_every_steps: 100", "save_every_steps: -1"), [], "base.train.save_every_steps",
     "save_every_steps: -1", r">= 0"),
    ("grid_empty_list", ("method.kind: [full, lora]", "train.lr: []"), [], "grid.train.lr", "train.lr: []",
     r"an empty list of values"),
    ("grid_value_bad", ("method.kind: [full, lora]", "method.kind: [full, lorra]"), [], "grid.method.kind",
     "method.kind: [full, lorra]", r"expected one of full, lora, dora, loha, ia3, prompt, prefix, adapter, got 'lorra'"),
    ("run_name_bad", ("name: extra,", "name: \"my run!\","), [], "runs[0].name", "my run!",
     r"not a usable name"),
    ("run_value_bad", ("train.seed: 1", "train.seed: -1"), [], "runs[0].train.seed", "train.seed: -1", r">= 0"),
    ("study_name_bad", ("name: errs", "name: \"errs/../x\""), [], "study.name", "errs/../x", r"not a usable name"),
    ("task_kind_unknown", ("kind: choice", "kind: mcq"), [], "analysis.source_tasks[0].kind", "kind: mcq",
     r"expected one of choice, generation"),
    ("task_metric_unknown", ("metric: acc", "metric: accuracy"), [], "analysis.source_tasks[0].metric",
     "metric: accuracy", r"expected one of acc, acc_norm"),
    ("task_needs_scorer", ("kind: choice, metric: acc", "kind: generation"), [], "analysis.source_tasks[0].scorer",
     "kind: generation", r"a generation task needs a scorer"),
    ("slurm_nodes_zero", ("nodes: 1", "nodes: 0"), [], "slurm.nodes", "nodes: 0", r">= 1"),
    ("plan_mfu_above_1", ("mfu: 0.5", "mfu: 1.5"), [], "plan.mfu", "mfu: 1.5", r"<= 1"),
    ("unknown_key", ("lr: 1.0e-3", "lrr: 1.0e-3"), [], "base.train.lrr", "lrr: 1.0e-3", r"unknown key \(did you mean 'lr'"),
    ("duplicate_section", ("plan: {mfu: 0.5}", "plan: {mfu: 0.5}\nplan: {mfu: 0.4}"), [], "plan", "plan: {mfu: 0.4}",
     r"key given twice in one mapping \(first on line 18\)"),
    ("duplicate_key", ("r: 4, alpha: 8", "r: 4, alpha: 8, r: 16"), [], "base.method.r", "r: 16", r"key given twice"),
    ("cli_lr_negative", None, ["train.lr=-1"], "base.train.lr", None, r"must be > 0"),
    ("cli_zero_stage", None, ["train.zero_stage=7"], "base.train.zero_stage", None, r"expected one of 0, 1, 2, 3"),
    ("cli_unknown_key", None, ["train.lrr=1"], "base.train.lrr", None, r"unknown key"),
    ("cli_grid_empty", None, ["grid.train.lr=[]"], "grid.train.lr", None, r"an empty list"),
    ("cli_study_name", None, ["study.name=a b"], "study.name", None, r"not a usable name"),
]


def _write_case(tmp_path, case) -> tuple:
    _, change, overrides, key, needle, _ = case
    text = STUDY.replace("OUT", str(tmp_path / "out"))
    if change:
        assert change[0] in text, change
        text = text.replace(change[0], change[1], 1)
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if needle in t) if needle else None
    return path, overrides, line


def _where(path, overrides, key, line) -> str:
    if line is None:
        return rf"command line override {re.escape(repr(overrides[0]))}: {re.escape(key)}: "
    return rf"{re.escape(str(path))}:{line}: {re.escape(key)}: "


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_bad_setting_is_one_line_naming_file_line_and_key(tmp_path, case):
    path, overrides, line = _write_case(tmp_path, case)
    with pytest.raises(ConfigError) as err:
        load_study(path, overrides)
    message = str(err.value)
    assert "\n" not in message
    assert re.match(_where(path, overrides, case[3], line) + ".*" + case[5], message), message


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_launch_grid_dry_run_refuses_it_before_anything_is_written(tmp_path, case, capsys, monkeypatch):
    path, overrides, line = _write_case(tmp_path, case)
    monkeypatch.setenv("PATH", str(tmp_path))  # no Slurm here: the dry run needs none
    rc = grid_cli.main([str(path), "--dry-run", "--executor", "local", *overrides])
    out = capsys.readouterr()
    assert rc == 2, out
    assert len(out.err.strip().splitlines()) == 1 and not out.out.strip(), out
    assert re.match("error: " + _where(path, overrides, case[3], line) + ".*" + case[5], out.err), out.err
    assert not (tmp_path / "out").exists()  # no run folder, no status: nothing marked anything


def test_non_utf8_study_file_names_its_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes(STUDY.replace("OUT", str(tmp_path)).encode().replace(b"plan: {mfu: 0.5}", b"plan: {mfu: 0.5} # \xff"))
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:18: not UTF-8 text \(byte 0xff\)"):
        load_study(path)


def test_an_alias_bomb_is_refused_fast_with_little_memory(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    lines.append("base: {train: {lr: *i}}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    assert len(path.read_bytes()) < 700
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml:\d+: invalid YAML: aliases expand to more than"):
        load_study(path)
    seconds, (_, peak) = time.perf_counter() - t0, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 2 and peak < 20e6, (seconds, peak)


# ---------------------------------------------------------------------------------------------
# python -m lorafull.train RUN_DIR on a run folder: the same checks, through the same loader
# ---------------------------------------------------------------------------------------------
TRAIN_CASES = [
    ("train.lr", -1.0, r"must be > 0"),
    ("train.zero_stage", 5, r"expected one of 0, 1, 2, 3"),
    ("model.dtype", "fp8", r"expected one of bf16, fp16, fp32"),
    ("method.r", 0, r">= 1"),
    ("train.scheduler", "cosine_with_restarts", r"expected one of cosine, linear, constant"),
    ("train.warmup_ratio", 1.5, r"< 1"),
    ("train.save_every_steps", -1, r">= 0"),
    ("train.micro_batch_size", 0, r">= 1"),
]


def _run_train(run_dir, capsys) -> tuple[int, str]:
    """(exit code, the error lines on stderr; progress bars left out)."""
    from lorafull.train.trainer import main

    rc = main([str(run_dir)])
    err = capsys.readouterr().err.replace("\r", "\n")
    return rc, "\n".join(t for t in err.splitlines() if t.strip() and not t.startswith(("Writing", "tokenizing")))


@pytest.mark.parametrize("key,value,why", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_on_a_run_folder_refuses_a_bad_setting_in_one_line(make_run, capsys, key, value, why):
    run_dir = make_run("bad")
    path = run_dir / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    section, attr = key.split(".")
    cfg[section][attr] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith(f"{attr}:")
                and i > next(j for j, s in enumerate(path.read_text().splitlines(), 1) if s.startswith(f"{section}:")))
    rc, err = _run_train(run_dir, capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert re.search(rf"{re.escape(str(path))}:{line}: {re.escape(key)}: .*{why}", err), err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and not (run_dir / "final").exists()


def test_train_names_the_data_line_whose_value_is_not_a_string(make_run, tmp_path, capsys):
    data = write_jsonl(tmp_path / "conv.jsonl", [
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "assistant", "value": "4"}]},
        {"conversations": [{"from": "human", "value": "3+3?"}, {"from": "assistant", "value": 6}]}])
    run_dir = make_run("conv", **{"data.train": str(data), "data.format": "conversations"})
    rc, err = _run_train(run_dir, capsys)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    assert re.match(rf"error: DataError: {re.escape(str(data))}:2: conversations\[1\]: field 'value' must be a string, got int 6", err)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "failed"
