"""A run's life cycle (lorafull.runs.status): the named transitions, what a folder says of its run, and
the launcher's view built on it; the method table (lorafull.models.method_table) every module asks.

    pytest tests/test_runs.py
"""
from __future__ import annotations

import json
from typing import get_args

import pytest

from helpers.grid import make_data, study_dict, write_study

from launch.arrays import make_plan
from launch.jobs import Ledger
from launch.state import set_aside_failed, study_views
from lorafull.config import MethodConfig, load_study, save_run_config
from lorafull.config.schema import MethodKind
from lorafull.models.method_table import METHODS, final_format, method_of
from lorafull.runs import STATES, Stage, State, classify_folder, read_status, status as run_status


def test_each_transition_writes_its_state_and_keeps_what_was_there(tmp_path):
    run = tmp_path / "r"
    run_status.queued(run, Stage.TRAIN, signature="abc")
    assert read_status(run)["state"] == "queued" and read_status(run)["signature"] == "abc"
    run_status.started(run, Stage.TRAIN, step=0)
    run_status.preempted(run, step=7)
    st = read_status(run)
    assert (st["state"], st["stage"], st["preempted"], st["step"], st["signature"]) == ("queued", "train", True, 7, "abc")
    run_status.done(run, Stage.TRAIN)
    run_status.started(run, Stage.EVALUATE)
    run_status.waiting(run, Stage.JUDGE, waiting_for="batch b1: 3/10 answered")
    assert read_status(run)["stages"] == {"train": "done", "evaluate": "running", "judge": "waiting"}
    run_status.failed(run, Stage.JUDGE, error="judge: the key is missing")
    assert run_status.failed(run, Stage.EVALUATE, error="exited with code 1", keep_earlier=True) is None
    assert read_status(run)["error"] == "judge: the key is missing"  # the stage's own line stays
    run_status.interrupted(run, Stage.EVALUATE, why="interrupted (Ctrl-C)")
    run_status.superseded(run, by="def")
    st = read_status(run)
    assert st["state"] == "superseded" and st["superseded_by"] == "def" and st["stage"] == "evaluate"
    assert set(STATES) == {s.value for s in State}
    with pytest.raises(ValueError):
        run_status.done(run, "no-such-stage")  # a stage name is one of Stage, never a free string
    assert json.loads((run / "status.json").read_text())["state"] == "superseded"  # nothing half written


def test_the_folder_says_what_it_knows_without_asking_the_scheduler(tmp_path):
    run = tmp_path / "r"
    ask = lambda: True  # noqa: E731  the eval settings are current
    assert classify_folder(run, {}, ask).state == "new"
    run_status.preempted(run, step=12)
    assert "stopped at step 12" in classify_folder(run, read_status(run), ask).detail
    run_status.interrupted(run, Stage.TRAIN, why="interrupted (Ctrl-C): the same command resumes it")
    assert classify_folder(run, read_status(run), ask).state == "interrupted"
    run_status.done(run, Stage.TRAIN)
    assert classify_folder(run, read_status(run), ask).state == "new"  # done, but final/ is missing
    (run / "final").mkdir()
    assert classify_folder(run, read_status(run), ask).state == "trained"
    run_status.done(run, Stage.EVALUATE)
    assert classify_folder(run, read_status(run), ask).state == "done"
    stale = classify_folder(run, read_status(run), lambda: False)  # evaluated under other eval settings
    assert (stale.state, stale.eval_stale) == ("trained", True) and "eval settings changed" in stale.detail
    run_status.started(run, Stage.EVALUATE)  # evaluated again (a judge batch): not done while it runs
    run_status.waiting(run, Stage.JUDGE, waiting_for="batch b1")
    assert classify_folder(run, read_status(run), ask).state == "waiting"


def test_the_launcher_resumes_interrupted_runs_and_sets_superseded_ones_aside(tmp_path, tiny_tokenizer_dir):
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": "stopped"}, {"name": "old"}]))
    study = load_study(cfg)
    stopped, old = (study.run_dir(study.run(n)) for n in ("stopped", "old"))
    run_status.interrupted(stopped, Stage.TRAIN, why="interrupted (Ctrl-C): the same command resumes it")
    save_run_config(study.run("old"), old, "0ldsig00")  # failed under settings the study no longer gives
    run_status.failed(old, Stage.TRAIN, error="data.jsonl:3: malformed JSON line")
    views = {v.name: v for v in study_views(study, Ledger(study.output_dir), {})}
    assert views["stopped"].state == "interrupted" and views["old"].state == "superseded"
    plan = make_plan(study, list(views.values()))
    assert [v.name for v in plan.to_train] == ["stopped"]  # no --retry needed
    assert [v.name for v in plan.conflicts] == ["old"]  # blocks the launch until --retry sets it aside
    (moved,) = set_aside_failed(list(views.values()))
    aside = study.output_dir / "runs" / ".superseded" / "old-0ldsig00"
    assert str(aside) in moved and read_status(aside)["state"] == "superseded" and not old.exists()


def test_every_method_kind_of_the_schema_has_one_row_in_the_table():
    assert tuple(METHODS) == get_args(MethodKind)
    assert not method_of("full").frozen_base and all(m.frozen_base for k, m in METHODS.items() if k != "full")
    assert method_of(MethodConfig(kind="lora", r=16)).label(MethodConfig(kind="lora", r=16)) == "lora r=16"
    assert method_of("adapter").label(MethodConfig(kind="adapter", adapter_size=32)) == "adapter 32"
    assert method_of("dora").label(MethodConfig(kind="dora", r=4), sep="") == "dora r4"
    assert method_of("full").setting_values(MethodConfig(kind="full", r=64)) == {"kind": "full"}
    assert [k for k, m in METHODS.items() if m.mergeable and m.frozen_base] == ["lora", "dora", "loha", "ia3"]
    with pytest.raises(ValueError, match="method.kind"):
        method_of("qlora-not-yet")


def test_a_finished_folder_is_recognised_by_its_save_format(tmp_path):
    assert final_format(tmp_path) is None
    (tmp_path / "config.json").write_text("{}")
    assert final_format(tmp_path) == "hf"
    (tmp_path / "adapter_config.json").write_text("{}")  # peft copies the base's config.json beside its own
    assert final_format(tmp_path) == "peft"
