"""Locks on files of a run or study folder.

Library module (no command).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional


@contextlib.contextmanager
def stage_lock(run_dir: str | os.PathLike, stage: str, poll_s: float = 1.0,
               on_wait: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """One writer per run folder and stage: hold RUN_DIR/.<stage>.lock while the stage runs.

    A second process (or thread) running the same stage on the same run waits until the first is
    done -- then finds its work done, so no line is written twice -- after one message to on_wait
    (default: stderr) naming the holder. flock is released by the kernel when the holder dies, so a
    killed job never leaves a stale lock (network file systems: Linux NFS emulates flock with POSIX
    locks; Lustre needs the flock mount option)."""
    path = Path(run_dir) / f".{stage}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+", encoding="utf-8")
    try:
        told = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    (on_wait or _to_stderr)(f"{run_dir}: {stage} is already running here ({holder}); "
                                            f"waiting for it to finish ({path})")
                    told = True
                time.sleep(poll_s)
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
