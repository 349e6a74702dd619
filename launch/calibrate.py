"""`launch.grid CONFIG --calibrate`: one short probe job per distinct training shape of a study, then
STUDY_DIR/launch/calibration.json, from which the plan takes the measured shapes' step times and peak
memory (their rows say "measured").

    python -m launch.grid configs/demo.yaml --calibrate

A shape (lorafull.plan.calibration) is what the step time depends on apart from the data and the
global batch; runs sharing one share a probe. Each probe is a folder STUDY_DIR/launch/probes/<key>/
holding a run config made from the first run of that shape (launch.probe says what it changes); it
runs on the study's own resources: through Slurm on the study's partition (one job per probe, all
submitted at once, then waited for) or here, one after another. Real run folders are never read or
written.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from lorafull.config import RunConfig, Study, save_run_config
from lorafull.runs import read_status, write_json_atomic

from .jobs import launch_dir


def probe_config(run: RunConfig, study: Study) -> RunConfig:
    """The run's settings for a probe: its root run's base model (scratch: or weights, never another
    run's output), a few steps, no checkpoints."""
    probe = copy.deepcopy(run)
    root = run
    while root.parent is not None:
        root = study.run(root.parent)
    probe.name = f"probe-{run.name}"
    probe.model.name_or_path = root.model.name_or_path
    tok = run.model.tokenizer
    if tok is None or tok.startswith("run:"):
        probe.model.tokenizer = root.model.tokenizer
    probe.train.max_steps = study.plan.probe_steps
    probe.train.save_every_steps = 0
    probe.train.log_every_steps = study.plan.probe_steps
    return probe


def probe_folders(study: Study) -> dict[str, tuple[Path, dict]]:
    """shape key -> (probe folder, shape), one per distinct training shape; folders written afresh."""
    from lorafull.plan.estimate import estimate_run

    out: dict[str, tuple[Path, dict]] = {}
    for run in study.runs:
        row = estimate_run(run, study, calibration={})
        key = row["shape_key"]
        if key is None or key in out:
            continue
        folder = launch_dir(study.output_dir) / "probes" / key
        shutil.rmtree(folder, ignore_errors=True)
        save_run_config(probe_config(run, study), folder, f"probe-{key}")
        out[key] = (folder, {**row["shape"], "probe_of": run.name, "plan_tokens_per_sample": row["tokens_per_sample"]})
    return out


def _run_here(study: Study, folders: list[Path], log: Callable[[str], None]) -> None:
    for folder in folders:
        log(f"== probe {folder.name}: python -m launch.probe {folder}")
        subprocess.run([sys.executable, "-m", "launch.probe", str(folder), str(study.plan.probe_warmup_steps)])


def _run_on_slurm(study: Study, folders: list[Path], log: Callable[[str], None]) -> None:
    from lorafull.config import load_run_config

    from .executors import SlurmSubmitter
    from .job_bodies import ProbeJob
    from .jobs import Ledger
    from .resources import train_shape

    submitter = SlurmSubmitter(study, Ledger(study.output_dir), log=log)
    jobs = []
    for folder in folders:
        shape = train_shape(load_run_config(folder), study.slurm)
        ex = submitter.executor_for(shape, f"{submitter.prefix}-probe", use_srun=False)
        body = ProbeJob(str(folder), submitter.python, shape.nodes, shape.tasks_per_node, shape.cpus_per_task,
                        warmup=study.plan.probe_warmup_steps)
        jobs.append(ex.submit(body))
        log(f"  sbatch probe {jobs[-1].job_id}: {folder.name} ({shape.describe()})")
    for job in jobs:
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 -- the probe folder's status says why; the others go on
            log(f"  probe job {job.job_id} failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}")


def calibrate(study: Study, executor: str, log: Callable[[str], None] = print) -> int:
    """Run the probes, merge what they measured into calibration.json; 0 when every probe measured."""
    from lorafull.plan.calibration import calibration_path

    probes = probe_folders(study)
    log(f"calibrating {len(probes)} training shape(s) of {len(study.runs)} run(s) ({executor})")
    folders = [folder for folder, _ in probes.values()]
    (_run_on_slurm if executor == "slurm" else _run_here)(study, folders, log)
    path = calibration_path(study)
    stored = json.loads(path.read_text()) if path.exists() else {}
    shapes, failed = dict(stored.get("shapes", {})), []
    for key, (folder, shape) in probes.items():
        result_file = folder / "probe.json"
        if not result_file.exists():
            failed.append(f"{key} ({read_status(folder).get('error') or 'no probe.json'})")
            continue
        # the plan's own count for the probe's data: runs scale by their count against it (like for like)
        shapes[key] = {"shape": shape, "plan_tokens_per_sample": shape.pop("plan_tokens_per_sample"),
                       **json.loads(result_file.read_text())}
    write_json_atomic(path, {"shapes": shapes})
    log(f"calibration: {len(probes) - len(failed)} shape(s) measured -> {path}")
    for why in failed:
        log(f"  not measured: {why}")
    return 1 if failed else 0
