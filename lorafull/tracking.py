"""Experiment trackers beside metrics.jsonl: `train.report_to: [tensorboard, wandb, mlflow]`.

Library module (no command): the training loop feeds it through MetricsLog, the eval job through
log_eval_scores. Each tracker gets the same numbers as metrics.jsonl (train/loss, train/lr, ...,
instability/<event>), the run's settings and signature as hyper-parameters, and later eval/<score>.

One tracked run per lorafull run, continued (never duplicated) after a requeue:
- tensorboard: RUN_DIR/tracking/tensorboard. A restarted job writes a session start at the checkpoint's
  step + 1, so TensorBoard drops what the killed job logged after its checkpoint, as metrics.jsonl does.
  View with `tensorboard --logdir STUDY_DIR/runs`.
- wandb: offline by default (compute nodes rarely reach the internet; WANDB_MODE overrides), files under
  RUN_DIR/tracking/wandb, run id `<run name>-<signature>`, project = the study folder's name. Upload later
  with `wandb sync STUDY_DIR/runs/*/tracking/wandb/offline-run-*`. A requeued job's part resumes the same
  id and first logs metrics.jsonl's kept history again (a killed job's part may hold nothing: W&B buffers);
  W&B keeps the first values of any step already uploaded.
- mlflow: MLFLOW_TRACKING_URI, else a file store STUDY_DIR/mlruns (one experiment per study; view with
  `mlflow ui --backend-store-uri STUDY_DIR/mlruns`). The run id is kept in RUN_DIR/tracking/ids.json.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, run_signature_from_folder, study_dir_of_run, to_dict
from lorafull.runs import write_json_atomic

TRACKERS = ("tensorboard", "wandb", "mlflow")
STEP_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "step_time_s", "peak_mem_gb", "tokens_seen", "epoch")
# the importable module behind each tracker, and what to install when it is missing
_MODULES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}


def tracking_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "tracking"


def trackers_of(run: RunConfig) -> list[str]:
    """train.report_to, or TensorBoard alone when it is installed and the key is unset."""
    if run.train.report_to is None:
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    for name in run.train.report_to:
        if name not in TRACKERS:
            raise ValueError(f"train.report_to: unknown tracker {name!r} (expected {', '.join(TRACKERS)})")
        module, package = _MODULES[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"train.report_to: {name} is not installed (pip install {package}, "
                             f"or pip install lorafull[tracking])")
    return list(dict.fromkeys(run.train.report_to))


def hyperparameters(run: RunConfig, signature: Optional[str]) -> dict:
    """The settings as flat dotted keys with scalar values (what every tracker accepts), plus the signature."""
    flat: dict = {"signature": signature or ""}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)

    walk("", to_dict(run))
    return flat


def step_metrics(record: dict, events: list[dict]) -> dict:
    out = {f"train/{k}": float(record[k]) for k in STEP_KEYS if record.get(k) is not None}
    for e in events:  # an instability event is a marker at its step (its details stay in metrics.jsonl)
        out[f"instability/{e['event']}"] = 1.0
    return out


def _read_ids(run_dir: Path) -> dict:
    path = tracking_dir(run_dir) / "ids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _remember_id(run_dir: Path, tracker: str, run_id: str) -> None:
    write_json_atomic(tracking_dir(run_dir) / "ids.json", {**_read_ids(run_dir), tracker: run_id})


# ---------------------------------------------------------------------------------------------
# One class per tracker: log(metrics, step), close()
# ---------------------------------------------------------------------------------------------
class TensorBoardTracker:
    def __init__(self, run_dir: Path, params: dict, resume_step: Optional[int]):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard forgets this folder's events at or after it (the redone steps)
        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(tracking_dir(run_dir) / "tensorboard"), purge_step=purge)
        if resume_step is not None:  # a training job: the settings go to TensorBoard's HParams tab
            from torch.utils.tensorboard.summary import hparams

            for summary in hparams(params, {"train/loss": None}):
                self.writer.file_writer.add_summary(summary)

    def log(self, metrics: dict, step: int) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()


def kept_history(run_dir: Path, upto: int) -> list[tuple[int, dict]]:
    """(step, metrics) of metrics.jsonl up to a checkpoint's step, as step_metrics names them."""
    from lorafull.runs import read_jsonl

    rows: dict[int, dict] = {}
    for r in read_jsonl(Path(run_dir) / "metrics.jsonl"):
        if not r.get("summary") and 0 < r.get("step", 0) <= upto:
            rows.setdefault(r["step"], {}).update(step_metrics({}, [r]) if "event" in r else step_metrics(r, []))
    return sorted(rows.items())


