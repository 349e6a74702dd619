"""The one lock helper: one process at a time holds a lock file of a run or study folder.

Library module (no command). Used by every stage that must have one writer (stage_lock), the token
cache, the judge cache, the base model's task scores and the launcher's study lock.

flock first: the kernel releases it when its holder dies, so a killed job never leaves a stale lock.
Where the file system has no flock (it answers ENOLCK, ENOSYS, EOPNOTSUPP or EINVAL: Lustre mounted
without the flock option, NFS without a lock daemon), or where LORAFULL_LOCKS=directory asks for it, the
lock is a directory `<lock file>.d/` instead: mkdir is atomic on every POSIX and network file system.
It holds `owner` (host, pid, start time). A waiter takes over a directory whose owner is a dead process
of its own host; one left by a process of another host that died without releasing it is named in the
waiting message, for a person to remove.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

# what flock answers on a file system that cannot lock
NO_FLOCK = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
MODE_ENV = "LORAFULL_LOCKS"  # "directory": lock directories even where flock works


class LockBusy(RuntimeError):
    """The lock is held and the caller asked not to wait; the message names the holder."""


def _owner_line() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True, poll_s: float = 1.0,
              on_wait: Optional[Callable[[str], None]] = None, what: str = "") -> Iterator[None]:
    """Hold the lock `path` for the `with` block. Held elsewhere: wait (one message to on_wait, default
    stderr, naming the holder; `what` says what is held), or with wait=False raise LockBusy at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = None if os.environ.get(MODE_ENV) == "directory" else open(path, "a+", encoding="utf-8")
    try:
        if f is not None and not _flock(f, path, wait, poll_s, on_wait, what):
            f.close()
            f = None
    except BaseException:
        f.close()
        raise
    if f is None:  # no flock on this file system (or LORAFULL_LOCKS=directory)
        with _directory_lock(path, wait, poll_s, on_wait, what):
            yield
        return
    try:
        f.seek(0)
        f.truncate()
        f.write(_owner_line() + "\n")
        f.flush()
        yield
    finally:
        f.close()  # releases the flock


def _flock(f, path: Path, wait: bool, poll_s: float, on_wait, what: str) -> bool:
    """True once flock holds the file; False when the file system has no flock."""
    told = False
    while True:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            if not wait:
                raise LockBusy(f"{path}: held by {holder}") from None
            if not told:
                (on_wait or _to_stderr)(f"{what or f'{path}: held'} ({holder}); waiting for it to finish ({path})")
                told = True
            time.sleep(poll_s)
        except OSError as e:
            if e.errno in NO_FLOCK:
                return False
            raise


def _dead_here(owner: str) -> bool:
    """True for an owner line of a process of this host that no longer runs."""
    parts = owner.split()
    if len(parts) < 4 or parts[0] != "pid" or parts[3] != socket.gethostname() or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextlib.contextmanager
def _directory_lock(path: Path, wait: bool, poll_s: float, on_wait, what: str) -> Iterator[None]:
    folder = path.with_name(path.name + ".d")
    told = False
    while True:
        try:
            folder.mkdir()
            break
        except FileExistsError:
            try:
                owner = (folder / "owner").read_text().strip()
            except OSError:  # between the holder's mkdir and its owner file, or just released
                owner = ""
            if owner and _dead_here(owner):
                shutil.rmtree(folder, ignore_errors=True)  # its holder died here: take it over
                continue
            holder = owner or "another process"
            if not wait:
                raise LockBusy(f"{folder}: held by {holder}") from None
            if not told:
                (on_wait or _to_stderr)(f"{what or f'{path}: held'} ({holder}); waiting for it to finish ({folder}; "
                                        "no flock here: if that process is gone, remove the folder)")
                told = True
            time.sleep(poll_s)
    try:
        (folder / "owner").write_text(_owner_line() + "\n")
        yield
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def stage_lock(run_dir: str | os.PathLike, stage: str, poll_s: float = 1.0,
               on_wait: Optional[Callable[[str], None]] = None) -> Iterator[None]:
    """One writer per run folder and stage: hold RUN_DIR/.<stage>.lock while the stage runs. A second
    process (or thread) running the same stage on the same run waits until the first is done -- then
    finds its work done, so no line is written twice."""
    message = f"{run_dir}: {stage} is already running here"
    with file_lock(Path(run_dir) / f".{stage}.lock", poll_s=poll_s, what=message,
                   on_wait=on_wait):
        yield
