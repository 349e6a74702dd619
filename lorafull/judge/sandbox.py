"""The code scorer's sandbox: each answer runs in a process that the kernel isolates, not Python hooks.

    run_code(code, timeout_s=10, mem_mb=1024)   -> CodeResult (passed, returncode, timed_out, stdout, stderr)
    isolation()                                 -> "bwrap" | "unshare" | None (what this machine offers)
    require_isolation(unsafe=False)             raises SandboxUnavailable (one line) when neither works

Threat model. The code is written by a model and may be hostile: it may try to read the scorer's
secrets (the judge's API key in the environment, /proc/<ppid>/environ), write or delete files outside
its folder, reach the network, outlive its time limit (children in new sessions, fork bombs), or
exhaust the scorer's memory by printing gigabytes. Inside Python nothing is a boundary (a frame walk
or ctypes undoes any audit hook), so the boundary is the operating system:

- bubblewrap (`bwrap`), else util-linux `unshare`: new user, pid, network, ipc, uts and mount
  namespaces. The root of the file system is a fresh tmpfs that holds only a read-only view of the
  interpreter's install (sys.base_prefix) and the system libraries it links (/usr/lib, /lib*), the
  answer's own file (read-only, /box) and a private tmpfs working folder (/work, its cwd and HOME).
  No host file, no other process and no network interface but a down loopback are visible.
- no inherited environment: the sandbox and the tool that builds it start from an empty one, so
  /proc/1/environ inside holds nothing secret either.
- rlimits set before the answer runs, soft = hard (raising a hard limit needs a capability that the
  namespace does not grant): CPU seconds, address space, file size, processes, open files, no core.
- the timeout SIGKILLs the sandbox's first process; the kernel then kills every process of its pid
  namespace (bwrap's --die-with-parent, unshare's --kill-child), whatever session they started.
- at most OUTPUT_CAP bytes of output are kept; the rest is read and dropped, never buffered.

Not covered: kernel exploits (namespaces share the host kernel); CPU time of a machine is shared
(the answer can spend its CPU limit); the interpreter's own files are readable (not secret).
Where neither tool can build the namespaces (user namespaces off, as on some HPC nodes), code
scoring refuses to run unless the study sets judge.unsafe_code_execution: true, which runs answers
as plain subprocesses with only the rlimits and the timeout: for trusted answers only.

On a machine where the tool runs as root (containers), both tools still create a user namespace and
the answer runs as uid 65534 inside it with no capability, but it is root (uid 0) to the host kernel,
which exempts uid 0 from RLIMIT_NPROC: there a fork bomb is bounded only by the timeout (the pid
namespace dies whole). Run the tool as a normal user (as on a cluster) and the process cap holds;
RLIMIT_NPROC then counts the processes of the answer's own user namespace only.
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

OUTPUT_CAP = 1 << 20  # bytes of stdout + stderr kept per answer
_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/work", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
_UNSAFE_HINT = "set judge.unsafe_code_execution: true in the study to run answers unisolated (trusted answers only)"

# Runs first inside the sandbox: limits that the answer cannot raise, then the answer as __main__.
_PRELUDE = r'''
import json, resource, runpy, sys
program, limits = sys.argv[1], json.loads(sys.argv[2])
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))
sys.argv = [program]
runpy.run_path(program, run_name="__main__")
'''


class SandboxUnavailable(RuntimeError):
    """Neither bwrap nor unshare can isolate code here (one line, says how to allow unisolated runs)."""


@dataclass
class CodeResult:
    passed: bool
    returncode: Optional[int]
    timed_out: bool
    stdout: str
    stderr: str


def _interpreter() -> tuple[str, str]:
    """(install root, executable) of the base interpreter: a venv's python is a link into it, and the
    sandbox shows only the base install (the standard library, no site-packages of the venv)."""
    prefix = os.path.realpath(sys.base_prefix)
    exe = os.path.realpath(sys.executable)
    if not exe.startswith(prefix + os.sep):
        exe = os.path.join(prefix, "bin", os.path.basename(exe))
    return prefix, exe


def _readonly_views() -> list[tuple[str, ...]]:
    """("bind", path) or ("link", path, target): the interpreter's install and the system libraries."""
    prefix, _ = _interpreter()
    views = [("bind", prefix)]
    for d in _LIB_DIRS:
        if os.path.islink(d):
            views.append(("link", d, os.readlink(d)))
        elif os.path.isdir(d) and not prefix.startswith(d + os.sep) and prefix != d:
            views.append(("bind", d))
    return views


