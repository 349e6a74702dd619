"""Train one run: full fine-tuning or LoRA, one loop, under DeepSpeed ZeRO or plain PyTorch.

    python -m lorafull.train RUN_DIR          # reads RUN_DIR/config.yaml

Alone it is one process, or starts torchrun over itself when train.nproc > 1; it also runs under
torchrun or as srun tasks (see lorafull.train.distributed). A job that finds a complete checkpoint in
RUN_DIR/checkpoints continues from it (weights, optimizer, schedule, data position, RNG), so a
requeue is a rerun. SIGUSR2/SIGTERM: save at the next step boundary, status "queued" + preempted,
exit 75. Done: final/ (full: HF model folder; LoRA: peft adapter folder), status "done", exit 0;
running a done run again does nothing.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from lorafull.train import distributed as dist
from lorafull.train.checkpoint import Checkpoints, load_rng, read_state, save_rng
from lorafull.config.resources import grad_accumulation
from lorafull.config import RunConfig, load_run_config, load_study_settings, run_signature_from_folder, study_dir_of_run
from lorafull.models.method_table import method_of
from lorafull.runs import (RunPaths, Stage, command_parser, error_detail, error_line, not_a_run_folder, read_status,
                           status as run_status)
from lorafull.train.metrics import peak_mem_gb
from lorafull.train.order import BatchOrder, seed_everything
from lorafull.plan.auto import settle_auto

EXIT_PREEMPTED = dist.EXIT_REQUEUE  # the wrapper requeues (lorafull.train.distributed)


class Trainer:
    """setup -> train -> save -> cleanup, the same for both methods and both engines."""

    def __init__(self, run_dir: Path, run: RunConfig, env: dist.DistEnv):
        self.run_dir, self.run, self.env = Path(run_dir), run, env
        self.paths = RunPaths.of(run_dir)
        self.is_main = env.is_main
        self.stop_requested = False
        self.t_start = time.time()

    # ---- setup -------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        self.stop_requested = True

    def setup(self) -> None:
        run, env = self.run, self.env
        self._previous_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGUSR2, signal.SIGTERM)}
        self.use_ds = run.train.deepspeed
        self.engine_name = f"deepspeed-zero{run.train.zero_stage}" if self.use_ds else "torch"
        if not self.use_ds and env.world_size > 1:
            raise ValueError(f"train.deepspeed: false trains in one process, but {env.world_size} were started "
                             "(set train.nproc: 1, or deepspeed: true)")
        if self.is_main:
            run_status.started(self.run_dir, Stage.TRAIN, signature=run_signature_from_folder(self.run_dir),
                               preempted=False, world_size=env.world_size)
        self.device = dist.device_for(env)  # before the process group: NCCL binds to the current GPU
        if self.use_ds:
            dist.init_deepspeed_distributed()
        seed_everything(run.train.seed)

        self._setup_data()

        tc = run.train
        # auto micro batch / checkpointing: settled here, from the memory model, before anything uses them
        self.batch_settings = settle_auto(run, self.base_path, load_study_settings(study_dir_of_run(self.run_dir)),
                                          env.world_size, self.device)
        self.grad_accum = grad_accumulation(tc.global_batch_size, tc.micro_batch_size, env.world_size)
        self.order = BatchOrder(self.dataset.lengths(), tc.global_batch_size, tc.micro_batch_size, env.world_size,
                                env.rank, tc.seed, group_by_length=tc.group_by_length)
        if self.order.steps_per_epoch == 0:
            raise ValueError(f"train.global_batch_size: {tc.global_batch_size} is more than the "
                             f"{len(self.dataset)} training samples of {run.data.train}")
        self._plan_steps()

        self._setup_model()
        self._resume()

    def _plan_steps(self) -> None:
        """How long the run trains, where it keeps checkpoints for good, where a branch starts."""
        from lorafull.train.durations import plan_steps

        self.total_steps, self.pinned_steps, self.branch_start = plan_steps(self.run, self.order)

    def _setup_data(self) -> None:
        """The base prepared once, the tokenizer, and the tokenized training set (rank 0 fills the cache)."""
        from lorafull.data.dataset import build_dataset, collate
        from lorafull.models.load import load_tokenizer, prepare_base, resolve_base_path, resolve_run_reference

        run = self.run
        if self.is_main:  # merges a LoRA parent / writes a scratch base once, before anyone loads it
            prepare_base(run.model, self.run_dir, run.train.seed)
        dist.barrier()
        self.base_path = resolve_base_path(run.model, self.run_dir)
        self.tokenizer = load_tokenizer(resolve_run_reference(run.model.tokenizer, self.run_dir)
                                        if run.model.tokenizer else self.base_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.collate = collate
        if not self.is_main:
            dist.barrier()  # rank 0 tokenizes into the shared cache; the others then map it
        self.dataset = build_dataset(run, self.tokenizer)
        if self.is_main:
            dist.barrier()

    def _setup_model(self) -> None:
        """The base model with the method applied, wrapped in its engine."""
        from lorafull.models.load import apply_method, load_base, param_counts
        from lorafull.train import speed
        from lorafull.train.engine import DeepSpeedEngine, TorchEngine

        run, env, tc = self.run, self.env, self.run.train
        if self.use_ds and tc.zero_stage == 3:
            # transformers then builds the model inside zero.Init: each rank holds only its shard
            from transformers.integrations import HfDeepSpeedConfig

            self._hf_ds_config = HfDeepSpeedConfig(dist.ds_config(tc, run.model.dtype, env.world_size, self.grad_accum))
        # plain torch trains full weights in fp32 under autocast; DeepSpeed keeps its own fp32 master
        load_dtype = "fp32" if (not self.use_ds and not method_of(run).frozen_base) else run.model.dtype
        model = load_base(run.model, self.run_dir, seed=tc.seed, dtype=load_dtype)
        speed.prepare_base_model(model, tc)
        model = apply_method(model, run.method, seed=tc.seed, adapter_dtype=speed.adapter_dtype(run, self.use_ds))
        model = speed.finish_model(model, tc)
        self.counts = param_counts(model)
        torch.manual_seed(tc.seed + 1000 * env.rank)  # dropout differs across ranks, alike across reruns

        if self.use_ds:
            self.engine = DeepSpeedEngine(model, run, self.total_steps, self.grad_accum, env.world_size)
        else:
            self.engine = TorchEngine(model, run, self.device, self.total_steps, self.grad_accum)
        self.device = torch.device(self.engine.device)

    def _resume(self) -> None:
        from lorafull.train.metrics import MetricsLog

        self.ckpts = Checkpoints(self.paths.checkpoints, self.run.train.keep_checkpoints, self.is_main,
                                 self.pinned_steps)
        self.ckpts.remove_partial()
        latest = self.ckpts.latest()
        self.step, self.tokens_seen, self.time_before_s, self.resumed_from = 0, 0, 0.0, None
        if latest is None and self.run.train.branch_of:  # a cooldown branch's first job: its trunk's checkpoint
            from lorafull.train.durations import branch_start

            latest = branch_start(self.run, self.run_dir, self.total_steps, self.is_main)
        if latest is not None:
            state = read_state(latest)
            if state.get("engine") != self.engine_name:
                raise ValueError(f"{latest}: written by the {state.get('engine')} engine, this job runs "
                                 f"{self.engine_name} (restore train.deepspeed / train.zero_stage, or remove "
                                 f"{self.paths.checkpoints} to start over)")
            if self.use_ds and state.get("world_size") != self.env.world_size:
                raise ValueError(f"{latest}: written by {state.get('world_size')} processes, this job has "
                                 f"{self.env.world_size} (set train.nproc / the Slurm tasks to match)")
            self.engine.load(latest)
            load_rng(latest, self.env.rank)
            self.step, self.tokens_seen = state["step"], state["tokens_seen"]
            self.time_before_s = state["wall_time_s"]
            self.resumed_from = self.step
        from_trunk = latest is not None and latest.parent != self.ckpts.root
        self.last_saved = self.step if latest is not None and not from_trunk else -1
        if from_trunk:  # the trunk's time is in the trunk's row: a branch's clock counts its cooldown only
            self.time_before_s = 0.0
        spike = load_study_settings(study_dir_of_run(self.run_dir)).analysis.spike_factor
        from lorafull.tracking import Tracker  # TensorBoard / W&B / MLflow, rank 0 only

        tracker = Tracker(self.run_dir, self.run, self.step) if self.is_main else None
        self.metrics = MetricsLog(self.paths.metrics, self.is_main, self.step, spike, tracker)
        self.metrics.settings(self.step, self.batch_settings)
        if self.is_main:
            run_status.started(self.run_dir, Stage.TRAIN, signature=run_signature_from_folder(self.run_dir),
                               preempted=False, step=self.step, total_steps=self.total_steps,
                               resumed_from=self.resumed_from, world_size=self.env.world_size)

    # ---- train -------------------------------------------------------------------------------
    def _batch(self, indices: np.ndarray) -> dict:
        batch = self.collate([self.dataset[int(i)] for i in indices], self.pad_id)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def train(self) -> bool:
        """Run to total_steps; False when stopped by a preemption signal."""
        from tqdm import tqdm

        tc, spe = self.run.train, self.order.steps_per_epoch
        # fault injection for tests: slow steps down so a signal or a kill lands mid-run
        self._step_sleep_s = float(os.environ.get("LORAFULL_FAULT_STEP_SLEEP_S", "0"))
        window_losses, window_tokens, window_padding, window_t0 = [], 0, [], time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main, desc="train",
                   dynamic_ncols=True, mininterval=1.0)
        while self.step < self.total_steps:
            if dist.any_rank(self.stop_requested, self.device):
                bar.close()
                return False
            lr = self.engine.lr()
            losses = [self.engine.forward_backward(self._batch(mb)) for mb in self.order.micro_batches(self.step)]
            grad_norm = self.engine.optimizer_step()
            window_losses.append(torch.stack(losses).mean())
            window_tokens += self.order.tokens(self.step)
            window_padding.append(self.order.padding_fraction(self.step))
            self.tokens_seen += self.order.tokens(self.step)
            self.step += 1
            bar.update(1)
            if self.step % tc.log_every_steps == 0 or self.step == self.total_steps:
                elapsed = time.perf_counter() - window_t0
                window_loss = torch.stack(window_losses).mean().float()
                loss = float(dist.all_reduce_sum(window_loss).item()) / self.env.world_size
                record = {"step": self.step, "epoch": round(self.step / spe, 4), "loss": loss, "lr": lr,
                          "grad_norm": None if grad_norm is None else float(grad_norm),
                          "tokens_per_s": window_tokens / elapsed, "step_time_s": elapsed / len(window_losses),
                          "peak_mem_gb": round(peak_mem_gb(self.device), 4), "tokens_seen": self.tokens_seen,
                          "padding_fraction": round(float(np.mean(window_padding)), 4)}
                self.metrics.step(record)
                if self.is_main:  # status.json follows the training (--status, the report, a user's cat)
                    run_status.started(self.run_dir, Stage.TRAIN, step=self.step)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                window_losses, window_tokens, window_padding, window_t0 = [], 0, [], time.perf_counter()
            periodic = tc.save_every_steps and self.step % tc.save_every_steps == 0
            if (periodic or self.step in self.pinned_steps) and self.step < self.total_steps:
                self.save_checkpoint()
            if self._step_sleep_s:
                time.sleep(self._step_sleep_s)
        bar.close()
        return True

    def _elapsed_s(self) -> float:
        return self.time_before_s + (time.time() - self.t_start)

    def save_checkpoint(self) -> None:
        if self.step == self.last_saved:
            return
        tmp = self.ckpts.begin(self.step)
        self.engine.save(tmp, self.env.rank)
        save_rng(tmp, self.env.rank)
        state = {"step": self.step, "epoch": self.step / self.order.steps_per_epoch, "tokens_seen": self.tokens_seen,
                 "wall_time_s": self._elapsed_s(), "world_size": self.env.world_size, "method": self.run.method.kind,
                 "engine": self.engine_name, "total_steps": self.total_steps}
        self.ckpts.commit(tmp, self.step, state)
        self.last_saved = self.step

    # ---- save --------------------------------------------------------------------------------
    def save_final(self) -> None:
        from lorafull.models.load import torch_dtype

        method = method_of(self.run)
        adapted = method.frozen_base  # only the added weights are saved
        # adapters stay fp32 (small, and merging adds them to the base exactly); full weights in model.dtype
        dtype = torch.float32 if adapted else torch_dtype(self.run.model.dtype)
        state = self.engine.export_state_dict(trainable_only=adapted, dtype=dtype)
        if self.is_main:
            final, tmp = self.paths.final, self.run_dir / ".final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            # PeftModel (saves only the adapter), HF model (+ bottleneck adapters): the method's save format
            method.save(self.engine.model, tmp, state, self.run.method, self.base_path, dtype)
            self.tokenizer.save_pretrained(str(tmp))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        dist.barrier()

    def summary(self) -> dict:
        from lorafull.train.metrics import device_name

        wall = self._elapsed_s()
        epochs = self.step / self.order.steps_per_epoch
        own_epochs = (self.step - self.branch_start) / self.order.steps_per_epoch  # a branch: its cooldown's
        opt = self.engine.stepping_optimizer()
        stats = dict(self.dataset.stats)
        return {"wall_time_s": round(wall, 3), "hours_per_epoch": wall / 3600 / own_epochs if own_epochs else None,
                "steps": self.step, "epochs": round(epochs, 4), "tokens_seen": self.tokens_seen,
                "trainable_params": self.counts["trainable"], "total_params": self.counts["total"],
                "added_params": self.counts["added"], "world_size": self.env.world_size,
                "device": device_name(self.device), "engine": self.engine_name, "dtype": self.run.model.dtype,
                # what actually stepped, and its lr after the last step (the schedule's floor reached it?)
                "optimizer": type(opt).__name__, "lr_after_last_step": opt.param_groups[0]["lr"],
                "resumed_from": self.resumed_from, "batch_settings": self.batch_settings,
                "branch_of": self.run.train.branch_of, "branch_start": self.branch_start,  # of a cooldown branch
                "truncated": stats.get("truncated"), "skipped_empty": stats.get("skipped_empty"), "data": stats}

    def cleanup(self) -> None:
        for s, handler in getattr(self, "_previous_handlers", {}).items():
            signal.signal(s, handler)
        if getattr(self, "metrics", None) is not None:
            self.metrics.close()

    def run_to_end(self) -> int:
        try:
            return self._run_to_end()
        finally:
            self.cleanup()

    def _run_to_end(self) -> int:
        self.setup()
        finished = self.train()
        self.save_checkpoint()
        if not finished:
            if self.is_main:
                run_status.preempted(self.run_dir, step=self.step)
                print(f"preempted: checkpoint at step {self.step} saved; exit {EXIT_PREEMPTED} to be requeued",
                      file=sys.stderr)
            return EXIT_PREEMPTED
        self.save_final()
        if self.is_main:
            summary = self.summary()
            self.metrics.summary(summary)
            run_status.done(self.run_dir, Stage.TRAIN, preempted=False, step=self.step,
                            wall_time_s=summary["wall_time_s"])
        return 0


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def is_done(run_dir: Path) -> bool:
    return run_status.train_done(run_dir, read_status(run_dir))


def _fail(run_dir: Path, exc: BaseException, env: dist.DistEnv) -> int:
    line = error_line(exc)
    logs = RunPaths.of(run_dir).logs
    try:
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"train-error-rank{env.rank}.log").write_text(error_detail(exc))
        if env.is_main:
            run_status.failed(run_dir, Stage.TRAIN, error=line)
    except OSError:
        pass
    if env.is_main:
        print(f"error: {line}", file=sys.stderr)
    return 1


def _precheck(run_dir: Path, run: RunConfig) -> None:
    """Before starting N processes: the bad data line or target module fails here, in one line."""
    from lorafull.data.dataset import build_dataset
    from lorafull.models.load import count_params_meta, load_tokenizer, prepare_base, resolve_run_reference

    base = prepare_base(run.model, run_dir, run.train.seed)
    tokenizer = resolve_run_reference(run.model.tokenizer, run_dir) if run.model.tokenizer else base
    build_dataset(run, load_tokenizer(tokenizer))
    count_params_meta(base, run.method)


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("python -m lorafull.train", __doc__, "python -m lorafull.train studies/demo/runs/pretrain")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder: trains what RUN_DIR/config.yaml says")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:  # before anything is written: a mistyped folder gets no logs/ and no status.json
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir).resolve()
    env = dist.detect_env()
    try:
        run = load_run_config(run_dir, for_training=True)  # every key, and the checks across keys
        if is_done(run_dir):
            if env.is_main:
                print(f"{run_dir}: already done", file=sys.stderr)
            return 0
        nproc = run.train.nproc or dist.default_nproc()
        if not run.train.deepspeed and nproc > 1 and env.is_main:
            print(f"note: train.deepspeed is false: one process (train.nproc {nproc} not used)", file=sys.stderr)
        if env.launcher == "single" and run.train.deepspeed and nproc > 1:
            _precheck(run_dir, run)
            rc = dist.run_torchrun(["lorafull.train", str(run_dir)], nproc)
            status = read_status(run_dir)
            if status.get("state") == "queued" and status.get("preempted"):
                return EXIT_PREEMPTED
            if rc != 0:
                run_status.failed(run_dir, Stage.TRAIN, error=f"torchrun exited with code {rc}", keep_earlier=True)
                print(f"error: {read_status(run_dir).get('error')}", file=sys.stderr)
            return 0 if rc == 0 else 1
        return Trainer(run_dir, run, env).run_to_end()
    except Exception as e:  # noqa: BLE001 -- every failure becomes one line + status failed
        return _fail(run_dir, e, env)
    finally:
        dist.destroy()


if __name__ == "__main__":
    sys.exit(main())
