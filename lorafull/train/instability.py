"""The instability monitor of a training run: loss spikes, non-finite values, divergence and
gradient-norm explosions, flagged as they happen.

Library module (no command): the training loop feeds StabilityMonitor.update(step, loss, grad_norm) each
logged step and writes every returned event as a metrics.jsonl line {"event": ..., "step": ..., ...};
lorafull.analysis.instability reads them back (or recomputes them for a metrics.jsonl written without). He 2024 saw
LoRA and adapters at high learning rates spike and diverge where full fine-tuning does not: the
report counts these events per run.

Running medians (not means) are the reference: one spike barely moves a median, so the next spike
is still measured against the healthy level.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Optional

EVENTS = ("loss_spike", "nonfinite", "grad_explosion", "divergence")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


class StabilityMonitor:
    """Flags instability from logged (step, loss, grad_norm) values.

    - nonfinite:      loss or grad_norm is NaN/inf.
    - loss_spike:     loss > spike_factor x median of the last `window` finite losses.
    - grad_explosion: grad_norm > grad_factor (default spike_factor) x median of the last `window` norms.
    - divergence:     the smoothed loss (median of the last `window`) stays above divergence_factor x
                      its lowest value so far for `patience` updates (default window): reported once,
                      again only after it recovered.
    The first `min_history` updates only fill the windows (early losses fall fast; nothing to compare).
    """

    def __init__(self, spike_factor: float = 3.0, window: int = 20, grad_factor: Optional[float] = None,
                 divergence_factor: float = 1.5, patience: Optional[int] = None, min_history: int = 5):
        self.spike_factor = spike_factor
        self.grad_factor = grad_factor if grad_factor is not None else spike_factor
        self.divergence_factor = divergence_factor
        self.patience = patience if patience is not None else window
        self.min_history = min_history
        self.losses: deque[float] = deque(maxlen=window)
        self.grad_norms: deque[float] = deque(maxlen=window)
        self.best_smoothed = math.inf
        self.rising_for = 0
        self.diverged = False

    def update(self, step: int, loss, grad_norm=None) -> list[dict]:
        events: list[dict] = []
        loss_ok, grad_ok = _finite(loss), grad_norm is None or _finite(grad_norm)
        if not loss_ok or not grad_ok:
            events.append({"event": "nonfinite", "step": step, "loss": _json_number(loss),
                           "grad_norm": _json_number(grad_norm)})
        if loss_ok:
            events += self._check_loss(step, float(loss))
        if grad_norm is not None and _finite(grad_norm):
            events += self._check_grad(step, float(grad_norm))
        return events

    def _check_loss(self, step: int, loss: float) -> list[dict]:
        events = []
        median = self._exceeded_median(self.losses, loss, self.spike_factor)
        if median is not None:
            events.append({"event": "loss_spike", "step": step, "loss": loss, "median": median,
                           "ratio": loss / median})
        self.losses.append(loss)
        if len(self.losses) >= self.min_history:
            smoothed = statistics.median(self.losses)
            self.best_smoothed = min(self.best_smoothed, smoothed)
            if self.best_smoothed > 0 and smoothed > self.divergence_factor * self.best_smoothed:
                self.rising_for += 1
                if self.rising_for >= self.patience and not self.diverged:
                    self.diverged = True
                    events.append({"event": "divergence", "step": step, "smoothed_loss": smoothed,
                                   "best_smoothed_loss": self.best_smoothed, "ratio": smoothed / self.best_smoothed})
            else:
                self.rising_for = 0
                self.diverged = False
        return events

    def _check_grad(self, step: int, grad_norm: float) -> list[dict]:
        events = []
        median = self._exceeded_median(self.grad_norms, grad_norm, self.grad_factor)
        if median is not None:
            events.append({"event": "grad_explosion", "step": step, "grad_norm": grad_norm, "median": median,
                           "ratio": grad_norm / median})
        self.grad_norms.append(grad_norm)
        return events

    def _exceeded_median(self, history, value: float, factor: float):
        """The running median when `value` exceeds factor x it (with enough history), else None."""
        if len(history) < self.min_history:
            return None
        median = statistics.median(history)
        return median if median > 0 and value > factor * median else None


def _json_number(x):
    """NaN/inf are not JSON: keep them readable as strings ("nan", "inf")."""
    if x is None or _finite(x):
        return x
    return str(x)