def _bwrap_cmd(box: Path, limits: dict) -> list[str]:
    _, exe = _interpreter()
    cmd = ["bwrap", "--unshare-user", "--uid", "65534", "--gid", "65534", "--unshare-pid", "--unshare-net",
           "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--new-session",
           "--clearenv"]
    for key, value in _ENV.items():
        cmd += ["--setenv", key, value]
    for view in _readonly_views():
        cmd += ["--ro-bind", view[1], view[1]] if view[0] == "bind" else ["--symlink", view[2], view[1]]
    cmd += ["--ro-bind", str(box), "/box", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/work",
            "--chdir", "/work"]
    return cmd + [exe, "-I", "-S", "-B", "-c", _PRELUDE, "/box/program.py", json.dumps(limits)]


# Runs as root of a fresh user namespace (our code, not the answer's): builds the root file system
# the bwrap way with mount(2), chroots into it, then hands over to the prelude with an empty env.
_UNSHARE_SETUP = r'''
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
def mount(src, dst, fstype, flags):
    if libc.mount(src.encode(), dst.encode(), fstype.encode(), flags, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {src} on {dst}")
box, root, exe, prelude, limits, views, env = sys.argv[1:8]
mount("none", root, "tmpfs", MS_NOSUID | MS_NODEV)
for view in json.loads(views) + [["bind", box, "/box"]]:
    inside = root + (view[2] if len(view) == 3 and view[0] == "bind" else view[1])
    if view[0] == "link":
        os.makedirs(os.path.dirname(inside), exist_ok=True); os.symlink(view[2], inside); continue
    os.makedirs(inside, exist_ok=True)
    mount(view[1], inside, "", MS_BIND | MS_REC)
    mount("none", inside, "", MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
for d in ("work", "proc", "dev"):
    os.makedirs(root + "/" + d)
mount("none", root + "/work", "tmpfs", MS_NOSUID | MS_NODEV)
mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV)
for dev in ("null", "zero", "urandom", "random"):
    open(root + "/dev/" + dev, "w").close(); mount("/dev/" + dev, root + "/dev/" + dev, "", MS_BIND)
# a nested user namespace that maps us to 65534 and owns no mount: execve as non-root drops every
# capability, so the answer can neither undo the chroot nor mount anything
if libc.unshare(0x10000000) != 0:
    raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
for name, line in (("setgroups", "deny"), ("uid_map", "65534 0 1"), ("gid_map", "65534 0 1")):
    with open("/proc/self/" + name, "w") as f:
        f.write(line)
os.chroot(root); os.chdir("/work"); os.setsid()
os.execve(exe, [exe, "-I", "-S", "-B", "-c", prelude, "/box/program.py", limits], json.loads(env))
'''


def _unshare_cmd(box: Path, limits: dict) -> list[str]:
    _, exe = _interpreter()
    root = box.parent / "root"
    root.mkdir(exist_ok=True)
    return ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--kill-child", "--net", "--ipc",
            "--uts", "--mount", "--propagation", "private", exe, "-I", "-S", "-B", "-c", _UNSHARE_SETUP,
            str(box), str(root), exe, _PRELUDE, json.dumps(limits), json.dumps(_readonly_views()), json.dumps(_ENV)]


_BUILDERS = {"bwrap": _bwrap_cmd, "unshare": _unshare_cmd}


def _tool_path(tool: str) -> Optional[str]:
    return shutil.which(tool, path=os.environ.get("PATH", ""))


@lru_cache(maxsize=8)
def _works(tool: str, exe: Optional[str]) -> bool:
    """Whether `tool` at `exe` can build the sandbox here: a trial answer that prints ok."""
    if not exe:
        return False
    try:
        result = _run("print('ok')\n", (tool, exe), 10.0, 256, 1)
    except OSError:
        return False
    return result.passed and result.stdout.strip() == "ok"


