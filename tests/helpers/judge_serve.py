"""Helpers for the served judge's tests (no tests here): a tiny study judged by SmolLM2-135M-Instruct through
`transformers serve`, and the watchers the tests need (the server's token while it serves, its files).

SmolLM2-135M is a poor judge: its replies are mostly unreadable as scores. The tests are about the
plumbing (server job, address file, token, identity, failure and retry), so every reply may be "null".
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Optional

from helpers.grid import study_dict


def serve_block(model_dir: Path, **extra) -> dict:
    """eval.judge for a served SmolLM2 on this CPU: short replies, no re-asks, quick polls."""
    serve = {"model": str(model_dir), "engine": "transformers", "gpus": 0, "cpus": 1, "mem_gb": 2,
             "startup_timeout_s": 900, "wait_s": 1200, "poll_s": 2, "idle_timeout_s": 600, "timeout_min": 30,
             **extra}
    return {"kind": "openai", "model": "unused-by-a-served-judge", "max_tokens": 6, "parse_retries": 0,
            "concurrency": 4, "timeout_s": 600, "max_retries": 2, "backoff_base_s": 0.5, "serve": serve}


def served_study(root: Path, files: dict, model_dir: Path, name: str, eval_items: Optional[int] = None,
                 **sections) -> dict:
    judge = serve_block(model_dir)
    ev = {"judge": judge, **({"num_items": eval_items} if eval_items else {})}
    return study_dict(root, files, name=name, base={"eval": ev}, **sections)


def server_dirs(study_dir: Path) -> list[Path]:
    root = study_dir / "judge_server"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def read_state(server_dir: Path) -> dict:
    try:
        return json.loads((server_dir / "state.json").read_text())
    except (OSError, ValueError):
        return {}


class TokenWatcher:
    """Collects every bearer token the study's servers write (address.json, while they serve), and the
    address file's mode, from a thread: the tests then look for the tokens everywhere else."""

    def __init__(self, study_dir: Path, poll_s: float = 0.5):
        self.study_dir, self.poll_s = study_dir, poll_s
        self.tokens: set[str] = set()
        self.modes: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TokenWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            for server in server_dirs(self.study_dir):
                address = server / "address.json"
                try:
                    self.modes.add(address.stat().st_mode & 0o777)
                    self.tokens.add(json.loads(address.read_text())["token"])
                except (OSError, ValueError, KeyError):
                    pass


def files_holding(root: Path, needles: set[str], skip_names: tuple = ("address.json",)) -> list[str]:
    """Every file under root (but skip_names) whose bytes contain one of the needles."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file() or path.name in skip_names:
            continue
        data = path.read_bytes()
        if any(n.encode() in data for n in needles):
            found.append(str(path))
    return found


def wait_until(predicate, timeout_s: float, poll_s: float = 1.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
