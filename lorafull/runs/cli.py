"""The command line shared by the stages that work on one run folder.

Library module (no command): `python -m lorafull.<stage> RUN_DIR` calls run_stage_cli.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from lorafull.runs.paths import RunPaths
from lorafull.runs.secrets import error_line
from lorafull.runs.status import failed


def run_stage_cli(stage: str, doc: str, run: Callable[..., Any], describe: Callable[[Path, Any], str],
                  argv: Optional[list[str]] = None,
                  failed_stage: Optional[Callable[[Path], str]] = None) -> int:
    """`python -m lorafull.<stage> RUN_DIR [--no-progress]`. Calls run(RUN_DIR, progress=...) and prints
    describe(RUN_DIR, its result). On any error: status.json says failed (for `stage`, or for
    failed_stage(RUN_DIR) when given), ONE line on stderr, exit code 1 -- the launcher shows that line."""
    parser = argparse.ArgumentParser(prog=f"python -m lorafull.{stage}", description=doc.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs of batch jobs)")
    args = parser.parse_args(argv)
    try:
        result = run(args.run_dir, progress=not args.no_progress)
    except Exception as e:  # noqa: BLE001 -- one line on stderr, the status says failed
        msg = error_line(e)
        if RunPaths.of(args.run_dir).config.exists():  # a mistyped RUN_DIR gets no status.json
            failed(args.run_dir, failed_stage(args.run_dir) if failed_stage else stage, error=msg)
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(describe(args.run_dir, result))
    return 0
