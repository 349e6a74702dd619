"""The engine behind a served judge: vLLM's OpenAI-compatible server on GPUs, `transformers serve` on
CPUs (and in the tests). It listens on 127.0.0.1 only; the judge's proxy (lorafull.judge.serve.proxy)
is the one door to it from other nodes.

The engine never sees the study's bearer token. vLLM gets a second, engine-only token through its
environment (VLLM_API_KEY: not in the command line, which every user of the node can read in
/proc/PID/cmdline or `ps`), which the proxy adds when it forwards; `transformers serve` has no
authentication, so on a shared node another local user could reach its 127.0.0.1 port: it is the
engine for CPUs and tests. Everything the engine prints goes through runs.redact on its way to the
log. The engine dies with the process that started it (PR_SET_PDEATHSIG), so a server killed hard
never leaves a model holding GPUs.

Library module (no command): lorafull.judge.serve.server runs it.
"""
from __future__ import annotations

import collections
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import ServeConfig
from lorafull.runs import redact

PR_SET_PDEATHSIG = 1
HEALTH_POLL_S = 1.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def model_folder(serve: ServeConfig) -> str:
    """The Hugging Face folder the engine loads: the folder itself, or a gguf: file converted once
    (lorafull.models.gguf; on the server's node, which may do model work)."""
    from lorafull.models.gguf import gguf_folder, is_gguf_reference

    return str(gguf_folder(serve.model)) if is_gguf_reference(serve.model) else serve.model


def _console_script(name: str) -> str:
    """The engine's command-line tool of this interpreter's environment (the job's venv), else PATH's."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"eval.judge.serve.engine: {name} is not installed here (pip install {name})")
    return found


def engine_command(serve: ServeConfig, folder: str, port: int, served_name: str) -> list[str]:
    """The engine's command line (no secret in it: see the module docstring)."""
    if serve.engine == "vllm":
        cmd = [_console_script("vllm"), "serve", folder, "--served-model-name", served_name, "--host", "127.0.0.1",
               "--port", str(port), "--tensor-parallel-size", str(serve.tensor_parallel or max(1, serve.gpus))]
    else:  # transformers serve: one model, pinned (force_model); requests name it by its folder
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", folder, "--host", "127.0.0.1",
               "--port", str(port)]
    if serve.max_model_len:
        cmd += ["--max-model-len", str(serve.max_model_len)]
    return cmd + [str(a) for a in serve.engine_args]


def engine_request_model(serve: ServeConfig, folder: str, served_name: str) -> str:
    """The model name the engine answers to (the proxy writes it into every request)."""
    return served_name if serve.engine == "vllm" else folder


def _die_with_parent() -> None:
    os.setsid()  # its own process group: stopped as a whole, children included
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the server's finally still stops it
        pass


class Engine:
    """One engine process: started, waited for until healthy, watched, stopped."""

    def __init__(self, serve: ServeConfig, folder: str, served_name: str, engine_token: str,
                 log: Callable[[str], None] = print):
        self.serve, self.folder, self.served_name = serve, folder, served_name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.request_model = engine_request_model(serve, folder, served_name)
        self.token = engine_token if serve.engine == "vllm" else None
        self.log = log
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        """Call from the main thread: PR_SET_PDEATHSIG fires when the *thread* that started the engine ends."""
        env = dict(os.environ)
        if self.token:
            env["VLLM_API_KEY"] = self.token
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.proc = subprocess.Popen(engine_command(self.serve, self.folder, self.port, self.served_name), env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        threading.Thread(target=self._pump, name="engine-log", daemon=True).start()

    def _pump(self) -> None:
        for raw in iter(self.proc.stdout.readline, b""):
            line = redact(raw.decode("utf-8", "replace").rstrip())
            if line:
                self.tail.append(line)
                self.log(f"[engine] {line}")

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    def returncode(self) -> Optional[int]:
        return None if self.proc is None else self.proc.poll()

    def last_line(self) -> str:
        return self.tail[-1] if self.tail else "(no output)"

    def exit_text(self, rc: int) -> str:
        """'was killed by SIGKILL', or 'exited with code 1: <its last line>'."""
        if rc < 0:
            try:
                return f"was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"was killed by signal {-rc}"
        return f"exited with code {rc}: {self.last_line()}"

    def healthy(self, timeout_s: float = 5.0) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=timeout_s) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_healthy(self, timeout_s: float, stop: threading.Event) -> None:
        """Until GET /health answers 200; RuntimeError (one line) when the engine exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            rc = self.returncode()
            if rc is not None:
                raise RuntimeError(f"the {self.serve.engine} engine {self.exit_text(rc)} (while starting)")
            if stop.is_set():
                raise RuntimeError("stopped while the engine was starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.serve.engine} engine did not answer its health check within "
                                   f"eval.judge.serve.startup_timeout_s={timeout_s:g} s: {self.last_line()}")
            time.sleep(HEALTH_POLL_S)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue
