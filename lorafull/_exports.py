"""Lazy re-exports for the sub-packages' `__init__` (PEP 562).

A package's `__init__` names its public API without importing it: `from lorafull.train import Trainer`
loads lorafull.train.trainer (and torch, DeepSpeed) only then, so a light module of the same package
(lorafull.train.distributed, used by the launcher) stays light.
"""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable, Callable, list[str]]:
    """names: public name -> submodule of `package` that defines it. Returns (__getattr__, __dir__, __all__)."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, sorted(names)
