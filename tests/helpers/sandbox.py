"""Helpers for the code sandbox's tests: a PATH that shows only some tools, host processes by marker."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def path_with_only(folder: Path, tools: list[str]) -> bool:
    """Make `folder` a PATH entry holding links to just `tools`; False if one of them is missing."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        exe = shutil.which(tool)
        if not exe:
            return False
        (folder / tool).symlink_to(exe)
    return True


def host_processes_with(marker: str) -> list[int]:
    """Pids (host view) whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def still_alive_after(marker: str, seconds: float) -> list[int]:
    """Processes with `marker` still there after waiting up to `seconds` for them to go: SIGKILL on a
    whole pid namespace is delivered at once but hundreds of processes take a moment to exit."""
    deadline = time.monotonic() + seconds
    while True:
        alive = host_processes_with(marker)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)
