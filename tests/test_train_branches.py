"""Durations as cooldown branches (lorafull.config.branches, lorafull.train.durations) and the inverse_sqrt
schedule they rest on (lorafull.train.schedule): the schedule against the formula of llm-foundry's
InverseSquareRootWithWarmupScheduler written out here, a trunk and its branch trained for real on the
plain torch engine (CPU, fp32: every operation deterministic), and the branch against the same run
trained from scratch, bitwise.

    pytest tests/test_train_branches.py
"""
from __future__ import annotations

import math
import re

import pytest
from safetensors.torch import load_file

from lorafull.config import TrainConfig
from lorafull.config.branches import cooldown_start
from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train
from lorafull.train.checkpoint import Checkpoints, checkpoint_step
from lorafull.train.schedule import lr_multiplier


def paper_formula(t: int, t_max: int, warmup: int, t_scale: int, a_decay: float, a_floor: float,
                  t_cooldown: int) -> float:
    """The multiplier of ../shared/papers/biderman2024.md (llm-foundry's scheduler), written out anew."""
    if t < warmup:
        return t / warmup
    c = max(warmup, t_max - t_cooldown)
    decay = lambda u: a_decay + (1 - a_decay) / math.sqrt((u - warmup + t_scale) / t_scale)  # noqa: E731
    if t < c:
        return decay(t)
    return decay(c) + min(1.0, (t - c) / t_cooldown) * (a_floor - decay(c))


def test_inverse_sqrt_is_the_papers_cpt_schedule_at_warmup_stable_cooldown_and_floor():
    # code/math CPT: t_scale 1000, t_warmup 1000, t_cooldown 5086 batches, alpha_f_decay 1, alpha_f_cooldown 0;
    # 20B tokens of 192 x 4096 = 25,431 batches
    paper = TrainConfig(scheduler="inverse_sqrt", warmup_steps=1000, t_scale=1000, alpha_f_decay=1.0,
                        alpha_f_cooldown=0.0, cooldown_steps=5086)
    f = lr_multiplier(paper, 25431)
    c = 25431 - 5086
    expected = {0: 0.0, 1: 0.001, 500: 0.5, 999: 0.999, 1000: 1.0, 12000: 1.0, c - 1: 1.0, c: 1.0,
                c + 1: 1 - 1 / 5086, c + 2543: 1 - 2543 / 5086, 25430: 1 / 5086, 25431: 0.0, 30000: 0.0}
    for t, value in expected.items():
        assert f(t) == pytest.approx(value, abs=1e-12), t
        assert f(t) == pytest.approx(paper_formula(t, 25431, 1000, 1000, 1.0, 0.0, 5086), abs=1e-15), t
    # a decaying middle and a floor above 0, the cooldown as a ratio of the run (50 of 200 steps)
    decaying = TrainConfig(scheduler="inverse_sqrt", warmup_steps=10, t_scale=100, alpha_f_decay=0.2,
                           alpha_f_cooldown=0.05, cooldown_ratio=0.25)
    f = lr_multiplier(decaying, 200)
    assert cooldown_start(decaying, 200) == 150
    v_c = 0.2 + 0.8 / math.sqrt(2.4)  # at c = 150: (150 - 10 + 100) / 100
    by_hand = {5: 0.5, 10: 1.0, 110: 0.2 + 0.8 / math.sqrt(2.0), 149: 0.2 + 0.8 / math.sqrt(2.39),
               150: v_c, 175: v_c + 0.5 * (0.05 - v_c), 199: v_c + 49 / 50 * (0.05 - v_c), 200: 0.05, 260: 0.05}
    for t, value in by_hand.items():
        assert f(t) == pytest.approx(value, rel=1e-12), t
        assert f(t) == pytest.approx(paper_formula(t, 200, 10, 100, 0.2, 0.05, 50), rel=1e-12), t
    # a run shorter than its warmup never reaches the peak (llm-foundry does not cut the warmup)
    assert lr_multiplier(paper, 400)(399) == pytest.approx(0.399)


