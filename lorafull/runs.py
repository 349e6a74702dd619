"""The run folder: its file names, its status.json and the flushed jsonl files stages talk through.

Every stage reads and writes a run folder through these helpers, so the layout lives in one place:

    RUN_DIR/config.yaml  status.json  metrics.jsonl  checkpoints/  final/  responses.jsonl  scores.jsonl
"""
from __future__ import annotations

import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

STATES = ("queued", "running", "done", "failed")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> "RunPaths":
        return cls(Path(run_dir))

    config = property(lambda s: s.root / "config.yaml")
    status = property(lambda s: s.root / "status.json")
    metrics = property(lambda s: s.root / "metrics.jsonl")
    checkpoints = property(lambda s: s.root / "checkpoints")
    final = property(lambda s: s.root / "final")
    merged = property(lambda s: s.root / "merged")
    responses = property(lambda s: s.root / "responses.jsonl")
    scores = property(lambda s: s.root / "scores.jsonl")
    analysis = property(lambda s: s.root / "analysis")
    logs = property(lambda s: s.root / "logs")


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def read_status(run_dir: str | os.PathLike) -> dict:
    path = RunPaths.of(run_dir).status
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def write_status(run_dir: str | os.PathLike, state: str, stage: str = "train", error: Optional[str] = None,
                 **extra) -> dict:
    """Update status.json. `state` is the state of the whole run (queued|running|done|failed);
    `stage` names what it refers to (train, generate, judge). Earlier keys are kept."""
    assert state in STATES, state
    status = read_status(run_dir)
    status.update(extra)
    status.update({"state": state, "stage": stage, "error": error, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    stages = status.setdefault("stages", {})
    stages[stage] = state
    write_json_atomic(RunPaths.of(run_dir).status, status)
    return status


def error_line(exc: BaseException) -> str:
    """One line naming what went wrong (file:line of a bad input is in the message itself)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def error_detail(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:]


class JsonlWriter:
    """Appends one JSON object per line and flushes it: a crash loses at most the line being written."""

    def __init__(self, path: str | os.PathLike, mode: str = "a"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, mode, encoding="utf-8")

    def write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_jsonl(path: str | os.PathLike, skip_torn_tail: bool = True) -> Iterator[dict]:
    """Yield objects from a jsonl file this package wrote. A last line cut by a crash is skipped
    (it will be written again); a bad line elsewhere is an error naming file:line."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if skip_torn_tail and i == len(lines) and not line.endswith("\n"):
                return
            raise ValueError(f"{path}:{i}: malformed JSON line: {e.msg}") from None


def repair_jsonl_tail(path: str | os.PathLike) -> None:
    """Drop a torn last line (no newline) left by a crash, so appending continues cleanly."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
