"""The package's dependency rules, checked on the source (AST), and its size limits.

The rules (README, "Code layout"): lorafull's sub-packages form layers along the pipeline; a package
imports only from packages in lower layers, never from its own layer's peers or higher ones, and nothing
in lorafull imports launch. So training never imports the analyses or the report, and the report may read
the analyses' results but not the other way round.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.common import REPO

# lowest first; packages in one layer are peers and may not import each other
LAYERS = [
    {"_exports", "runs", "figures", "stats", "generated"},
    {"config"},
    {"models"},
    {"data"},
    {"plan"},  # the cost model: below training, which picks auto batch settings from it
    {"train", "generate", "judge", "demo", "smollm2"},
    {"analysis"},
    {"evaluate", "report"},
]
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top_unit(root: Path, path: Path) -> str:
    """lorafull/train/engine.py -> train; lorafull/runs.py -> runs."""
    return path.relative_to(root / "lorafull").parts[0].removesuffix(".py")


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def layer_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted((root / "lorafull").rglob("*.py")):
        unit = _top_unit(root, path)
        if unit == "__init__":
            continue
        for line, module in _imports(path):
            where = f"{path.relative_to(root)}:{line}"
            if module.startswith("."):
                bad.append(f"{where}: relative import {module} (use lorafull.<package>)")
                continue
            parts = module.split(".")
            if parts[0] == "launch":
                bad.append(f"{where}: imports launch")
            if parts[0] != "lorafull" or len(parts) < 2 or parts[1] == unit:
                continue
            if unit not in LAYER_OF or parts[1] not in LAYER_OF:
                bad.append(f"{where}: {unit} -> {parts[1]}: a package missing from LAYERS")
            elif LAYER_OF[parts[1]] >= LAYER_OF[unit]:
                bad.append(f"{where}: {unit} (layer {LAYER_OF[unit]}) imports {parts[1]} (layer {LAYER_OF[parts[1]]})")
    return bad


def test_packages_import_only_from_lower_layers():
    assert layer_violations(REPO) == []


def test_the_rule_check_catches_an_upward_import(tmp_path):
    # the check itself can fail: a training module that reaches into the report is named
    (tmp_path / "lorafull" / "train").mkdir(parents=True)
    (tmp_path / "lorafull" / "train" / "bad.py").write_text("from lorafull.report.build import build_report\n"
                                                            "import launch.grid\n")
    found = layer_violations(tmp_path)
    assert any("train (layer 5) imports report (layer 7)" in v for v in found)
    assert any("imports launch" in v for v in found)


@pytest.mark.parametrize("folder", ["lorafull", "launch"])
def test_no_module_over_400_lines_and_no_function_over_60(folder):
    too_long = []
    for path in sorted((REPO / folder).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > 400:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: "
                                f"{node.end_lineno - node.lineno + 1} lines")
    assert too_long == []
