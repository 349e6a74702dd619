"""Confidence intervals for every score the project shows: one procedure, used by the judge summary,
the analysis tasks and the report.

Library module (no command). The procedure, stated once:

- percentile bootstrap, RESAMPLES = 2,000 resamples, 95 % (the 2.5th and 97.5th percentiles of the
  resampled statistic), numpy's default_rng(RNG_SEED) with a fixed RNG_SEED, so the same scores give
  the same interval on any machine;
- a score is a macro average: the mean over strata (eval classes, or analysis tasks) of the mean
  item score in each stratum. Items are resampled within their stratum (a stratified bootstrap), so
  every resample keeps every class, as the eval set does;
- with several seeds, a two-level bootstrap: each resample draws the seeds with replacement and,
  for each drawn seed, that seed's own item resample; the statistic is the mean over the drawn seeds.
  The interval then covers both the eval items and the training seed;
- a paired difference (learning = run - base on the same items) is bootstrapped as the per-item
  differences, so the items both sides share are resampled together.

The report shows an estimate as `mean ± half-width` with half-width = (high - low) / 2, and calls two
estimates `within noise` when their intervals overlap.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
RNG_SEED = 20240515
PROCEDURE = (f"percentile bootstrap, {RESAMPLES} resamples, {CONFIDENCE:.0%}, items resampled within each "
             f"class or task; seeds resampled too when a row has several; RNG seed {RNG_SEED}")

Strata = Mapping[str, Sequence[float]]  # stratum (class, task) -> item scores


class Estimate(float):
    """A mean with its confidence interval. A float, so code that only wants the number keeps working;
    `low`, `high` and `half_width` carry the interval (None when there is nothing to resample)."""

    low: Optional[float]
    high: Optional[float]
    seeds: int

    def __new__(cls, mean: float, low: Optional[float] = None, high: Optional[float] = None, seeds: int = 1):
        self = super().__new__(cls, mean)
        self.low, self.high, self.seeds = low, high, seeds
        return self

    @property
    def half_width(self) -> Optional[float]:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def as_dict(self) -> dict:
        return {"mean": float(self), "low": self.low, "high": self.high, "seeds": self.seeds}

    def text(self, digits: int = 2) -> str:
        hw = self.half_width
        return f"{float(self):.{digits}f}" if hw is None else f"{float(self):.{digits}f} ± {hw:.{digits}f}"


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates: with B sorted replicates and tail = (1 - confidence) / 2,
    low = the replicate at rank floor(tail * B), high = the one at rank ceil((1 - tail) * B) - 1 (0-based)."""
    r = np.sort(np.asarray(replicates, dtype=float))
    b = len(r)
    tail = (1.0 - confidence) / 2
    lo = int(np.floor(tail * b))
    hi = int(np.ceil((1.0 - tail) * b)) - 1
    return float(r[min(lo, b - 1)]), float(r[max(min(hi, b - 1), 0)])


def _clean(strata: Strata) -> dict[str, np.ndarray]:
    """Strata with their unscored items (None) dropped; empty strata dropped (as the macro average does)."""
    out = {}
    for name, values in strata.items():
        kept = np.array([float(v) for v in values if v is not None], dtype=float)
        if kept.size:
            out[name] = kept
    return out


def macro_mean(strata: Strata) -> Optional[float]:
    clean = _clean(strata)
    return float(np.mean([v.mean() for v in clean.values()])) if clean else None


def macro_replicates(strata: Strata, rng: np.random.Generator, resamples: int = RESAMPLES) -> Optional[np.ndarray]:
    """`resamples` bootstrap replicates of the macro average, items resampled within each stratum."""
    clean = _clean(strata)
    if not clean:
        return None
    total = np.zeros(resamples)
    for name in sorted(clean):  # a fixed stratum order: the same draws for the same data
        values = clean[name]
        idx = rng.integers(0, values.size, size=(resamples, values.size))
        total += values[idx].mean(axis=1)
    return total / len(clean)


def estimate(per_seed: Sequence[Strata], resamples: int = RESAMPLES, seed: int = RNG_SEED,
             confidence: float = CONFIDENCE) -> Optional[Estimate]:
    """Mean over seeds of each seed's macro average, with its bootstrap interval (module docstring);
    None when no seed has a scored item."""
    rng = np.random.default_rng(seed)
    reps = [r for r in (macro_replicates(s, rng, resamples) for s in per_seed) if r is not None]
    if not reps:
        return None
    means = [m for m in (macro_mean(s) for s in per_seed) if m is not None]
    stacked = np.stack(reps)  # seeds x resamples
    if len(reps) > 1:  # second level: which seeds each resample sees
        pick = rng.integers(0, len(reps), size=(resamples, len(reps)))
        replicates = stacked[pick, np.arange(resamples)[:, None]].mean(axis=1)
    else:
        replicates = stacked[0]
    low, high = percentile_interval(replicates, confidence)
    return Estimate(float(np.mean(means)), low, high, seeds=len(reps))


def paired_differences(run: Sequence[Optional[float]], base: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Per-item run - base; an item either side left unscored is None (dropped from the resample)."""
    if len(run) != len(base):
        raise ValueError(f"paired scores: {len(run)} run items against {len(base)} base items")
    return [None if r is None or b is None else float(r) - float(b) for r, b in zip(run, base)]


def overlap(a: Estimate, b: Estimate) -> bool:
    """Whether two intervals share a point (closed intervals); without an interval, only the means count."""
    if a.low is None or b.low is None:
        return float(a) == float(b)
    return a.low <= b.high and b.low <= a.high


def order(a: float, b: float) -> str:
    """'>', '<' or '=' by the means (what a comparison states before its noise mark)."""
    return ">" if float(a) > float(b) else "<" if float(a) < float(b) else "="
