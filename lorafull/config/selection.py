"""The study's `select` section: which settings a study sweeps, and how the report picks the best run of
each sweep (lorafull.analysis.selection applies it).

Library module (no command): lorafull.config re-exports SelectConfig.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

from lorafull.config.typed import ranged

SelectMetric = Literal["learning", "score", "val_loss"]
RUN_SECTIONS = ("model", "method", "data", "train", "eval")


@dataclass
class SelectConfig:
    # the swept settings, dotted (e.g. [train.lr]): of each group of runs that differ only in them, the
    # report keeps the best run, and the comparisons and the trade-off use only the kept runs;
    # [] = no selection (every run is used)
    keys: list[str] = field(default_factory=list)
    # what "best" is: learning (mean target-task gain over the base; the default), score (the eval set's
    # macro average), both highest wins; or val_loss (the target tasks' reference answers' mean loss per
    # token, lorafull.analysis.tasks.reference_losses), lowest wins. Means over the group's seeds, on the
    # held-out items
    metric: SelectMetric = "learning"
    # the settings that make a group; null = every setting but the swept keys (and the seed)
    group_by: Optional[list[str]] = None
    # fraction of the eval items (per class) and of each target task's items held out for the selection,
    # drawn by `seed`; every number the report shows uses the other items. 0 = select on the reported
    # items themselves (optimistic: the report says so)
    holdout: float = ranged(0.3, ge=0, lt=1)
    seed: int = ranged(0, ge=0)

    def problems(self, run_fields) -> list[tuple[str, str]]:
        """(key, why) for swept or grouping keys that name no run setting; run_fields: RunConfig."""
        out = []
        for group in ("keys", "group_by"):
            for i, dotted in enumerate(getattr(self, group) or []):
                if not _names_a_setting(run_fields, dotted):
                    out.append((f"select.{group}[{i}]", f"{dotted!r} names no run setting (e.g. train.lr, "
                                                        f"method.r; sections {', '.join(RUN_SECTIONS)})"))
        both = sorted(set(self.keys) & set(self.group_by or []))
        if both:
            out.append(("select.group_by", f"{', '.join(both)} is swept (select.keys): it cannot also group"))
        return out


def _names_a_setting(cls, dotted: str) -> bool:
    """Whether `dotted` (e.g. train.lr, base.method.r) walks the run's sections down to one of its keys."""
    parts = dotted.removeprefix("base.").split(".")
    if len(parts) < 2 or parts[0] not in RUN_SECTIONS:
        return False
    for part in parts:
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        cls = typing.get_type_hints(cls)[part]  # the field's class (annotations are strings here)
    return True
