"""Confidence intervals for every score the project shows, and the paired differences every comparison
states: one procedure, used by the judge summary, the analysis tasks, the report and the trade-off.

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
  differences, so the items both sides share are resampled together;
- quantities compared with each other (two rows of the report, the points of two trade-off curves) are
  bootstrapped JOINTLY (joint_replicates): one item resample per stratum, applied to every quantity,
  on the items all of them scored; and one seed resample shared by all when they were trained on the
  same seeds (seed k of one against seed k of the other), else each quantity's own seed resample.
  A difference is then "within noise" when its paired 95 % interval contains 0; its effect size is
  Cohen's d_z: the mean of the per-item differences (each item's mean over seeds, classes pooled)
  over their standard deviation.

Item scores of a stratum come as a list (keyed by position) or as a mapping {item id: score}; the ids
are what pairs two runs' items. None marks an unscored item: it is left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
RNG_SEED = 20240515
PROCEDURE = (f"percentile bootstrap, {RESAMPLES} resamples, {CONFIDENCE:.0%}, items resampled within each "
             f"class or task; seeds resampled too when a row has several; RNG seed {RNG_SEED}")
PAIRED_PROCEDURE = ("the items both sides scored resampled together, and the seeds together where both were "
                    "trained on the same seeds; within noise: the paired 95 % interval contains 0; d_z: the mean "
                    "per-item difference over its standard deviation")

Items = Union[Sequence[Optional[float]], Mapping[Any, Optional[float]]]
Strata = Mapping[str, Items]  # stratum (class, task) -> item scores
Seeded = Sequence[tuple[Any, Strata]]  # one quantity: (training seed, strata) per run it pools


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


class Difference(Estimate):
    """A paired difference a - b with its bootstrap interval, its effect size (d_z), how many items it
    pairs (summed over strata) and whether the seeds were paired too."""

    effect_size: Optional[float]
    items: int
    paired_seeds: bool

    @property
    def within_noise(self) -> bool:
        """The paired interval contains 0 (without an interval: the difference is exactly 0)."""
        if self.low is None or self.high is None:
            return float(self) == 0.0
        return self.low <= 0.0 <= self.high

    def as_dict(self) -> dict:
        return {**super().as_dict(), "effect_size": self.effect_size, "items": self.items,
                "paired_seeds": self.paired_seeds, "within_noise": self.within_noise}

    def interval_text(self, digits: int = 3) -> str:
        return f"95 % CI {self.low:.{digits}f} to {self.high:.{digits}f}" if self.low is not None else "no interval"


def percentile_interval(replicates: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates: with B sorted replicates and tail = (1 - confidence) / 2,
    low = the replicate at rank floor(tail * B), high = the one at rank ceil((1 - tail) * B) - 1 (0-based)."""
    r = np.sort(np.asarray(replicates, dtype=float))
    b = len(r)
    tail = (1.0 - confidence) / 2
    lo = int(np.floor(tail * b))
    hi = int(np.ceil((1.0 - tail) * b)) - 1
    return float(r[min(lo, b - 1)]), float(r[max(min(hi, b - 1), 0)])


def keyed(values: Items) -> dict:
    """A stratum's scored items as {item key: score}: a mapping keeps its ids, a list is keyed by position;
    unscored items (None) are dropped. Insertion order is kept (it fixes which draw hits which item)."""
    pairs = values.items() if isinstance(values, Mapping) else enumerate(values)
    return {k: float(v) for k, v in pairs if v is not None}


def _clean(strata: Strata) -> dict[str, dict]:
    """Strata with their unscored items dropped; empty strata dropped (as the macro average does)."""
    out = {}
    for name, values in (strata or {}).items():
        kept = keyed(values or [])
        if kept:
            out[name] = kept
    return out


def macro_mean(strata: Strata) -> Optional[float]:
    clean = _clean(strata)
    return float(np.mean([np.mean(list(v.values())) for v in clean.values()])) if clean else None


@dataclass
class Joint:
    """Quantities bootstrapped together: points[q] is quantity q's estimate, replicates[:, q] its
    resampled values (the same item and seed draws for every q); items = paired items per stratum."""

    points: np.ndarray
    replicates: np.ndarray
    items: dict
    seeds: int
    paired_seeds: bool


def _seed_lists(sides: Sequence[Seeded]) -> list[list[tuple[Any, dict]]]:
    """Each side's seeds with their cleaned strata, seeds with no scored item dropped, ordered by seed
    (positions line up between sides trained on the same seeds)."""
    out = []
    for side in sides:
        kept = [(seed, _clean(strata)) for seed, strata in side]
        kept = [(seed, st) for seed, st in kept if st]
        if len({str(s) for s, _ in kept}) == len(kept):  # distinct labels: order them; else keep as given
            kept.sort(key=lambda x: (0, x[0], "") if isinstance(x[0], int) else (1, 0, str(x[0])))
        out.append(kept)
    return out


