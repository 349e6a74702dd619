"""A calibration probe: a few dozen optimizer steps of one training shape, timed.

    python -m launch.probe PROBE_DIR        (launch.grid CONFIG --calibrate writes PROBE_DIR and starts it;
                                             on Slurm one process per GPU through srun, like training)

PROBE_DIR = STUDY_DIR/launch/probes/<shape key>/ holds a config.yaml made from a run of that shape:
its base model from scratch or its root run's weights (a probe never waits for, reads or writes
another run's folder), train.max_steps = plan.probe_steps, no checkpoints. The probe trains with the
project's own Trainer and times every step after plan.probe_warmup_steps:
    step_s       wall time between the ends of two optimizer steps (data, forward, backward, logging)
    optimizer_s  the optimizer step alone (device synchronised before and after): the engine's
                 optimizer_step, plus DeepSpeed's engine.step() calls (where ZeRO reduces, clips and steps)
    fwd_bwd_s    (step_s - optimizer_s) / micro batches per step: everything but the optimizer, per micro batch
and writes PROBE_DIR/probe.json with those, startup_s (set-up before the first step), first_step_s (the
first step, warm-up included: lorafull.plan.startup takes its excess over step_s), the mean tokens
per sample it trained on, tokens/s and the peak memory of rank 0.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Optional

from lorafull.config import load_run_config
from lorafull.runs import Stage, error_line, status as run_status, write_json_atomic


class StepTimer:
    """Wraps a set-up Trainer's engine.optimizer_step to time steps after `warmup` of them."""

    def __init__(self, trainer, warmup: int):
        import torch

        self.trainer, self.warmup = trainer, warmup
        self.sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        self.steps, self.last_end = 0, None
        self.created, self.first_step_s = time.perf_counter(), None  # set-up's end to the first step's end
        self.step_s: list[float] = []
        self.optimizer_s: list[float] = []
        self.tokens_at_warmup = 0
        self._in_step_s = 0.0  # DeepSpeed steps its optimizer inside the last micro batch's engine.step()
        self._optimizer_step = trainer.engine.optimizer_step
        trainer.engine.optimizer_step = self._timed_optimizer_step
        inner = getattr(trainer.engine, "engine", None)  # lorafull.train.engine.DeepSpeedEngine's engine
        if inner is not None and hasattr(inner, "step"):
            self._ds_step = inner.step
            inner.step = self._timed_ds_step

    def _timed_ds_step(self, *args, **kwargs):
        self.sync()
        start = time.perf_counter()
        out = self._ds_step(*args, **kwargs)
        self.sync()
        self._in_step_s += time.perf_counter() - start
        return out

    def _timed_optimizer_step(self):
        self.sync()
        start = time.perf_counter()
        out = self._optimizer_step()
        self.sync()
        end = time.perf_counter()
        self.steps += 1
        if self.steps == 1:
            self.first_step_s = end - self.created
        if self.steps > self.warmup and self.last_end is not None:
            self.step_s.append(end - self.last_end)
            self.optimizer_s.append(end - start + self._in_step_s)
        self._in_step_s = 0.0
        if self.steps == self.warmup:
            # the trainer adds this step's tokens after the call returns
            self.tokens_at_warmup = self.trainer.tokens_seen + self.trainer.order.tokens(self.trainer.step)
        self.last_end = end
        return out

    def result(self) -> dict:
        from lorafull.train.metrics import device_name, peak_mem_gb

        t = self.trainer
        if not self.step_s:
            raise ValueError(f"the probe timed no step: plan.probe_steps must exceed plan.probe_warmup_steps + 1 "
                             f"({self.steps} steps ran)")
        step, opt = statistics.median(self.step_s), statistics.median(self.optimizer_s)
        timed_tokens = t.tokens_seen - self.tokens_at_warmup
        samples = len(self.step_s) * t.run.train.global_batch_size
        return {"step_s": step, "optimizer_s": opt, "fwd_bwd_s": (step - opt) / t.grad_accum,
                "grad_accum": t.grad_accum, "tokens_per_sample": timed_tokens / samples,
                "tokens_per_s": timed_tokens / sum(self.step_s), "peak_mem_gb": peak_mem_gb(t.device),
                "steps_timed": len(self.step_s), "first_step_s": self.first_step_s, "device": device_name(t.device), "world_size": t.env.world_size,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_probe(probe_dir: Path, warmup: int) -> Optional[dict]:
    """Train the probe's steps in this process (one rank); rank 0 writes and returns probe.json's dict."""
    from lorafull.train import distributed as dist
    from lorafull.train.trainer import Trainer

    env = dist.detect_env()
    trainer = Trainer(probe_dir, load_run_config(probe_dir), env)
    try:
        trainer.setup()
        startup_s = time.time() - trainer.t_start  # model, data and engine set-up: once per run
        timer = StepTimer(trainer, warmup)
        trainer.train()
        result = {**timer.result(), "startup_s": startup_s}
        if env.is_main:
            write_json_atomic(probe_dir / "probe.json", result)
            run_status.done(probe_dir, Stage.PROBE)
        return result if env.is_main else None
    finally:
        trainer.cleanup()


def main(argv: Optional[list[str]] = None) -> int:
    from lorafull.runs import command_parser, not_a_run_folder

    parser = command_parser("python -m launch.probe", __doc__,
                            "python -m launch.probe studies/demo/launch/probes/full-h64l2-fp32-z2-0123456789 5")
    parser.add_argument("probe_dir", metavar="PROBE_DIR", help="a probe folder written by launch.grid --calibrate")
    parser.add_argument("warmup", type=int, nargs="?", default=5, metavar="WARMUP",
                        help="untimed first steps (default 5)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    refusal = not_a_run_folder(args.probe_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    from lorafull.train import distributed as dist

    probe_dir, warmup = Path(args.probe_dir).resolve(), args.warmup
    env = dist.detect_env()
    try:
        run = load_run_config(probe_dir)
        nproc = run.train.nproc or dist.default_nproc()
        if env.launcher == "single" and run.train.deepspeed and nproc > 1:  # here, not under srun: start the ranks
            return dist.run_torchrun(["launch.probe", str(probe_dir), str(warmup)], nproc)
        run_probe(probe_dir, warmup)
        return 0
    except Exception as e:  # noqa: BLE001 -- one line, and the probe folder says failed
        if env.is_main:
            run_status.failed(probe_dir, Stage.PROBE, error=error_line(e))
            print(f"error: probe {probe_dir.name}: {error_line(e)}", file=sys.stderr)
        return 1
    finally:
        dist.destroy()


if __name__ == "__main__":
    sys.exit(main())
