"""Instability events: an injected loss spike, a NaN, a divergence and a gradient-norm explosion are
flagged at their step; a healthy noisy loss curve raises nothing."""
from __future__ import annotations

import json
import math
import random

from lorafull.analysis.instability import scan_metrics, summarise
from lorafull.train.instability import StabilityMonitor
from lorafull.runs import JsonlWriter


def healthy_curve(n: int = 200, seed: int = 0) -> list[tuple[int, float, float]]:
    """A falling loss with 10% noise and a grad norm that settles after warm-up."""
    rng = random.Random(seed)
    return [(s, (1.0 + 2.0 * math.exp(-s / 40)) * (1 + rng.uniform(-0.1, 0.1)),
             (0.5 + 2.0 * math.exp(-s / 20)) * (1 + rng.uniform(-0.2, 0.2))) for s in range(1, n + 1)]


def feed(curve, **kw) -> list[dict]:
    mon = StabilityMonitor(**kw)
    return [e for step, loss, g in curve for e in mon.update(step, loss, g)]


def test_healthy_curve_raises_nothing():
    assert feed(healthy_curve()) == []
    assert summarise([])["unstable"] is False


def test_injected_spike_and_nan_are_flagged():
    curve = healthy_curve()
    curve[99] = (100, 12.0, curve[99][2])  # ~10x the running loss
    curve[149] = (150, float("nan"), float("nan"))
    events = feed(curve, spike_factor=3.0)
    kinds = {(e["event"], e["step"]) for e in events}
    assert ("loss_spike", 100) in kinds
    assert ("nonfinite", 150) in kinds
    assert len(events) == 2, events  # the spike does not spill over onto the next steps
    summary = summarise(events)
    assert summary["unstable"] and summary["loss_spike"] == 1 and summary["nonfinite"] == 1
    assert summary["first_step"] == 100
    assert json.dumps(events)  # NaN kept as a JSON-safe string
    spike = next(e for e in events if e["event"] == "loss_spike")
    assert spike["ratio"] > 3.0


def test_spike_below_the_factor_is_not_flagged():
    curve = healthy_curve()
    curve[99] = (100, 2.5 * curve[98][1], curve[99][2])
    assert not [e for e in feed(curve, spike_factor=3.0) if e["event"] == "loss_spike"]
    assert [e for e in feed(curve, spike_factor=2.0) if e["event"] == "loss_spike"]


def test_divergence_and_grad_explosion():
    curve = healthy_curve(100)
    # from step 101 the loss climbs steadily to 4x its level: a diverging run, no single spike
    curve += [(s, 1.0 * (1 + (s - 100) / 20), 0.6) for s in range(101, 181)]
    curve[50] = (51, curve[50][1], 40.0)  # one gradient-norm explosion
    events = feed(curve)
    div = [e for e in events if e["event"] == "divergence"]
    assert len(div) == 1 and 110 < div[0]["step"] <= 180  # reported once, after `patience` rising updates
    assert [e["step"] for e in events if e["event"] == "grad_explosion"] == [51]
    assert not [e for e in events if e["event"] == "loss_spike"]
    assert summarise(events)["unstable"]
    assert not summarise([e for e in events if e["event"] == "grad_explosion"])["unstable"]


def test_scan_metrics_recomputes_or_reads_recorded_events(tmp_path):
    curve = healthy_curve(120)
    curve[80] = (81, 15.0, curve[80][2])
    path = tmp_path / "metrics.jsonl"
    with JsonlWriter(path) as w:
        for step, loss, g in curve:
            w.write({"step": step, "epoch": 0.0, "loss": loss, "lr": 1e-4, "grad_norm": g})
        w.write({"step": 121, "loss": float("inf"), "grad_norm": 1.0})
        w.write({"summary": True, "wall_time_s": 1.0})
    events = scan_metrics(path)
    assert [(e["event"], e["step"]) for e in events] == [("loss_spike", 81), ("nonfinite", 121)]
    # a metrics file with recorded events: those are the run's events (the trainer saw every step)
    with JsonlWriter(path) as w:
        w.write({"event": "loss_spike", "step": 7, "loss": 9.0, "median": 1.0, "ratio": 9.0})
    assert [(e["event"], e["step"]) for e in scan_metrics(path)] == [("loss_spike", 7)]
    assert len(scan_metrics(path, recompute=True)) == 2
