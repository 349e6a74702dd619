"""Serve a study's judge model until stopped: the engine on 127.0.0.1, the token-checking proxy on this
node, the address file (0600) once healthy.

    python -m lorafull.judge.serve STUDY_DIR/judge_server/<key> [--idle-exit-s SECONDS]

launch.grid writes the folder's serve.json and starts this process: in a Slurm job of its own
(launch.judge_server, which also decides when no evaluation needs it any more) or, with the local
executors, as a subprocess around the evaluations. It runs until SIGTERM / Ctrl-C, until the engine
dies, or (--idle-exit-s, for hand-submitted jobs) after that long without a request. The bearer token
is made here, on the node, and written only into address.json: never into argv (which every local user
can read in /proc/PID/cmdline, or `squeue -o %o` shows), a job name, a log line or state.json.

Exit status: 0 stopped, 1 failed (one line on stderr; state.json says why).
"""
from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from lorafull.config import ServeConfig, served_identity, served_label
from lorafull.judge.serve.engine import Engine, model_folder
from lorafull.judge.serve.files import ServerPaths, read_json, write_private_json, write_state
from lorafull.judge.serve.proxy import JudgeProxy
from lorafull.runs import command_parser, error_line, register_secret

STATE_EVERY_S = 5.0  # how often state.json gets the proxy's counters


def _log(line: str) -> None:
    print(line, flush=True)  # a job log (or the local server.log) shows each line as it happens


def load_settings(paths: ServerPaths) -> tuple[ServeConfig, dict]:
    settings = read_json(paths.settings)
    if settings is None:
        raise FileNotFoundError(f"{paths.settings}: no server settings (launch.grid writes them)")
    return ServeConfig(**settings["serve"]), settings


class ServedJudge:
    def __init__(self, paths: ServerPaths, log: Callable[[str], None] = _log):
        self.paths, self.log = paths, log
        self.serve, self.settings = load_settings(paths)
        self.name = self.settings["name"]
        self.instance = secrets.token_hex(8)  # which server an address or a state belongs to
        self.stop_event = threading.Event()
        self.engine: Optional[Engine] = None
        self.proxy: Optional[JudgeProxy] = None

    def _check_identity(self) -> None:
        """The model on disk must still be the one the study named (its content hash)."""
        now = served_label(served_identity(self.serve, self.settings.get("cache_dir")))
        if now != self.name:
            raise RuntimeError(f"eval.judge.serve.model: {self.serve.model} now holds {now}, not {self.name} as "
                               "when the study was submitted: run launch.grid again (a changed judge re-judges)")

    def run(self, idle_exit_s: Optional[float] = None) -> int:
        token, engine_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        register_secret(token)  # should anything echo them, runs.redact removes them from every line
        register_secret(engine_token)
        host = socket.gethostname()
        write_state(self.paths, "starting", instance=self.instance, job=os.environ.get("SLURM_JOB_ID"), host=host,
                    pid=os.getpid(), engine=self.serve.engine, name=self.name, started=time.time(), error=None,
                    url=None, requests=0, in_flight=0, engine_pid=None)
        failure = None
        try:
            self._check_identity()
            self.engine = Engine(self.serve, model_folder(self.serve), self.paths.key, engine_token, self.log)
            self.engine.start()
            write_state(self.paths, "starting", engine_pid=self.engine.pid)
            t0 = time.monotonic()
            self.engine.wait_healthy(self.serve.startup_timeout_s, self.stop_event)
            self.proxy = JudgeProxy(token, self.engine.url, self.engine.request_model, self.name, self.engine.token,
                                    self.engine.healthy, self.log).start()
            url = f"http://{host}:{self.proxy.port}/v1"
            write_private_json(self.paths.address, {"url": url, "token": token, "name": self.name,
                                                    "instance": self.instance})
            write_state(self.paths, "serving", url=url, startup_s=round(time.monotonic() - t0, 1))
            self.log(f"[serve] {self.name} answers at {url} (started in {time.monotonic() - t0:.0f} s)")
            failure = self._watch(idle_exit_s)
        except Exception as e:  # noqa: BLE001 -- one line in state.json and on stderr
            failure = error_line(e)
        finally:
            self._shutdown(failure)
        if failure:
            print(f"error: judge server {self.paths.key}: {failure}", file=sys.stderr)
        return 1 if failure else 0

    def _watch(self, idle_exit_s: Optional[float]) -> Optional[str]:
        """Serve until stopped; the reason when the engine dies."""
        last_write = 0.0
        while not self.stop_event.wait(1.0):
            rc = self.engine.returncode()
            if rc is not None:
                return f"the {self.serve.engine} engine {self.engine.exit_text(rc)} (while serving)"
            activity = self.proxy.activity.snapshot()
            if time.monotonic() - last_write >= STATE_EVERY_S:
                write_state(self.paths, "serving", **activity)
                last_write = time.monotonic()
            if idle_exit_s and not activity["in_flight"] and time.time() - activity["last_request"] >= idle_exit_s:
                self.log(f"[serve] no request for {idle_exit_s:g} s: stopping")
                return None
        return None

    def _shutdown(self, failure: Optional[str]) -> None:
        """Withdraw the address first (no new client connects to a dying server), then stop everything."""
        current = read_json(self.paths.address)
        if current is not None and current.get("instance") == self.instance:
            self.paths.address.unlink(missing_ok=True)
        counters = self.proxy.activity.snapshot() if self.proxy else {}
        if self.proxy is not None:
            self.proxy.stop()
        if self.engine is not None:
            self.engine.stop()
        write_state(self.paths, "failed" if failure else "stopped", error=failure, stopped=time.time(), in_flight=0,
                    **{k: v for k, v in counters.items() if k != "in_flight"})

    def stop(self, *_args) -> None:
        self.stop_event.set()


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("python -m lorafull.judge.serve", __doc__,
                            "python -m lorafull.judge.serve studies/demo/judge_server/<key> --idle-exit-s 600")
    parser.add_argument("server_dir", type=Path, help="STUDY_DIR/judge_server/<key> (launch.grid writes it)")
    parser.add_argument("--idle-exit-s", type=float, default=None,
                        help="stop after this many seconds without a request (hand-submitted server jobs)")
    args = parser.parse_args(argv)
    try:
        judge = ServedJudge(ServerPaths(args.server_dir))
    except (OSError, TypeError, KeyError, ValueError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 1
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, judge.stop)
    return judge.run(args.idle_exit_s)


if __name__ == "__main__":
    sys.exit(main())
