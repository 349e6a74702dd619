"""The one lock helper (lorafull.runs.file_lock): flock where the file system has it, a lock directory
where it does not (detected from flock's answer, or asked with LORAFULL_LOCKS=directory); the
launcher's study lock refuses a second launcher at once.

    pytest tests/test_locks.py
"""
from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from helpers.common import REPO
from lorafull.runs import LockBusy, file_lock, lock as lock_module

HOLD = """
import sys, time
from lorafull.runs import file_lock
with file_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    open(sys.argv[1] + ".was-held", "w").close()  # the last thing before the release
"""


def _holder(path, seconds: float, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), **env})
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("mode", ["flock", "directory"])
def test_a_second_process_waits_for_the_holder_and_is_told_who_it_is(tmp_path, monkeypatch, mode):
    env = {"LORAFULL_LOCKS": "directory"} if mode == "directory" else {}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = tmp_path / ".x.lock"
    holder = _holder(path, 1.5, env)
    messages, start = [], time.monotonic()
    with file_lock(path, poll_s=0.05, on_wait=messages.append, what="x is busy"):
        waited = time.monotonic() - start
        assert path.with_name(".x.lock.was-held").exists()  # not before the holder let go
    holder.wait()
    assert waited > 0.5 and len(messages) == 1 and f"pid {holder.pid} on" in messages[0], messages
    assert messages[0].startswith("x is busy") and (("no flock here" in messages[0]) == (mode == "directory"))
    assert not path.with_name(".x.lock.d").exists()  # a lock directory is gone once released


def test_where_flock_is_refused_the_lock_is_a_directory(tmp_path, monkeypatch):
    """What Lustre without its flock mount option answers (ENOSYS), or NFS without a lock daemon (ENOLCK)."""
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(lock_module.fcntl, "flock", no_flock)
    path = tmp_path / "cache.lock"
    order = []

    def second():
        with file_lock(path, poll_s=0.02, on_wait=lambda m: order.append("told")):
            order.append("second")

    with file_lock(path):
        owner = (tmp_path / "cache.lock.d" / "owner").read_text()
        assert owner.startswith(f"pid {os.getpid()} on {socket.gethostname()}")
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first done")
    t.join(10)
    assert order == ["told", "first done", "second"]
    with pytest.raises(LockBusy, match="held by pid"):  # wait=False: one line naming the holder
        with file_lock(path):
            with file_lock(path, wait=False):
                pass


def test_a_lock_directory_left_by_a_dead_process_of_this_host_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAFULL_LOCKS", "directory")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = tmp_path / ".judge.lock.d"
    stale.mkdir()
    (stale / "owner").write_text(f"pid {dead} on {socket.gethostname()} since 2024-01-01T00:00:00\n")
    messages = []
    with file_lock(tmp_path / ".judge.lock", poll_s=0.02, on_wait=messages.append):
        assert f"pid {os.getpid()}" in (stale / "owner").read_text()
    assert messages == []  # nothing to wait for


def test_a_second_launcher_of_a_study_is_refused_in_one_line(tmp_path):
    from launch.jobs import study_lock

    with study_lock(tmp_path):
        with pytest.raises(SystemExit, match=r"\.lock: held by pid \d+ on .*: another launch.grid is submitting"):
            with study_lock(tmp_path):
                pass
    with study_lock(tmp_path):  # released: the next launcher gets it
        pass
