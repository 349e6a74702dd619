"""How far two judges agree on the same answers: the statistics of `python -m lorafull.judge.agree`.

Library module (no command). Every statistic is computed from the joint count table of the two
judges' scores (distinct values of judge A x distinct values of judge B, each cell the number of items
scored that way), so a bootstrap resample only re-counts the table:

- Spearman's rho: the Pearson correlation of the two judges' average ranks (ties share the mean of
  their ranks), as scipy.stats.spearmanr;
- Kendall's tau-b: (concordant - discordant pairs) / sqrt((pairs - pairs tied in A) (pairs - pairs tied in B)),
  as scipy.stats.kendalltau's default;
- mean absolute difference of the scores;
- Cohen's kappa (unweighted) on the scores binned as judge_summary.json bins them
  (lorafull.judge.summary.SCORE_BIN_EDGES: fifths of 0..1): (p_o - p_e) / (1 - p_e).

Intervals follow lorafull.stats' procedure: percentile bootstrap, 2,000 resamples, 95 %, items resampled
within their class (a stratified bootstrap), numpy's default_rng(lorafull.stats.RNG_SEED). A statistic
that is undefined (a judge gave every item one score: no variance) is None, and resamples where it is
undefined are left out of its interval.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from lorafull.judge.summary import SCORE_BIN_EDGES, SCORE_BIN_LABELS
from lorafull.stats import CONFIDENCE, RESAMPLES, RNG_SEED, percentile_interval

STATISTICS = ("spearman", "kendall", "mean_abs_diff", "kappa")


class JointTable:
    """The items' score pairs as indices into each judge's sorted distinct values."""

    def __init__(self, a: Sequence[float], b: Sequence[float]):
        self.a_values, self.a_index = np.unique(np.asarray(a, dtype=float), return_inverse=True)
        self.b_values, self.b_index = np.unique(np.asarray(b, dtype=float), return_inverse=True)
        self.cell = self.a_index * len(self.b_values) + self.b_index
        self.a_bins = np.searchsorted(SCORE_BIN_EDGES, self.a_values, side="right")
        self.b_bins = np.searchsorted(SCORE_BIN_EDGES, self.b_values, side="right")
        self.diff = np.abs(self.a_values[:, None] - self.b_values[None, :])

    def counts(self, weights: Optional[np.ndarray] = None) -> np.ndarray:
        """The joint table; weights = how often each item was drawn (a bootstrap resample)."""
        size = len(self.a_values) * len(self.b_values)
        flat = np.bincount(self.cell, weights=weights, minlength=size)
        return flat.reshape(len(self.a_values), len(self.b_values))

    def statistics(self, m: np.ndarray) -> dict[str, Optional[float]]:
        return {"spearman": _spearman(m), "kendall": _kendall_tau_b(m),
                "mean_abs_diff": float((m * self.diff).sum() / m.sum()), "kappa": self._kappa(m)}

    def _kappa(self, m: np.ndarray) -> Optional[float]:
        k = len(SCORE_BIN_LABELS)
        binned = np.zeros((k, k))
        np.add.at(binned, (self.a_bins[:, None], self.b_bins[None, :]), m)
        n = binned.sum()
        p_o = np.trace(binned) / n
        p_e = float((binned.sum(axis=1) * binned.sum(axis=0)).sum() / n ** 2)
        return None if math.isclose(p_e, 1.0) else float((p_o - p_e) / (1.0 - p_e))


def _average_ranks(margin: np.ndarray) -> np.ndarray:
    """The average rank of each distinct value, from how many items took each (ranks start at 1)."""
    before = np.cumsum(margin) - margin
    return before + (margin + 1.0) / 2.0


def _spearman(m: np.ndarray) -> Optional[float]:
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    ra, rb = _average_ranks(rows), _average_ranks(cols)
    n = m.sum()
    ma, mb = (rows * ra).sum() / n, (cols * rb).sum() / n
    cov = (m * np.outer(ra - ma, rb - mb)).sum()
    va, vb = (rows * (ra - ma) ** 2).sum(), (cols * (rb - mb) ** 2).sum()
    return None if va <= 0 or vb <= 0 else float(cov / math.sqrt(va * vb))


def _kendall_tau_b(m: np.ndarray) -> Optional[float]:
    n = m.sum()
    pairs = n * (n - 1) / 2
    rows, cols = m.sum(axis=1), m.sum(axis=0)
    tied_a, tied_b = (rows * (rows - 1) / 2).sum(), (cols * (cols - 1) / 2).sum()
    # items strictly below-left and below-right of each cell (greater A value, smaller / greater B value)
    below = np.cumsum(m[::-1], axis=0)[::-1]  # rows i.. summed
    below = np.vstack([below[1:], np.zeros((1, m.shape[1]))])  # rows > i
    right = np.cumsum(below[:, ::-1], axis=1)[:, ::-1]
    greater_b = np.hstack([right[:, 1:], np.zeros((m.shape[0], 1))])  # columns > j
    smaller_b = np.cumsum(below, axis=1) - below  # columns < j
    concordant, discordant = (m * greater_b).sum(), (m * smaller_b).sum()
    denominator = (pairs - tied_a) * (pairs - tied_b)
    return None if denominator <= 0 else float((concordant - discordant) / math.sqrt(denominator))


def _draws(classes: Sequence[str], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """resamples x items: how often each item is drawn when every class is resampled within itself."""
    classes = np.asarray(classes)
    weights = np.zeros((resamples, len(classes)))
    for name in sorted(set(classes.tolist())):  # a fixed class order: the same draws for the same data
        members = np.flatnonzero(classes == name)
        picks = members[rng.integers(0, len(members), size=(resamples, len(members)))]
        for r in range(resamples):
            weights[r] += np.bincount(picks[r], minlength=len(classes))
    return weights


def agreement(a: Sequence[float], b: Sequence[float], classes: Sequence[str], resamples: int = RESAMPLES,
              seed: int = RNG_SEED) -> dict:
    """{"items": n, statistic: {"value", "low", "high"} for each of STATISTICS} over paired item scores."""
    if not len(a):
        return {"items": 0, **{s: {"value": None, "low": None, "high": None} for s in STATISTICS}}
    table = JointTable(a, b)
    point = table.statistics(table.counts())
    replicates = {s: [] for s in STATISTICS}
    for w in _draws(classes, np.random.default_rng(seed), resamples):
        for name, value in table.statistics(table.counts(w)).items():
            if value is not None and math.isfinite(value):
                replicates[name].append(value)
    out: dict = {"items": len(a)}
    for name in STATISTICS:
        low, high = percentile_interval(np.array(replicates[name]), CONFIDENCE) if replicates[name] else (None, None)
        out[name] = {"value": point[name], "low": low, "high": high}
    return out


def same_order(a_means: dict[str, float], b_means: dict[str, float]) -> dict:
    """Whether two judges rank the runs alike: Kendall's tau-b over the runs' average scores, and the
    pairs of runs the judges order differently (a tie under one judge and not the other counts); None
    with fewer than two runs that both judges scored."""
    runs = sorted(set(a_means) & set(b_means))
    swapped = [f"{x} / {y}" for i, x in enumerate(runs) for y in runs[i + 1:]
               if np.sign(a_means[x] - a_means[y]) != np.sign(b_means[x] - b_means[y])]
    tau = _kendall_tau_b(JointTable([a_means[r] for r in runs], [b_means[r] for r in runs]).counts()) \
        if len(runs) > 1 else None
    return {"runs": len(runs), "same_order": (not swapped) if len(runs) > 1 else None, "kendall": tau,
            "swapped": swapped}
