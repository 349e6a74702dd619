"""The package's dependency rules, checked on the source (AST), and its size limits.

The rules (README, "Code layout"): lorafull's sub-packages form layers along the pipeline; a package
imports only from packages in lower layers, never from its own layer's peers or higher ones, and nothing
in lorafull imports launch. So training never imports the analyses or the report, and the report may read
the analyses' results but not the other way round. A run's status.json is written by lorafull.runs alone,
through its named transitions (queued, started, done, failed, ...).
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
    {"models", "tracking"},  # tracking: the experiment trackers training and the eval job both log to
    {"data"},
    {"plan"},  # the cost model: below training, which picks auto batch settings from it
    {"train", "generate", "judge", "examples"},
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


# calls that write a file; one whose arguments name status.json (or a RunPaths' .status) writes the status
_FILE_WRITERS = {"write_json_atomic", "write_text", "write_bytes", "open", "replace", "rename", "copy", "copyfile",
                 "copy2", "dump"}


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _names_status_file(call: ast.Call) -> bool:
    for node in ast.walk(call):
        if isinstance(node, ast.Constant) and node.value == "status.json":
            return True
        if isinstance(node, ast.Attribute) and node.attr == "status" and node is not call.func:
            return True
    return False


def status_writers(root: Path) -> list[str]:
    """Places outside lorafull/runs that write status.json: the old write_status(), the private writer,
    or a file write naming status.json."""
    bad = []
    files = [p for folder in ("lorafull", "launch") for p in sorted((root / folder).rglob("*.py"))]
    for path in files:
        if (root / "lorafull" / "runs") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            if name in ("write_status", "_write") or (name in _FILE_WRITERS and _names_status_file(node)):
                bad.append(f"{path.relative_to(root)}:{node.lineno}: {name}(...) writes status.json "
                           "(use a transition of lorafull.runs.status)")
    return bad


def test_only_lorafull_runs_writes_status_json():
    assert status_writers(REPO) == []


def test_the_status_check_catches_a_writer(tmp_path):
    (tmp_path / "lorafull" / "judge").mkdir(parents=True)
    (tmp_path / "launch").mkdir()
    (tmp_path / "lorafull" / "judge" / "bad.py").write_text(
        "from lorafull.runs import write_status, write_json_atomic, RunPaths\n"
        "write_status('r', 'done', stage='judge')\n"
        "write_json_atomic(RunPaths.of('r').status, {})\n")
    (tmp_path / "launch" / "bad.py").write_text("open(run_dir / 'status.json', 'w').write('{}')\n")
    found = status_writers(tmp_path)
    assert sorted(f.split(":")[0] + ":" + f.split(":")[1] for f in found) == [
        "launch/bad.py:1", "lorafull/judge/bad.py:2", "lorafull/judge/bad.py:3"]