class WandbTracker:
    def __init__(self, run_dir: Path, run: RunConfig, params: dict, resume_step: Optional[int]):
        import wandb

        out = tracking_dir(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        run_id = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run.name}-{params['signature']}")[:64]
        self.run = wandb.init(project=study_dir_of_run(run_dir).name, name=run.name, id=run_id, resume="allow",
                              dir=str(out), config=params, mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(console="off", silent=True))
        _remember_id(run_dir, "wandb", run_id)
        # W&B buffers in a helper process, so a killed job may leave nothing of its part on disk: a resumed
        # job logs the kept history again (W&B ignores steps a resumed run already holds)
        for step, metrics in kept_history(run_dir, resume_step or 0):
            self.run.log(metrics, step=step)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, run_dir: Path, run: RunConfig, params: dict, fresh: bool):
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # a file store: nothing to serve on a compute node (MLflow 3 asks for this opt-in to use one)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((study_dir_of_run(run_dir) / "mlruns").resolve().as_uri())
        self.client = mlflow.MlflowClient()
        self.run_id = _read_ids(run_dir).get("mlflow")
        if self.run_id is None:
            self.run_id = self.client.create_run(self._experiment(study_dir_of_run(run_dir).name),
                                                 run_name=run.name).info.run_id
            _remember_id(run_dir, "mlflow", self.run_id)
            fresh = True
        if fresh:  # params are write-once in MLflow
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        try:
            return self.client.create_experiment(name)
        except Exception:  # noqa: BLE001 -- another run of the study created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def log(self, metrics: dict, step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        pass  # each log_batch is written at once; the run stays open for the eval scores


class Tracker:
    """Every tracker of a run behind one log call; empty when report_to names none."""

    def __init__(self, run_dir: Path, run: RunConfig, resume_step: Optional[int] = None):
        """resume_step: the checkpoint step a training job starts from (0 = fresh); None = the eval job,
        which adds scores to the tracked run and leaves its history alone."""
        run_dir = Path(run_dir)
        params = hyperparameters(run, run_signature_from_folder(run_dir))
        self.backends = []
        for name in trackers_of(run):
            if name == "tensorboard":
                self.backends.append(TensorBoardTracker(run_dir, params, resume_step))
            elif name == "wandb":
                self.backends.append(WandbTracker(run_dir, run, params, resume_step))
            else:
                self.backends.append(MlflowTracker(run_dir, run, params, fresh=resume_step == 0))

    def log(self, metrics: dict, step: int) -> None:
        for backend in self.backends:
            backend.log(metrics, step)

    def log_step(self, record: dict, events: list[dict]) -> None:
        self.log(step_metrics(record, events), record["step"])

    def log_summary(self, summary: dict) -> None:
        numbers = {f"summary/{k}": float(v) for k, v in summary.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.log(numbers, int(summary.get("steps") or 0))

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def trained_steps(run_dir: Path) -> int:
    """The step the eval scores are logged at: the training's last (metrics.jsonl's summary line)."""
    from lorafull.runs import read_jsonl

    steps = [r.get("steps") or r.get("step") or 0 for r in read_jsonl(Path(run_dir) / "metrics.jsonl")]
    return int(steps[-1]) if steps else 0


def log_eval_scores(run_dir: str | os.PathLike, run: RunConfig, summary: dict) -> None:
    """The judge's scores (average, per category, others, unscored, cost) into the run's tracked run."""
    scores = {"eval/average": summary.get("average"), "eval/others": summary.get("others"),
              "eval/unscored": summary.get("unscored"), "eval/cost": summary.get("cost"),
              **{f"eval/{c}": v for c, v in (summary.get("categories") or {}).items()}}
    numbers = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}
    if not trackers_of(run) or not numbers:
        return
    tracker = Tracker(Path(run_dir), run, resume_step=None)
    try:
        tracker.log(numbers, trained_steps(Path(run_dir)))
    finally:
        tracker.close()
