"""Paired comparisons: the paired bootstrap against a hand computation and scipy, seeds paired seed by seed,
a difference whose two intervals overlap reported as a finding, and forgetting at matched learning (the
trade-off's interpolation and its joint bootstrap) against a hand computation."""
from __future__ import annotations

import numpy as np
import pytest

from lorafull.analysis.tradeoff import interpolate, matched_items, matched_levels, tradeoff
from lorafull.report.groups import comparisons, group_rows
from lorafull.stats import estimate, paired_difference


def test_paired_difference_by_hand():
    # per-item differences [1, 0, 0]: a resample's mean is k/3, k ~ Binomial(3, 1/3): P(k=0) = 8/27 > 2.5 %,
    # P(k=3) = 1/27 = 3.7 % > 2.5 % -> the 95 % interval is [0, 1] around 1/3. d_z = (1/3) / sd([1, 0, 0]) =
    # (1/3) / sqrt(1/3) = 0.577. Item ids pair the sides, whatever order each lists them in.
    diff = paired_difference([(1, {"c": {"x": 1.0, "y": 1.0, "z": 0.0}})],
                             [(1, {"c": {"z": 0.0, "y": 1.0, "x": 0.0}})])
    assert float(diff) == pytest.approx(1 / 3) and (diff.low, diff.high) == (0.0, pytest.approx(1.0))
    assert diff.effect_size == pytest.approx(1 / 3 / np.sqrt(1 / 3)) and diff.items == 3
    assert diff.within_noise  # 8 resamples in 27 draw no differing item: the interval reaches 0
    # an item one side left unscored (None) or lacks is not paired: only x and y count -> differences [1, 0]
    part = paired_difference([(1, {"c": {"x": 1.0, "y": 1.0, "z": None}})], [(1, {"c": {"x": 0.0, "y": 1.0}})])
    assert float(part) == pytest.approx(0.5) and part.items == 2


def test_paired_interval_matches_scipys_paired_percentile_bootstrap():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(11)
    a = rng.binomial(1, 0.6, size=150).astype(float)
    b = np.where(rng.random(150) < 0.8, a, 1 - a)  # b agrees with a on most items: pairing matters
    ours = paired_difference([(1, {"c": list(a)})], [(1, {"c": list(b)})], resamples=20000)
    ref = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis), paired=True,
                          vectorized=True, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    # two random resamplings of the same distribution: the bounds agree to about a resolution step (1/150)
    assert ours.low == pytest.approx(ref.low, abs=0.01) and ours.high == pytest.approx(ref.high, abs=0.01)
    unpaired = estimate([{"c": list(a)}]).half_width + estimate([{"c": list(b)}]).half_width
    assert (ours.high - ours.low) / 2 < unpaired  # pairing removes what both sides share


def test_seeds_are_paired_seed_by_seed_when_both_sides_have_them():
    # each seed of a is its seed of b + 0.25 on every item, and the seeds differ a lot: paired, the
    # difference is 0.25 in every resample; with the seeds unmatched (other seed numbers), the seed draw
    # alone moves it from -0.25 to +0.75 and the interval contains 0
    a = [(1, {"c": [1.0] * 4}), (2, {"c": [0.5] * 4})]
    b = [(1, {"c": [0.75] * 4}), (2, {"c": [0.25] * 4})]
    paired = paired_difference(a, b)
    assert (float(paired), paired.low, paired.high) == (0.25, 0.25, 0.25) and paired.paired_seeds
    unpaired = paired_difference(a, [(3, b[0][1]), (4, b[1][1])])
    assert float(unpaired) == 0.25 and not unpaired.paired_seeds and unpaired.within_noise


def _row(run: str, kind: str, items: list[float]) -> dict:
    return {"run": run, "_group": None, "_seed": 1, "_samples": {"score": {"qa": dict(enumerate(items))}},
            "_setting": {"method.kind": kind, "method.r": 8 if kind == "lora" else None, "data.n": 1}}


def test_overlapping_intervals_with_a_paired_difference_that_excludes_0_are_a_finding():
    # lora answers 8 of 40 items wrong that full answers right and agrees on the rest: the two 95 %
    # intervals overlap, but every item moves the same way, so the paired interval excludes 0
    rng = np.random.default_rng(3)
    lora = list(rng.binomial(1, 0.5, size=40).astype(float))
    full = list(lora)
    for i in [i for i, v in enumerate(lora) if v == 0.0][:8]:
        full[i] = 1.0
    rows = group_rows([_row("full", "full", full), _row("lora", "lora", lora)])
    a, b = rows[0]["score"], rows[1]["score"]
    assert a.low <= b.high and b.low <= a.high  # the old overlap rule would call it "within noise"
    [item] = comparisons(rows)
    assert item["finding"] and item["difference"]["low"] > 0 and "within noise" not in item["text"]
    assert item["text"].startswith("`full` vs `lora` (method: full / lora r=8): score ")
    assert "difference +0.200 (95 % CI " in item["text"] and "paired over 40 items" in item["text"]
    # the same scores on both sides: within noise; two quantities both exactly 0: no comparison at all
    [same] = comparisons(group_rows([_row("full", "full", lora), _row("lora", "lora", lora)]))
    assert not same["finding"] and same["text"].endswith("within noise (the paired interval contains 0)")
    assert comparisons(group_rows([_row("full", "full", [0.0] * 5), _row("lora", "lora", [0.0] * 5)])) == []


