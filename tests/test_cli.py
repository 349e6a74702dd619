"""Every `python -m` entry point of the project (found in the source, not listed by hand): --help prints
usage, arguments and an example and writes nothing; a command given a folder that is not a run (or a
study file that does not exist) refuses in one line and writes nothing."""
from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.common import REPO, job_env

GUARD = re.compile(r'^if __name__ == "__main__":', re.MULTILINE)


def entry_points() -> list[str]:
    """Every module `python -m` runs: packages with a __main__.py, modules with a __main__ guard."""
    found = []
    for top in ("lorafull", "launch"):
        for path in sorted((REPO / top).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if path.name == "__main__.py":
                found.append(".".join(parts[:-1]))
            elif GUARD.search(path.read_text(encoding="utf-8")):
                found.append(".".join(parts))
    return found


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_module(module: str, args: list[str], cwd: Path, monkeypatch, capsys) -> tuple[int, str, str]:
    """`python -m module args` in this process (one interpreter: the imports are paid once), in cwd."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [module, *args])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def usage_block(help_text: str) -> str:
    return help_text.split("\n\n")[0]


def positionals(help_text: str) -> list[tuple[str, bool]]:
    """The required positional metavars of a usage line, in order, each with whether it must exist
    (one whose help says "made if missing" is an output)."""
    usage = usage_block(help_text)
    outputs = {m for m in re.findall(r"^\s+([A-Z_]+)\s.*made if missing", help_text, re.MULTILINE)}
    words = re.sub(r"\[[^\]]*\]", " ", usage).split()
    return [(w, w not in outputs) for w in words if re.fullmatch(r"[A-Z_]+", w)]


def subcommands(help_text: str) -> list[str]:
    m = re.search(r"\{([a-z_,]+)\}", re.sub(r"\[[^\]]*\]", " ", usage_block(help_text)))  # not an option's choices
    return m.group(1).split(",") if m else []


ENTRIES = entry_points()
# runpy warns when a module it runs was imported already (by its package): harmless here
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")


def test_entry_points_are_found():
    # the discovery itself: the stages, the tools and the launcher are all there
    for module in ("lorafull.train", "lorafull.evaluate", "lorafull.report", "lorafull.examples.demo", "launch.grid",
                   "launch.render", "lorafull.models.merge", "lorafull.analysis"):
        assert module in ENTRIES, module


@pytest.mark.parametrize("module", ENTRIES)
def test_help_prints_usage_arguments_and_an_example_and_writes_nothing(module, tmp_path, monkeypatch, capsys):
    code, out, err = run_module(module, ["--help"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith("usage: python -m "), out[:200]
    assert re.search(r"^(positional arguments|options):", out, re.MULTILINE), out
    assert re.search(r"^examples?:\n +python -m \S+", out, re.MULTILINE), out
    assert tree(tmp_path) == set(), f"--help of {module} wrote {tree(tmp_path)}"
    for sub in subcommands(out):
        code, sub_out, err = run_module(module, [sub, "--help"], tmp_path, monkeypatch, capsys)
        assert code == 0 and sub_out.startswith("usage: "), err
        assert tree(tmp_path) == set()


def _refused(module: str, args: list[str], cwd: Path, monkeypatch, capsys) -> str:
    before = tree(cwd)
    code, out, err = run_module(module, args, cwd, monkeypatch, capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0, f"{module} {args} exited 0: {out}{err}"
    assert "Traceback" not in err and len([x for x in lines if x.startswith("error:")]) == 1, err
    assert tree(cwd) == before, f"{module} {args} wrote {tree(cwd) - before}"
    return lines[-1]


@pytest.mark.parametrize("module", ENTRIES)
def test_a_folder_that_is_not_a_run_is_refused_in_one_line_and_nothing_is_written(module, tmp_path, monkeypatch,
                                                                                  capsys):
    _, help_text, _ = run_module(module, ["--help"], tmp_path, monkeypatch, capsys)
    commands = [[sub] for sub in subcommands(help_text)] or [[]]
    checked = 0
    for prefix in commands:
        text = run_module(module, [*prefix, "--help"], tmp_path, monkeypatch, capsys)[1] if prefix else help_text
        needed = positionals(text)
        if not any(read for _, read in needed):
            continue
        (tmp_path / "empty").mkdir(exist_ok=True)
        for bad in ("studies/demo/runs/pretrian", "empty"):  # a typo, and a folder without config.yaml
            args = [("out" if not read else f"{bad}.yaml" if m == "CONFIG" else bad) for m, read in needed]
            line = _refused(module, [*prefix, *args], tmp_path, monkeypatch, capsys)
            assert bad in line, line
            checked += 1
    if not checked:
        pytest.skip(f"{module} reads no run, study or config (its arguments are outputs)")


def test_the_train_command_given_help_creates_no_folder(tmp_path):
    """The path a new user took: a real `python -m lorafull.train --help` and `lorafull.examples.demo --help`."""
    for module in ("lorafull.train", "lorafull.examples.demo"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, env=job_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "example" in done.stdout, done.stderr
    assert list(tmp_path.iterdir()) == []
