"""Command-line overrides that would not reach a run: a `dotted.key=value` of base that a grid key, a run
entry or study.seeds sets again per run.

Library module (no command): lorafull.config.study calls check_overrides() while it expands the runs.
"""
from __future__ import annotations

import sys

from lorafull.config.typed import ConfigError


def check_overrides(cli: dict[str, str], points: list) -> None:
    """A command-line override of base that a grid key, a run entry or study.seeds sets again per run
    would be ignored there without a word: refused when every run sets it, warned about (one line on
    stderr) when some do."""
    for key, text in cli.items():
        if not key.startswith("base."):
            continue
        key = key[len("base."):]
        setters = {}
        for name, dotted, origins in points:
            for k in dotted:
                if k == key or k.startswith(key + ".") or key.startswith(k + "."):
                    origin = origins.get(k, k)
                    setters.setdefault("runs" if origin.startswith("runs[") else origin, []).append(name)
        if not setters:
            continue
        where = ", ".join(sorted(setters))
        hit = {n for names in setters.values() for n in names}
        what = (f"command line override {text!r}: {key} is set per run by {where}, so this value is ignored "
                f"for {len(hit)} of {len(points)} run(s)")
        if len(hit) == len(points):
            raise ConfigError(what + " (change it in the study file, or override the grid key itself)")
        print(f"warning: {what}: {', '.join(sorted(hit))}", file=sys.stderr)
