"""`launch.grid --status` on a login node: it reads files and asks the scheduler, and nothing else. With
torch made unimportable it still reports every state a run can be in.

    pytest tests/test_status_login_node.py
"""
from __future__ import annotations

import os
import subprocess
import sys

from helpers.common import REPO
from helpers.grid import make_data, study_dict, write_study

from launch.jobs import Ledger
from lorafull.config import load_study, save_run_config, study_signatures
from lorafull.runs import Stage, status as run_status

# runs python -m launch.grid in a process where `import torch` (and so transformers' models, peft,
# DeepSpeed) raises ImportError; prints which heavy packages got imported anyway
NO_TORCH = """
import sys
for name in ("torch", "deepspeed", "peft"):
    sys.modules[name] = None  # import raises ImportError
from launch.grid import main
rc = main(sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("transformers", "vllm", "lm_eval")})
print("heavy modules:", heavy or "none")
sys.exit(rc)
"""

STATES = ("done", "running", "queued", "waiting", "trained", "interrupted", "new", "failed", "superseded",
          "conflict")


def _finished(run_dir, signature, evaluated: bool) -> None:
    (run_dir / "final").mkdir(parents=True, exist_ok=True)
    (run_dir / "final" / "adapter_config.json").write_text("{}")
    run_status.done(run_dir, Stage.TRAIN, signature=signature)
    if evaluated:
        run_status.done(run_dir, Stage.EVALUATE)


def _a_study_in_every_state(tmp_path, tiny_tokenizer_dir):
    files = make_data(tmp_path, tiny_tokenizer_dir)
    cfg = write_study(tmp_path / "s.yaml", study_dict(tmp_path, files, runs=[{"name": s} for s in STATES]))
    study = load_study(cfg)
    sigs = study_signatures(study)
    d = {s: study.run_dir(study.run(s)) for s in STATES}
    for name in STATES:
        save_run_config(study.run(name), d[name], sigs[name])
    _finished(d["done"], sigs["done"], evaluated=True)
    _finished(d["trained"], sigs["trained"], evaluated=False)
    _finished(d["waiting"], sigs["waiting"], evaluated=False)
    run_status.started(d["waiting"], Stage.EVALUATE)
    run_status.waiting(d["waiting"], Stage.JUDGE, waiting_for="judge batch b-1 is in_progress")
    run_status.started(d["running"], Stage.TRAIN, step=3)
    run_status.queued(d["queued"], Stage.TRAIN)
    run_status.interrupted(d["interrupted"], Stage.TRAIN, why="interrupted (Ctrl-C): the same command resumes it")
    run_status.failed(d["failed"], Stage.TRAIN, error="data.jsonl:3: malformed JSON line")
    for name, old in (("superseded", "0ldsig00"), ("conflict", "0ldsig01")):  # settings changed since
        save_run_config(study.run(name), d[name], old)
    run_status.failed(d["superseded"], Stage.TRAIN, error="train.jsonl:9: malformed JSON line")
    _finished(d["conflict"], "0ldsig01", evaluated=True)
    ledger = Ledger(study.output_dir)  # a local launcher that is alive (this test) runs two of them
    for name in ("running", "queued"):
        ledger.set_job(name, "train", None, local_pid=os.getpid())
    ledger.save()
    return cfg, study


def test_status_without_torch_reports_every_state(tmp_path, tiny_tokenizer_dir):
    cfg, study = _a_study_in_every_state(tmp_path, tiny_tokenizer_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    out = subprocess.run([sys.executable, "-c", NO_TORCH, str(cfg), "--status", "--executor", "local"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = {line.split()[0]: line.split()[2] for line in out.stdout.splitlines()
            if line.split() and line.split()[0] in STATES}
    assert rows == {s: s for s in STATES}, out.stdout
    assert "heavy modules: none" in out.stdout, out.stdout
    counts = out.stdout.strip().splitlines()[-2]
    assert all(f"1 {s}" in counts for s in STATES), counts