def test_interpolation_along_a_curve_by_hand():
    xs, ys = [0.5, 0.1, 0.3], [0.4, 0.0, 0.1]  # in order of learning: (0.1, 0.0), (0.3, 0.1), (0.5, 0.4)
    assert interpolate(0.2, xs, ys)[0] == pytest.approx(0.05)
    assert interpolate(0.45, xs, ys)[0] == pytest.approx(0.1 + 0.75 * 0.3)
    assert interpolate(0.0, xs, ys)[0] == 0.0 and interpolate(0.9, xs, ys)[0] == 0.4  # clamped at the ends
    assert list(interpolate(0.2, np.array([xs, [0.1, 0.2, 0.3]]), np.array([ys, [1.0, 2.0, 3.0]]))) == \
        pytest.approx([0.05, 2.0])  # one row per resample


def _point_row(run: str, kind: str, learning: float, forgetting: list[float]) -> dict:
    """A pooled row of one seed: learning identical on its 3 target items, forgetting per source item."""
    return {"run": run, "method": "full" if kind == "full" else "lora r=8", "_seed": 1,
            "_setting": {"method.kind": kind, "train.epochs": run[-1], "model.name_or_path": "base"},
            "_samples": {"learning": {"t": dict(enumerate([learning] * 3))},
                         "forgetting": {"s": dict(enumerate(forgetting))}}}


def test_forgetting_at_matched_learning_by_hand():
    # full: (learning 0, forgetting 0), (0.5, items [0.25, 0.75]); lora: (0.25, 0.1875), (0.75, [0.125, 0.375]).
    # Both cover learning 0.25 to 0.5; the levels are the points' learning values there: 0.25 and 0.5.
    rows = [_point_row("full1", "full", 0.0, [0.0, 0.0]), _point_row("full2", "full", 0.5, [0.25, 0.75]),
            _point_row("lora1", "lora", 0.25, [0.1875, 0.1875]), _point_row("lora2", "lora", 0.75, [0.125, 0.375])]
    body = tradeoff(rows, swept=[])
    full, lora = body["curves"]
    assert (full["name"], lora["name"]) == ("full", "lora r=8")
    assert [p["run"] for p in full["points"]] == ["full1", "full2"] and full["pareto_front"] == ["full1", "full2"]
    assert matched_levels(full["points"], lora["points"]) == [0.25, 0.5]
    low, high = body["matched_learning"]
    # at 0.25: full = 0.5 * f(full2), lora = 0.1875. Items are drawn jointly for every run: f(full2) is 0.25,
    # 0.5, 0.75 (1/4, 1/2, 1/4) -> difference -0.0625, 0.0625, 0.1875: within noise
    assert low["learning"] == 0.25 and low["forgetting"] == pytest.approx([0.25, 0.1875])
    assert low["difference"] == pytest.approx(0.0625) and low["interval"] == pytest.approx([-0.0625, 0.1875])
    # at 0.5: full = f(full2), lora = (0.1875 + f(lora2)) / 2; the same draw picks the same item in both:
    # (0.25, 0.125) -> 0.09375, mixed (0.5, 0.25) -> 0.28125, (0.75, 0.375) -> 0.46875. Unpaired draws would
    # also give 0.25 - (0.1875 + 0.375) / 2 = -0.03125 (1/16 > 2.5 %): the pairing makes it a finding
    assert high["forgetting"] == pytest.approx([0.5, 0.21875]) and high["difference"] == pytest.approx(0.28125)
    assert high["interval"] == pytest.approx([0.09375, 0.46875]) and not high["within_noise"]
    texts = [m["text"] for m in matched_items(body)]
    assert texts == ["at learning 0.50, `lora r=8` forgets 0.281 less than `full` (95 % CI 0.094 to 0.469)",
                     "`full` vs `lora r=8`: within noise at the other 1 matched learning level(s) (learning 0.25 "
                     "to 0.25: forgetting differences +0.062 to +0.062, every 95 % CI contains 0)"]
