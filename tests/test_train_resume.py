"""Requeue == rerun on the plain PyTorch engine: a job SIGKILLed mid-run, one preempted with SIGUSR2,
and one killed while writing a checkpoint all finish with final weights bitwise equal to an
uninterrupted run's (CPU, fp32, same thread count: every operation is deterministic)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers.common import REPO, job_env, write_run_config
from lorafull.train import trainer as train
from lorafull.train.checkpoint import Checkpoints, checkpoint_step, read_state
from lorafull.runs import read_jsonl, read_status

STEP_SLEEP_S = "0.05"  # slows steps so the signal lands mid-run whatever the machine's speed


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


@pytest.fixture(scope="module")
def reference(root, tiny_tokenizer_dir):
    """Uninterrupted runs, one per method: name -> final weights."""
    out = {}
    for kind in ("full", "lora"):
        run_dir = write_run_config(root, f"ref-{kind}", tiny_tokenizer_dir, **{"method.kind": kind})
        assert train.main([str(run_dir)]) == 0
        out[kind] = (run_dir, final_weights(run_dir))
    return out


def final_weights(run_dir: Path) -> dict:
    final = run_dir / "final"
    name = "adapter_model.safetensors" if (final / "adapter_config.json").exists() else "model.safetensors"
    return load_file(str(final / name))


def assert_bitwise_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].equal(b[k]), k


def losses(run_dir):
    return {r["step"]: r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r}


def start(run_dir: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lorafull.train", str(run_dir)], cwd=REPO, env=job_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout_s: float = 120) -> int:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        done = max(losses(run_dir) or [0])
        if done >= step:
            return done
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout_s} s")


def test_sigkill_mid_run_then_rerun_matches_uninterrupted(root, tiny_tokenizer_dir, reference):
    run_dir = write_run_config(root, "killed", tiny_tokenizer_dir, **{"method.kind": "lora"})
    proc = start(run_dir, LORAFULL_FAULT_STEP_SLEEP_S=STEP_SLEEP_S)
    wait_for_step(proc, run_dir, 23)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_status(run_dir)["state"] == "running"  # what a dead job leaves behind
    saved = checkpoint_step(Checkpoints(run_dir / "checkpoints").latest())
    assert saved in (20, 30) and max(losses(run_dir)) > saved
    # metrics run past the checkpoint: the rerun cuts them back and redoes those steps
    assert train.main([str(run_dir)]) == 0
    status = read_status(run_dir)
    assert status["state"] == "done" and status["resumed_from"] == saved
    ref_dir, ref_weights = reference["lora"]
    assert_bitwise_equal(final_weights(run_dir), ref_weights)
    assert losses(run_dir) == losses(ref_dir)  # every step's loss, bit for bit, no duplicate lines
    steps = [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "event" not in r]
    assert steps == list(range(1, 41))


def test_sigusr2_saves_exits_75_and_resumes(root, tiny_tokenizer_dir, reference):
    run_dir = write_run_config(root, "preempted", tiny_tokenizer_dir, **{"method.kind": "full"})
    proc = start(run_dir, LORAFULL_FAULT_STEP_SLEEP_S=STEP_SLEEP_S)
    wait_for_step(proc, run_dir, 12)
    proc.send_signal(signal.SIGUSR2)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    status = read_status(run_dir)
    assert status["state"] == "queued" and status["preempted"] is True
    stopped_at = status["step"]
    assert 12 <= stopped_at < 40
    ckpt = run_dir / "checkpoints" / f"step-{stopped_at:08d}"
    assert read_state(ckpt)["step"] == stopped_at and (ckpt / "engine" / "state.pt").exists()
    assert not (run_dir / "final").exists()
    assert train.main([str(run_dir)]) == 0
    assert read_status(run_dir)["resumed_from"] == stopped_at
    assert_bitwise_equal(final_weights(run_dir), reference["full"][1])


def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(root, tiny_tokenizer_dir, reference):
    run_dir = write_run_config(root, "torn", tiny_tokenizer_dir, **{"method.kind": "lora"})
    proc = start(run_dir, LORAFULL_FAULT_KILL_IN_SAVE="20")
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    ckpts = run_dir / "checkpoints"
    torn = ckpts / ".tmp-step-00000020"
    assert (torn / "engine" / "state.pt").exists() and not (torn / "trainer_state.json").exists()
    assert sorted(p.name for p in ckpts.iterdir()) == [".tmp-step-00000020", "step-00000010"]
    assert train.main([str(run_dir)]) == 0
    assert read_status(run_dir)["resumed_from"] == 10
    assert not torn.exists()
    assert_bitwise_equal(final_weights(run_dir), reference["lora"][1])


@pytest.mark.parametrize("signum, state, code", [(signal.SIGTERM, "queued", 75), (signal.SIGINT, "interrupted", 130)])
def test_a_stop_signal_while_loading_stops_at_once_and_is_no_failure(tmp_path, signum, state, code):
    """Before the loop (imports, model, data, resume) nothing new exists to save: the signal stops the
    process there and then, since loading can outlast the scheduler's wait before its SIGKILL (Slurm's
    KillWait; a cancelled retry once died of it with exit 137 and a run marked failed). The run resumes
    from its latest checkpoint. In the loop the same signal only asks for a save at the step boundary."""
    from lorafull.train.stop import StopBeforeTraining, StopGate, report_early_stop

    run_dir = tmp_path / "run"
    ckpts = Checkpoints(run_dir / "checkpoints")
    ckpts.commit(ckpts.begin(20), 20, {"step": 20})
    t0 = time.monotonic()
    with StopGate() as gate:
        with pytest.raises(StopBeforeTraining) as stop:
            os.kill(os.getpid(), signum)
            time.sleep(30)  # loading a model: the handler does not wait for it to end
        assert time.monotonic() - t0 < 10
        assert report_early_stop(run_dir, stop.value, is_main=True) == code
        gate.loop_running = True
        os.kill(os.getpid(), signal.SIGUSR2)  # in the loop: a flag the loop reads at its next step
        assert gate.requested
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers it replaced are back
    status = read_status(run_dir)
    assert status["state"] == state and status["step"] == 20 and status.get("preempted") is (state == "queued"), status