PEAK, FLOOR = 1e-2, 0.1
BRANCHED = {"train.max_steps": None, "train.scheduler": "inverse_sqrt", "train.warmup_steps": 3,
            "train.alpha_f_decay": 1.0, "train.alpha_f_cooldown": FLOOR, "train.cooldown_steps": 4,
            "train.lr": PEAK, "train.save_every_steps": 0, "method.kind": "lora", "method.dropout": 0.1}


def step_lines(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r
            and not r.get("summary")]


def summary_of(run_dir):
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("summary")][-1]


def adapter(run_dir):
    return load_file(str(run_dir / "final" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_tokenizer_dir):
    """A trunk with branches at 200, 1500 and 3000 tokens, the 1500-token branch, and the same 1500-token run
    trained from scratch (dropout on: the RNG state must travel with the checkpoint); the 200-token branch
    and run, which end inside the warmup."""
    from helpers.common import write_run_config

    root = tmp_path_factory.mktemp("branches")
    trunk = write_run_config(root, "trunk", tiny_tokenizer_dir, **BRANCHED,
                             **{"train.branch_max_tokens": [200, 1500, 3000]})
    branch = write_run_config(root, "b1500", tiny_tokenizer_dir, **BRANCHED,
                              **{"train.max_tokens": 1500, "train.branch_of": "trunk"})
    alone = write_run_config(root, "alone1500", tiny_tokenizer_dir, **BRANCHED, **{"train.max_tokens": 1500})
    early = write_run_config(root, "early", tiny_tokenizer_dir, **BRANCHED,
                             **{"train.max_tokens": 1500, "train.branch_of": "trunk"})
    assert train.main([str(early)]) == 1  # before its trunk has trained: one line, nothing trained
    assert "the trunk trunk has no checkpoint at step" in read_status(early)["error"]
    assert not (early / "final").exists()
    short = write_run_config(root, "b200", tiny_tokenizer_dir, **BRANCHED,
                             **{"train.max_tokens": 200, "train.branch_of": "trunk"})
    short_alone = write_run_config(root, "alone200", tiny_tokenizer_dir, **BRANCHED, **{"train.max_tokens": 200})
    for run_dir in (trunk, branch, alone, short, short_alone):
        assert train.main([str(run_dir)]) == 0, read_status(run_dir)
    return trunk, branch, alone


@pytest.mark.slow
def test_a_trunk_trains_at_the_stable_lr_to_its_last_branch_point_and_keeps_each(trained):
    trunk, branch, alone = trained
    steps = step_lines(trunk)
    assert [r["lr"] for r in steps[3:]] == [PEAK] * (len(steps) - 3)  # flat after the warmup: no cooldown
    assert [r["lr"] for r in steps[:3]] == pytest.approx([0.0, PEAK / 3, 2 * PEAK / 3])
    kept = [checkpoint_step(c) for c in Checkpoints(trunk / "checkpoints").complete()]
    start = summary_of(branch)["branch_start"]
    t_max = summary_of(alone)["steps"]
    assert start == t_max - 4 and start in kept  # the 1500-token branch's cooldown start
    assert kept[-1] == summary_of(trunk)["steps"] == len(steps) > start + 2  # to the 3000-token branch's start
    assert summary_of(trunk)["lr_after_last_step"] == PEAK


@pytest.mark.slow
def test_a_branch_resumes_from_the_trunk_bitwise_and_cools_down_to_the_floor(trained):
    trunk, branch, alone = trained
    start = summary_of(branch)["branch_start"]
    ours, trunks, scratch = step_lines(branch), step_lines(trunk), step_lines(alone)
    assert [r["step"] for r in ours] == list(range(1, len(scratch) + 1))  # one run's file, trunk part included
    assert ours[:start] == trunks[:start]
    # logged step start+1 is the loss of the trunk's checkpoint, then an update with the lr where the cooldown
    # begins (still the peak): its loss and the next (on the weights that update made) are the trunk's; from
    # the next update on the lr falls, and so the losses part
    assert ours[start]["lr"] == trunks[start]["lr"] == PEAK
    assert ours[start]["loss"] == trunks[start]["loss"] and ours[start + 1]["loss"] == trunks[start + 1]["loss"]
    assert ours[start + 1]["lr"] == pytest.approx(PEAK * (1 + (FLOOR - 1) / 4), rel=1e-12)
    assert ours[start + 1]["lr"] < trunks[start + 1]["lr"] and ours[start + 2]["loss"] != trunks[start + 2]["loss"]
    # the branch is the run of that duration trained from scratch: every loss, lr and weight, bitwise
    assert [(r["loss"], r["lr"]) for r in ours] == [(r["loss"], r["lr"]) for r in scratch]
    mine, theirs = adapter(branch), adapter(alone)
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    summary = summary_of(branch)
    assert summary["lr_after_last_step"] == pytest.approx(PEAK * FLOOR, rel=1e-12)  # the floor, after the last step
    assert summary["branch_of"] == "trunk" and summary["tokens_seen"] == summary_of(alone)["tokens_seen"] >= 1500
    assert summary["resumed_from"] == start and summary["steps"] == start + 4
    # its clock counts the cooldown only (the trunk's part is the trunk's cost)
    assert summary["wall_time_s"] < summary_of(trunk)["wall_time_s"]
    assert read_status(branch)["state"] == "done"


@pytest.mark.slow
def test_a_branch_that_ends_inside_its_warmup_is_the_trunk_there(trained):
    """200 tokens take 2 steps, fewer than the warmup's 3: nothing to cool down (llm-foundry's formula),
    so the branch trains no step and its model is the trunk's at step 2, the same as the 2-step run."""
    root = trained[0].parent
    summary = summary_of(root / "b200")
    assert summary["branch_start"] == summary["steps"] == summary_of(root / "alone200")["steps"] == 2
    assert 2 in [checkpoint_step(c) for c in Checkpoints(trained[0] / "checkpoints").complete()]
    mine, theirs = adapter(root / "b200"), adapter(root / "alone200")
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)


