"""Each package's public API (the lazy export table of its `__init__`) is importable as listed: every
name resolves in the module the table names.

    pytest tests/test_exports.py
"""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import lorafull


def _packages_with_tables() -> list[str]:
    out = []
    for info in pkgutil.iter_modules(lorafull.__path__, "lorafull."):
        if info.ispkg and "lazy_exports" in (importlib.util.find_spec(info.name).loader.get_source(info.name) or ""):
            out.append(info.name)
    return sorted(out)


def test_the_packages_with_export_tables_are_found():
    assert {"lorafull.config", "lorafull.data", "lorafull.judge", "lorafull.train", "lorafull.evaluate"} <= set(
        _packages_with_tables())


@pytest.mark.parametrize("package", _packages_with_tables())
def test_every_listed_name_imports(package):
    module = importlib.import_module(package)
    missing = []
    for name in module.__all__:
        try:
            getattr(module, name)
        except (AttributeError, ImportError) as e:
            missing.append(f"{package}.{name}: {type(e).__name__}: {e}")
    assert missing == []
