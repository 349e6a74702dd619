"""A served judge on this machine: its folder's settings written, the server started as a subprocess
(`python -m lorafull.judge.serve SERVER_DIR`, output in SERVER_DIR/server.log) and stopped again.

launch.grid's local executors run one around the evaluations that need it; `python -m
lorafull.judge.agree` runs one for a served judge it compares. On Slurm, launch.judge_server runs the
same command in a job of its own.

Library module (no command).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

from lorafull.config import ServeConfig, served_identity, served_label, server_key, to_dict
from lorafull.judge.serve.files import ServerPaths, read_json
from lorafull.runs import write_json_atomic

STOP_WAIT_S = 60.0


def write_settings(study_dir: str | os.PathLike, serve: ServeConfig, cache_dir: Optional[str]) -> ServerPaths:
    """STUDY_DIR/judge_server/<key>/serve.json: what the server process serves, and under which name
    (the model's identity by content)."""
    paths = ServerPaths.of(study_dir, server_key(serve))
    settings = {"serve": to_dict(serve), "name": served_label(served_identity(serve, cache_dir)), "cache_dir": cache_dir}
    if read_json(paths.settings) != settings:
        write_json_atomic(paths.settings, settings)
    return paths


class ServerProcess:
    """One server subprocess in a session of its own (stopped as a whole: the engine goes with it)."""

    def __init__(self, paths: ServerPaths):
        self.paths = paths
        self.proc: Optional[subprocess.Popen] = None

    @property
    def log_path(self) -> Path:
        return self.paths.root / "server.log"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with open(self.log_path, "ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", "lorafull.judge.serve", str(self.paths.root)],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def stop(self) -> None:
        """SIGTERM (the server withdraws its address and stops the engine), SIGKILL if it hangs."""
        if not self.running():
            return
        for sig, wait_s in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(wait_s)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> "ServerProcess":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
