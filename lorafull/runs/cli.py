"""The command line of every `python -m` entry point: --help that helps (summary, arguments, examples) and
touches nothing, the refusal of a folder that is not a run, and the wrapper every one-run stage shares.

Library module (no command): `python -m lorafull.<stage> RUN_DIR` calls run_stage_cli; every other
entry module builds its parser with command_parser.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lorafull.runs.paths import RunPaths
from lorafull.runs.secrets import error_line
from lorafull.runs.status import failed


def command_parser(prog: str, doc: str, *examples: str) -> argparse.ArgumentParser:
    """The parser of a `python -m` command: --help prints the module's summary (its docstring's first
    paragraph), the arguments and example command lines, and touches nothing."""
    return argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n\n")[0],
                                   epilog="example" + ("s" if len(examples) > 1 else "") + ":\n"
                                   + "\n".join(f"  {e}" for e in examples),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def not_a_run_folder(run_dir: str | os.PathLike) -> Optional[str]:
    """Why `run_dir` is not a run folder (one line), or None when it holds a config.yaml: a command
    given a mistyped folder refuses before it writes anything (no status.json, no logs/)."""
    path = Path(run_dir)
    if RunPaths.of(path).config.is_file():
        return None
    why = "no such folder" if not path.exists() else "no config.yaml in it"
    return f"{path}: not a run folder ({why}; launch.grid writes run folders as STUDY_DIR/runs/<run>/)"


def run_stage_cli(stage: str, doc: str, run: Callable[..., Any], describe: Callable[[Path, Any], str],
                  argv: Optional[list[str]] = None,
                  failed_stage: Optional[Callable[[Path], str]] = None) -> int:
    """`python -m lorafull.<stage> RUN_DIR [--no-progress]`. Calls run(RUN_DIR, progress=...) and prints
    describe(RUN_DIR, its result). A folder without config.yaml is refused (exit 2, nothing written).
    On any error: status.json says failed (for `stage`, or for failed_stage(RUN_DIR) when given), ONE
    line on stderr, exit code 1 -- the launcher shows that line."""
    parser = command_parser(f"python -m lorafull.{stage}", doc, f"python -m lorafull.{stage} studies/demo/runs/pretrain")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (STUDY_DIR/runs/<run>/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs of batch jobs)")
    args = parser.parse_args(argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        result = run(args.run_dir, progress=not args.no_progress)
    except Exception as e:  # noqa: BLE001 -- one line on stderr, the status says failed
        msg = error_line(e)
        failed(args.run_dir, failed_stage(args.run_dir) if failed_stage else stage, error=msg)
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(describe(args.run_dir, result))
    return 0