def isolation() -> Optional[tuple[str, str]]:
    """The isolation this machine offers: (tool, its path) for bwrap, else unshare, else None."""
    for tool in ("bwrap", "unshare"):
        exe = _tool_path(tool)
        if _works(tool, exe):
            return tool, exe
    return None


def require_isolation(unsafe: bool = False) -> Optional[tuple[str, str]]:
    """The isolation to use; raises SandboxUnavailable (one line) when there is none and unsafe is off."""
    tool = isolation()
    if tool is None and not unsafe:
        raise SandboxUnavailable("judge: code answers cannot be isolated here (neither bwrap nor unshare can "
                                 "create user, pid, network and mount namespaces: install bubblewrap or enable "
                                 f"unprivileged user namespaces); {_UNSAFE_HINT}")
    return tool


def _limits(mem_mb: int, cpu_s: int, file_mb: int) -> dict:
    return {"RLIMIT_CPU": cpu_s, "RLIMIT_AS": mem_mb << 20, "RLIMIT_FSIZE": file_mb << 20,
            "RLIMIT_NPROC": 64, "RLIMIT_NOFILE": 64, "RLIMIT_CORE": 0}


def _read_bounded(proc: subprocess.Popen, deadline: float) -> tuple[bytes, bytes, bool]:
    """Read stdout and stderr until both close or the deadline passes; keep OUTPUT_CAP bytes in all,
    read and drop the rest. Returns (stdout, stderr, deadline_passed)."""
    kept = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    sel = selectors.DefaultSelector()
    for fd in kept:
        sel.register(fd, selectors.EVENT_READ)
    late = False
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            late = True
            break
        for key, _ in sel.select(timeout=left):
            chunk = os.read(key.fd, 1 << 16)
            if not chunk:
                sel.unregister(key.fd)
                continue
            room = OUTPUT_CAP - sum(len(b) for b in kept.values())
            kept[key.fd] += chunk[:max(room, 0)]
    sel.close()
    return bytes(kept[proc.stdout.fileno()]), bytes(kept[proc.stderr.fileno()]), late


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the sandbox's session: its first process dies, and with it the whole pid namespace."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _command(box: Path, tmp: str, tool: Optional[tuple[str, str]], limits: dict) -> tuple[list[str], dict]:
    """The command line and its environment: the tool's (nothing inherited), or unisolated."""
    if tool is None:
        cmd = [_interpreter()[1], "-I", "-S", "-B", "-c", _PRELUDE, str(box / "program.py"), json.dumps(limits)]
        return cmd, {**_ENV, "HOME": tmp, "TMPDIR": tmp}
    name, exe = tool
    cmd = _BUILDERS[name](box, limits)
    return [exe, *cmd[1:]], {}


def _run(code: str, tool: Optional[tuple[str, str]], timeout_s: float, mem_mb: int, file_mb: int) -> CodeResult:
    """Write `code` into a fresh folder and run it under `tool` (None: unisolated) with the limits."""
    with tempfile.TemporaryDirectory(prefix="lorafull-code-") as tmp:
        box = Path(tmp) / "box"
        box.mkdir()
        (box / "program.py").write_text(code, encoding="utf-8")
        cmd, env = _command(box, tmp, tool, _limits(mem_mb, int(timeout_s) + 1, file_mb))
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err, late = _read_bounded(proc, time.monotonic() + timeout_s)
        finally:
            _kill(proc)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
    return CodeResult(passed=not late and proc.returncode == 0, returncode=proc.returncode, timed_out=late,
                      stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"))


def run_code(code: str, timeout_s: float = 10.0, mem_mb: int = 1024, file_mb: int = 16,
             unsafe: bool = False) -> CodeResult:
    """Run Python `code` isolated (see the module docstring) with time, memory and output limits.
    Raises SandboxUnavailable where no isolation works and `unsafe` (judge.unsafe_code_execution) is off."""
    tool = require_isolation(unsafe)
    return _run(code, tool, timeout_s, mem_mb, file_mb)
