"""Which samples each rank reads at each optimizer step, and the seeding of every RNG.

The order is a pure function of (seed, step): a resumed job continues mid-epoch exactly where its
checkpoint was with no sampler state to save, and the global batch of a step is the same whatever
the number of processes (each rank reads its share of it).
"""
from __future__ import annotations

import random

import numpy as np
import torch


class BatchOrder:
    """Which samples each rank reads at each optimizer step: a pure function of (seed, step), so a
    resumed job continues mid-epoch exactly where the checkpoint was, with no sampler state to save.
    Epoch e is a permutation seeded by seed + e; its last partial global batch is dropped.

    group_by_length: each global batch is sorted by length (stable) before it is cut into micro batches,
    so a micro batch holds samples of similar length and pads less. A step still trains on the same
    samples; only the loss weighting changes (each micro batch's loss is a mean over its own tokens)."""

    def __init__(self, lengths: np.ndarray, global_batch: int, micro_batch: int, world: int, rank: int, seed: int,
                 group_by_length: bool = False):
        self.lengths, self.n = lengths, len(lengths)
        self.global_batch, self.micro_batch, self.seed = global_batch, micro_batch, seed
        self.world, self.rank, self.group_by_length = world, rank, group_by_length
        self.steps_per_epoch = self.n // global_batch
        self._perm_epoch, self._perm = -1, None

    def global_indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = np.random.default_rng(self.seed + epoch).permutation(self.n), epoch
        idx = self._perm[pos * self.global_batch:(pos + 1) * self.global_batch]
        if self.group_by_length:
            idx = idx[np.argsort(self.lengths[idx], kind="stable")]
        return idx

    def _micro_batches_of(self, idx: np.ndarray, rank: int) -> list[np.ndarray]:
        per_round = self.micro_batch * self.world
        return [idx[a * per_round + rank * self.micro_batch:a * per_round + (rank + 1) * self.micro_batch]
                for a in range(len(idx) // per_round)]

    def micro_batches(self, step: int) -> list[np.ndarray]:
        return self._micro_batches_of(self.global_indices(step), self.rank)

    def tokens(self, step: int) -> int:
        """Tokens of the whole global batch (all ranks): known everywhere without communication."""
        return int(self.lengths[self.global_indices(step)].sum())

    def padding_fraction(self, step: int) -> float:
        """Share of the padded token slots of the step's micro batches (all ranks) that are padding:
        collate pads each micro batch to its longest sample."""
        idx = self.global_indices(step)
        slots = 0
        for rank in range(self.world):
            for mb in self._micro_batches_of(idx, rank):
                slots += int(self.lengths[mb].max()) * len(mb)
        return 1.0 - self.tokens(step) / slots if slots else 0.0


def steps_to_reach(order: BatchOrder, token_counts: list[int], limit: int) -> list[int]:
    """For each token count, the number of optimizer steps after which the tokens seen first reach it
    (a token budget of continued pretraining, or a checkpoint "at 1B tokens"); None past `limit` steps.
    The order is fixed by the seed, so this is known before training, for the schedule's length."""
    targets = sorted(set(int(t) for t in token_counts))
    found: dict[int, int] = {}
    seen, step = 0, 0
    while len(found) < len(targets) and step < limit:
        seen += order.tokens(step)
        step += 1
        for t in targets:
            if t not in found and seen >= t:
                found[t] = step
    return [found.get(int(t)) for t in token_counts]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