# ---------------------------------------------------------------------------------------------
# Branches in a study: names, signatures, the plan, and launch.grid on the local executor
# ---------------------------------------------------------------------------------------------
BRANCH_TRAIN = {"max_steps": None, "scheduler": "inverse_sqrt", "warmup_steps": 1, "alpha_f_decay": 1.0,
                "cooldown_steps": 2, "branch_max_tokens": [400, 800]}


def test_a_study_declares_durations_as_branches_in_one_key_and_plans_them_as_chained_runs(tmp_path, tiny_tokenizer_dir):
    from helpers.grid import make_data, study_dict, write_study
    from launch.jobs import Ledger
    from launch.arrays import make_plan
    from launch.state import study_views
    from lorafull.config import ConfigError, load_study, study_signatures
    from lorafull.plan.estimate import estimate_study
    from lorafull.runs import Stage, status as run_status

    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, base={"train": BRANCH_TRAIN},
                                                      study={"seeds": [1, 2]}, runs=[{"name": "lora"}]))
    study = load_study(cfg)
    names = [r.name for r in study.runs]
    assert sorted(names) == sorted(f"lora-{part}-seed{s}" for part in ("trunk", "tokens400", "tokens800")
                                   for s in (1, 2))
    branch = study.run("lora-tokens800-seed2")
    assert (branch.train.branch_of, branch.parent, branch.train.max_tokens, branch.train.branch_max_tokens,
            branch.group) == ("lora-trunk-seed2", "lora-trunk-seed2", 800, [], "lora-tokens800")
    assert names.index("lora-trunk-seed2") < names.index("lora-tokens800-seed2")  # parents first

    # a branch is its trunk's checkpoint plus its own budget: another trunk, another branch
    sigs = study_signatures(study)
    other = study_signatures(load_study(cfg, ["train.lr=2.0e-3"]))
    assert other["lora-tokens800-seed2"] != sigs["lora-tokens800-seed2"] != sigs["lora-tokens400-seed2"]
    longer = study_signatures(load_study(cfg, ["train.branch_max_tokens=[400,800,1200]"]))  # another trunk
    assert longer["lora-tokens800-seed2"] != sigs["lora-tokens800-seed2"]
    chained = study_signatures(load_study(cfg, ["runs=[{name: t}, {name: c, train.branch_max_tokens: [], "
                                                "train.max_tokens: 800, model.name_or_path: 'run:t-trunk'}]"]))
    assert chained["c-seed2"] != chained["t-tokens800-seed2"]  # the same settings on the trunk's final model

    # the plan: each branch trains its cooldown only, and waits for its own trunk's training task
    rows = {r["run"]: r for r in estimate_study(study)[0]}
    assert any("cooldown branch of lora-trunk-seed1" in n for n in rows["lora-tokens400-seed1"]["notes"])
    assert rows["lora-tokens800-seed1"]["tokens"] < rows["lora-trunk-seed1"]["tokens"]
    plan = make_plan(study, study_views(study, Ledger(study.output_dir), {}))
    assert [(a.depth, sorted(v.name for v in a.runs)) for a in plan.train_arrays] == [
        (0, ["lora-trunk-seed1", "lora-trunk-seed2"]), (1, sorted(n for n in names if "tokens" in n))]
    assert plan.parent_dep["lora-tokens400-seed1"][1] is plan.train_arrays[0]
    from launch.render import render_study  # the sbatch scripts for plain sbatch: the same dependency

    assert "# lora-tokens400-seed1 after lora-trunk-seed1" in render_study(study)["submit.sh"]
    # a branch that failed after its trunk finished is retried alone, with nothing to wait for
    for name in ("lora-trunk-seed1", "lora-tokens800-seed1"):
        run_dir = study.run_dir(study.run(name))
        (run_dir / "final").mkdir(parents=True)
        (run_dir / "final" / "adapter_config.json").write_text("{}")
        run_status.done(run_dir, Stage.TRAIN, signature=sigs[name])
    run_status.failed(study.run_dir(study.run("lora-tokens400-seed1")), Stage.TRAIN, error="node lost")
    retry = make_plan(study, study_views(study, Ledger(study.output_dir), {}), retry=True)
    first = [v.name for v in retry.to_train if v.name.endswith("seed1")]
    assert first == ["lora-tokens400-seed1"] and "lora-tokens400-seed1" not in retry.parent_dep
    assert "lora-tokens400-seed1" not in make_plan(study, study_views(study, Ledger(study.output_dir), {})).to_train
    with pytest.raises(ConfigError, match=r"s.yaml:\d+: base.train.branch_max_tokens: cooldown branches need "
                                          r"train.scheduler: inverse_sqrt \(got cosine\)"):
        load_study(cfg, ["train.scheduler=cosine", "train.cooldown_steps=null", "train.alpha_f_decay=0"])


