"""A served judge's folder in the study: STUDY_DIR/judge_server/<key>/ (key: lorafull.config.server_key).

    serve.json     what to serve: the settings, the judge's name (its identity by content), the cache folder
                   for content hashes; written by launch.grid before the server starts
    address.json   {"url", "token", "name", "instance"}: mode 0600, written once the engine is healthy,
                   removed when the server stops. The ONLY place the bearer token is written
    state.json     {"state": starting|serving|stopped|failed, "instance", "job", "host", "pid", "engine_pid",
                   "url", "requests", "in_flight", "last_request", "error", ...}: no secret; --status reads it
    job.json       {"job": the current server job} (Slurm): launch.grid and a server handing over write it
    clients        the eval jobs that need this server, `<eval job> <its training job or ->` per line
                   (Slurm): launch.grid appends
    .lock          taken while job.json and clients change together

Library module (no command).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from lorafull.runs import file_lock, redact_obj, write_json_atomic

SERVER_ROOT = "judge_server"
STATES = ("starting", "serving", "stopped", "failed")


@dataclass(frozen=True)
class ServerPaths:
    root: Path

    @classmethod
    def of(cls, study_dir: str | os.PathLike, key: str) -> "ServerPaths":
        return cls(Path(study_dir) / SERVER_ROOT / key)

    settings = property(lambda s: s.root / "serve.json")
    address = property(lambda s: s.root / "address.json")
    state = property(lambda s: s.root / "state.json")
    job = property(lambda s: s.root / "job.json")
    clients = property(lambda s: s.root / "clients")
    lock_file = property(lambda s: s.root / ".lock")

    @property
    def key(self) -> str:
        return self.root.name


def all_servers(study_dir: str | os.PathLike) -> list[ServerPaths]:
    root = Path(study_dir) / SERVER_ROOT
    return [ServerPaths(p) for p in sorted(root.iterdir()) if (p / "serve.json").exists()] if root.is_dir() else []


def write_private_json(path: Path, obj: Any) -> None:
    """A JSON file only its owner can read (0600) from its first byte on: created under a temporary
    name with that mode (never a moment world-readable, whatever the umask), then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of that name kept its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.replace(tmp, path)


def read_json(path: Path) -> Optional[dict]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_state(paths: ServerPaths, state: str, **fields) -> dict:
    """Update state.json (earlier keys kept); every string redacted, so no token can slip in."""
    assert state in STATES, state
    current = read_json(paths.state) or {}
    current.update(fields)
    current.update(state=state, updated=time.time())
    current = redact_obj(current)
    write_json_atomic(paths.state, current)
    return current


def write_text_atomic(path: Path, text: str) -> None:
    """A temporary name, then a rename: a server job reading the clients file never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_clients(paths: ServerPaths, whole_lines: bool = False) -> list[str]:
    """The eval job ids of the clients file (its lines' first words), or its whole lines."""
    try:
        lines = [line.strip() for line in paths.clients.read_text().splitlines() if line.strip()]
    except OSError:
        return []
    return lines if whole_lines else [line.split()[0] for line in lines]


@contextlib.contextmanager
def server_lock(paths: ServerPaths):
    """One writer of job.json + clients at a time (launch.grid, or a server job handing over)."""
    with file_lock(paths.lock_file, poll_s=0.2, what=f"judge server {paths.key}"):
        yield