def _item_level(seeded, rng, resamples: int):
    """Per side and seed position: (point macro mean, replicates); one index draw per (position, stratum)
    shared by every side holding that stratum there, over the items all of them scored."""
    k_max = max(len(s) for s in seeded)
    points = [[0.0] * len(s) for s in seeded]
    reps = [[np.zeros(resamples) for _ in s] for s in seeded]
    counts = [[0] * len(s) for s in seeded]
    items: dict[str, int] = {}
    for k in range(k_max):
        holders_of: dict[str, list[int]] = {}
        for q, side in enumerate(seeded):
            for name in side[k][1] if k < len(side) else ():
                holders_of.setdefault(name, []).append(q)
        for name in sorted(holders_of):  # a fixed order: the same draws for the same data
            holders = holders_of[name]
            first = seeded[holders[0]][k][1][name]
            ids = [i for i in first if all(i in seeded[q][k][1][name] for q in holders[1:])]
            if not ids:
                continue
            items.setdefault(name, len(ids))
            idx = rng.integers(0, len(ids), size=(resamples, len(ids)))
            for q in holders:
                values = np.array([seeded[q][k][1][name][i] for i in ids])
                reps[q][k] += values[idx].mean(axis=1)
                points[q][k] += float(values.mean())
                counts[q][k] += 1
    return points, reps, counts, items


def joint_replicates(sides: Sequence[Seeded], resamples: int = RESAMPLES, seed: int = RNG_SEED) -> Optional[Joint]:
    """Bootstrap several quantities together (module docstring); None when some side has no scored item."""
    rng = np.random.default_rng(seed)
    seeded = _seed_lists(sides)
    if not seeded or any(not s for s in seeded):
        return None
    points, reps, counts, items = _item_level(seeded, rng, resamples)
    macro_pts, macro_reps = [], []
    for q in range(len(seeded)):
        kept = [k for k in range(len(seeded[q])) if counts[q][k]]
        if not kept:
            return None
        macro_pts.append([points[q][k] / counts[q][k] for k in kept])
        macro_reps.append(np.stack([reps[q][k] / counts[q][k] for k in kept]))
    labels = [[str(seeded[q][k][0]) for k in range(len(seeded[q])) if counts[q][k]] for q in range(len(seeded))]
    paired = len(seeded) > 1 and all(lab == labels[0] for lab in labels)
    n_shared = len(labels[0])
    shared = rng.integers(0, n_shared, size=(resamples, n_shared)) if paired and n_shared > 1 else None
    out = np.empty((resamples, len(seeded)))
    for q, stacked in enumerate(macro_reps):
        n = stacked.shape[0]
        pick = shared if shared is not None else (rng.integers(0, n, size=(resamples, n)) if n > 1 else None)
        out[:, q] = stacked[0] if pick is None else stacked[pick, np.arange(resamples)[:, None]].mean(axis=1)
    return Joint(np.array([float(np.mean(p)) for p in macro_pts]), out, items,
                 max(len(lab) for lab in labels), paired)


def estimate(per_seed: Sequence[Strata], resamples: int = RESAMPLES, seed: int = RNG_SEED,
             confidence: float = CONFIDENCE) -> Optional[Estimate]:
    """Mean over seeds of each seed's macro average, with its bootstrap interval (module docstring);
    None when no seed has a scored item."""
    side = [(k, strata) for k, strata in enumerate(per_seed) if _clean(strata)]
    joint = joint_replicates([side], resamples, seed) if side else None
    if joint is None:
        return None
    low, high = percentile_interval(joint.replicates[:, 0], confidence)
    return Estimate(float(joint.points[0]), low, high, seeds=joint.seeds)


def effect_size(a: Seeded, b: Seeded) -> Optional[float]:
    """Cohen's d_z of a - b: per item (in each stratum, the items every seed of both sides scored), the
    mean over a's seeds minus the mean over b's; then mean / standard deviation (ddof 1) over all items.
    None with fewer than two items or no spread."""
    cleaned = [[_clean(st) for _, st in side] for side in (a, b)]
    if not all(cleaned):
        return None
    diffs = []
    for name in set.intersection(*(set(st) for side in cleaned for st in side)):
        ids = [i for i in cleaned[0][0][name] if all(i in st[name] for side in cleaned for st in side)]
        for i in ids:
            diffs.append(np.mean([st[name][i] for st in cleaned[0]]) - np.mean([st[name][i] for st in cleaned[1]]))
    d = np.array(diffs)
    if d.size < 2 or float(d.std(ddof=1)) == 0.0:
        return None
    return float(d.mean() / d.std(ddof=1))


def paired_difference(a: Seeded, b: Seeded, resamples: int = RESAMPLES, seed: int = RNG_SEED,
                      confidence: float = CONFIDENCE) -> Optional[Difference]:
    """a - b, bootstrapped jointly (module docstring): the mean over seeds of each side's macro average on
    the items both scored, its paired percentile interval and its effect size; None without shared items."""
    joint = joint_replicates([a, b], resamples, seed)
    if joint is None:
        return None
    low, high = percentile_interval(joint.replicates[:, 0] - joint.replicates[:, 1], confidence)
    out = Difference(float(joint.points[0] - joint.points[1]), low, high, seeds=joint.seeds)
    out.effect_size, out.items, out.paired_seeds = effect_size(a, b), sum(joint.items.values()), joint.paired_seeds
    return out


def paired_differences(run: Sequence[Optional[float]], base: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Per-item run - base; an item either side left unscored is None (dropped from the resample)."""
    if len(run) != len(base):
        raise ValueError(f"paired scores: {len(run)} run items against {len(base)} base items")
    return [None if r is None or b is None else float(r) - float(b) for r, b in zip(run, base)]
