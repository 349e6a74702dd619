"""The two engines behind the one training loop: DeepSpeed (ZeRO 0-3) and plain PyTorch (1 process).

Both expose the same five operations, so the loop in train.py never asks which one it drives:
    forward_backward(batch) -> loss      one micro-batch (the engine scales for accumulation)
    optimizer_step() -> grad_norm        once per global step (DeepSpeed steps inside its own boundary)
    lr(), save(folder), load(folder), export_state_dict(trainable_only)
Both use the same optimizer (train.optimizer: torch AdamW or our Lion, decoupled decay on matrices only)
and the same schedule (lorafull.train.schedule), so a run means the same thing under either.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from lorafull.train import distributed as dist
from lorafull.train.checkpoint import safe_checkpoint_engine
from lorafull.train.schedule import lr_lambda, lr_multiplier  # noqa: F401 (lr_lambda: re-exported)
from lorafull.models.load import torch_dtype
from lorafull.models.method_table import method_of


DEFAULT_BETAS = {"adamw": (0.9, 0.999), "lion": (0.9, 0.99)}


def build_optimizer(model, train, cpu_adam: bool = False):
    """train.optimizer (AdamW or Lion) with decoupled weight decay on weight matrices only (norm gains and
    biases are not decayed)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    betas = tuple(train.betas) if train.betas else DEFAULT_BETAS[train.optimizer]
    if train.optimizer == "lion":
        from lorafull.train.lion import Lion

        return Lion(groups, lr=train.lr, betas=betas)
    if cpu_adam:  # ZeRO-Offload on GPUs: the optimizer step runs on the host, vectorised
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=train.lr, betas=betas, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=train.lr, betas=betas)


def _scheduler(optimizer, train, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(train, total_steps))


def _to_dtype(state: dict, dtype: torch.dtype) -> dict:
    return {k: (v.to(dtype) if torch.is_floating_point(v) else v) for k, v in state.items()}


class TorchEngine:
    """One process, no DeepSpeed: autocast for bf16/fp16 (fp32 weights for full fine-tuning; a frozen
    base may stay in the low precision under LoRA, where peft keeps the adapters in fp32)."""

    def __init__(self, model, run, device: torch.device, total_steps: int, grad_accum: int):
        self.model, self.device, self.grad_accum = model.to(device), device, grad_accum
        self.train_cfg = run.train
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(model, run.train)
        self.scheduler = _scheduler(self.optimizer, run.train, total_steps)
        self.amp_dtype = None if run.model.dtype == "fp32" else torch_dtype(run.model.dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=run.model.dtype == "fp16")
        self.model.train()

    def forward_backward(self, batch: dict) -> torch.Tensor:
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=amp):
            loss = self.model(**batch).loss
        self.scaler.scale(loss / self.grad_accum).backward()
        return loss.detach()

    def optimizer_step(self):
        self.scaler.unscale_(self.optimizer)
        clip = self.train_cfg.grad_clip if self.train_cfg.grad_clip and self.train_cfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def stepping_optimizer(self):
        return self.optimizer

    def _trainable_state(self) -> dict:
        return {n: p.detach() for n, p in self.model.named_parameters() if p.requires_grad}

    def save(self, folder: Path, rank: int) -> None:
        (folder / "engine").mkdir(exist_ok=True)
        torch.save({"model": self._trainable_state(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()},
                   folder / "engine" / "state.pt")

    def load(self, folder: Path) -> None:
        state = torch.load(folder / "engine" / "state.pt", map_location=self.device, weights_only=True)
        missing = set(self._trainable_state()) - set(state["model"])
        if missing:
            raise ValueError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors "
                             f"(e.g. {sorted(missing)[0]}): written by another method or model?")
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def export_state_dict(self, trainable_only: bool, dtype: torch.dtype) -> Optional[dict]:
        state = self._trainable_state() if trainable_only else self.model.state_dict()
        return _to_dtype({k: v.detach().cpu() for k, v in state.items()}, dtype)


class DeepSpeedEngine:
    """DeepSpeed ZeRO stage 0-3 with our optimizer and schedule; bf16/fp16 master weights in fp32."""

    def __init__(self, model, run, total_steps: int, grad_accum: int, world_size: int):
        import deepspeed

        self.stage, self.lora = run.train.zero_stage, method_of(run).frozen_base  # lora: any frozen-base method
        config = dist.ds_config(run.train, run.model.dtype, world_size, grad_accum)
        cpu_adam = run.train.offload and torch.cuda.is_available() and run.train.optimizer == "adamw"
        optimizer = build_optimizer(model, run.train, cpu_adam=cpu_adam)
        # the schedule wraps the inner torch optimizer: ZeRO's wrapper is not a torch Optimizer, but
        # shares its param_groups, so the lr set here is the lr DeepSpeed steps with
        self.scheduler = _scheduler(optimizer, run.train, total_steps)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=self.scheduler,
                                                    config=config)
        # DeepSpeed's own engine unpickles whatever the checkpoint folder holds; ours reads data only
        self.engine.checkpoint_engine = safe_checkpoint_engine(self.engine._config)
        self.model = self.engine.module
        self.device = self.engine.device
        self.engine.train()

    def forward_backward(self, batch: dict) -> torch.Tensor:
        loss = self.engine(**batch).loss
        self.engine.backward(loss)
        self.engine.step()  # steps the optimizer only at the accumulation boundary
        return loss.detach()

    def optimizer_step(self):
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def stepping_optimizer(self):
        """The torch optimizer DeepSpeed steps (inside ZeRO's or the bf16 wrapper, when there is one)."""
        wrapper = self.engine.optimizer
        return getattr(wrapper, "optimizer", wrapper)

    def save(self, folder: Path, rank: int) -> None:
        # LoRA: the frozen base is reloaded from its folder, so only adapters + optimizer are saved
        self.engine.save_checkpoint(str(folder / "engine"), tag="state", save_latest=False,
                                    exclude_frozen_parameters=self.lora)

    def load(self, folder: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(folder / "engine"), tag="state", load_module_strict=not self.lora,
                                              load_optimizer_states=True, load_lr_scheduler_states=True)
        if path is None:
            raise ValueError(f"{folder / 'engine'}: DeepSpeed could not load this checkpoint")

    def export_state_dict(self, trainable_only: bool, dtype: torch.dtype) -> Optional[dict]:
        """Full weights on rank 0 (None elsewhere); every rank must call it (ZeRO-3 gathers layer by layer)."""
        if self.stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=trainable_only)
        elif self.engine.global_rank == 0:
            named = dict(self.model.named_parameters())
            state = {k: v for k, v in self.model.state_dict().items()
                     if not trainable_only or (k in named and named[k].requires_grad)}
        else:
            state = None
        if state is None:
            return None
        return _to_dtype({k: v.detach().cpu() for k, v in state.items()}, dtype)