@pytest.mark.slow
def test_branches_plan_run_and_report_through_launch_grid(tmp_path, tiny_tokenizer_dir, capsys):
    from helpers.grid import grid, make_data, status, study_dict, write_study
    from launch import grid as grid_cli

    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, base={"train": BRANCH_TRAIN},
                                                      runs=[{"name": "lora"}]))
    runs = tmp_path / "gridtest" / "runs"
    out = grid(cfg, "--executor", "local", timeout_s=900).stdout  # the plan it prints, then the stages
    assert "cooldown branch of lora-trunk: trains steps" in out and "3/3 run(s) finished" in out
    started = [m.group(1) for m in re.finditer(r"^  start +train +([\w.-]+)", out, re.M)]  # the local executor's events
    assert started.index("lora-trunk") < started.index("lora-tokens400"), out
    for name in ("lora-trunk", "lora-tokens400", "lora-tokens800"):
        assert status(runs / name)["state"] == "done", (name, status(runs / name))
    start = summary_of(runs / "lora-tokens800")["branch_start"]
    assert start > 0 and summary_of(runs / "lora-trunk")["steps"] == start
    table = (tmp_path / "gridtest" / "report" / "table.md").read_text()
    assert "lora-tokens400" in table and "lora-tokens800" in table
    assert grid_cli.main([str(cfg), "--status", "--executor", "local"]) == 0
    assert "3 done" in capsys.readouterr().out
