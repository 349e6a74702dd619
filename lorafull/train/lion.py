"""Lion (EvoLved Sign Momentum, Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), with
decoupled weight decay: the optimizer Biderman et al. 2024 call LionW.

Library module (no command): lorafull.train.engine builds it for train.optimizer: lion.

Per parameter, with gradient g, momentum m, lr eta and weight decay wd:
    update = sign(beta1 * m + (1 - beta1) * g)
    theta  = theta * (1 - eta * wd) - eta * update
    m      = beta2 * m + (1 - beta2) * g
Written here rather than taken from a package: it is ten lines, and a plain torch.optim.Optimizer is
what DeepSpeed accepts as a client optimizer under every ZeRO stage.
"""
from __future__ import annotations

import torch


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0):
        if lr <= 0:
            raise ValueError(f"train.lr: Lion needs a positive lr, got {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"train.betas: each beta must lie in [0, 1), got {list(betas)}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                if wd:
                    p.mul_(1.0 - lr * wd)
                update = m.mul(beta1).add_(grad, alpha=1.0 - beta1).sign_()
                p.add_(update, alpha=-lr)
                m.mul_(beta2).add_(grad, alpha=1.0 - beta2)
        return loss
