"""Experiment tracking (train.report_to): TensorBoard, W&B (offline) and MLflow (file store) hold the numbers
of metrics.jsonl, the settings and signature, and the eval scores; a requeued job continues the same
tracked run. Each tracker is read back with its own reader (W&B's offline file with a small parser)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.common import REPO, job_env
from helpers.tracking import mlflow_client, tensorboard_scalars, wandb_config, wandb_history, wandb_run_files
from lorafull.config import load_run_config
from lorafull.runs import read_jsonl, read_status
from lorafull.train import trainer as train

ALL = ["tensorboard", "wandb", "mlflow"]
pytest.importorskip("tensorboard")
pytest.importorskip("wandb")
pytest.importorskip("mlflow")


@pytest.fixture(autouse=True)
def offline_trackers(monkeypatch):
    for var in ("MLFLOW_TRACKING_URI", "WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r
            and not r.get("summary")}


def only_mlflow_run(study_dir):
    client = mlflow_client(study_dir)
    (experiment,) = [e for e in client.search_experiments() if e.name == study_dir.name]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def test_every_tracker_holds_the_metrics_settings_and_eval_scores(make_run):
    from lorafull.judge.summary import summarize
    from lorafull.tracking import log_eval_scores

    run_dir = make_run("tracked", **{"train.report_to": ALL, "method.kind": "lora"})
    assert train.main([str(run_dir)]) == 0
    expected = losses(run_dir)
    assert sorted(expected) == list(range(1, 41))
    signature = read_status(run_dir)["signature"]

    tb = tensorboard_scalars(run_dir)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "train/peak_mem_gb"} <= tb.keys()
    assert tb["train/loss"] == pytest.approx(expected, rel=1e-6)  # TensorBoard stores float32

    client, mlrun = only_mlflow_run(run_dir.parent.parent)
    history = {m.step: m.value for m in client.get_metric_history(mlrun.info.run_id, "train/loss")}
    assert history == pytest.approx(expected)
    assert mlrun.data.params["signature"] == signature and mlrun.data.params["method.kind"] == "lora"
    assert float(mlrun.data.params["train.lr"]) == load_run_config(run_dir).train.lr

    (wandb_file,) = wandb_run_files(run_dir)
    rows = wandb_history(wandb_file)
    assert {s: r["train/loss"] for s, r in rows.items() if "train/loss" in r} == pytest.approx(expected)
    config = wandb_config(wandb_file)
    assert config["signature"] == signature and config["method.kind"] == "lora"

    # the eval job's scores land in the same tracked runs, at the training's last step
    scores = summarize([{"id": "a", "class": "math", "score": 1.0}, {"id": "b", "class": "rewrite", "score": 0.5}])
    log_eval_scores(run_dir, load_run_config(run_dir), scores)
    assert tensorboard_scalars(run_dir)["eval/average"] == pytest.approx({40: 0.75})
    client, mlrun = only_mlflow_run(run_dir.parent.parent)
    assert mlrun.data.metrics["eval/average"] == 0.75 and mlrun.data.metrics["eval/math"] == 1.0
    first, second = wandb_run_files(run_dir)
    assert first.name == second.name  # the same W&B run id, resumed
    assert wandb_history(second)[40]["eval/average"] == 0.75


def test_a_requeued_run_continues_its_tracked_run(make_run):
    run_dir = make_run("requeued", **{"train.report_to": ALL, "method.kind": "full"})
    proc = subprocess.Popen([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO,
                            env={k: v for k, v in job_env(LORAFULL_FAULT_STEP_SLEEP_S="0.1").items()
                                 if k != "WANDB_SERVICE"},  # its own W&B helper, as a separate job has stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while max(losses(run_dir) or [0]) < 14:  # past the checkpoint at step 10, short of the next
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to close anything: as a node failure would leave it
    proc.wait()
    killed_at = max(losses(run_dir))
    assert 14 <= killed_at < 20

    assert train.main([str(run_dir)]) == 0
    expected = losses(run_dir)
    assert sorted(expected) == list(range(1, 41)) and read_status(run_dir)["resumed_from"] == 10

    # TensorBoard: the restart purged the killed job's steps 11..killed_at; each step once, the redone values
    assert tensorboard_scalars(run_dir)["train/loss"] == pytest.approx(expected, rel=1e-6)
    # MLflow: one run; the redone steps appear twice in its history, the later value being the kept one
    client, mlrun = only_mlflow_run(run_dir.parent.parent)
    latest = {}
    for m in sorted(client.get_metric_history(mlrun.info.run_id, "train/loss"), key=lambda m: m.timestamp):
        latest[m.step] = m.value
    assert latest == pytest.approx(expected)
    # W&B: two offline parts of one run id; the second holds the whole kept history (the killed part may
    # hold nothing: W&B had not flushed it)
    first, second = wandb_run_files(run_dir)
    assert first.name == second.name
    assert {s: r["train/loss"] for s, r in wandb_history(second).items() if "train/loss" in r} == pytest.approx(expected)


def test_report_to_names_an_unknown_tracker_in_one_line(tmp_path):
    from helpers.grid import make_data, study_dict, write_study
    from lorafull.config import ConfigError, load_study

    tok = tmp_path / "tok"
    tok.mkdir()
    files = make_data(tmp_path, tok)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, base={"train": {"report_to": ["neptune"]}}))
    with pytest.raises(ConfigError, match=r"s.yaml:\d+: base\.train\.report_to\[0\]: expected one of tensorboard, wandb, mlflow, got 'neptune'"):
        load_study(cfg)
