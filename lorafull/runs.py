"""The run folder: its file names, its status.json and the flushed jsonl files stages talk through.

Every stage reads and writes a run folder through these helpers, so the layout lives in one place:

    RUN_DIR/config.yaml  status.json  metrics.jsonl  checkpoints/  final/  responses.jsonl  scores.jsonl
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import fcntl
import json
import os
import re
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

# waiting: a stage handed its work to an outside service and is not done until it answers (a judge
# batch, eval.judge.mode: batch); neither running here nor failed
STATES = ("queued", "running", "waiting", "done", "failed")


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> "RunPaths":
        return cls(Path(run_dir))

    config = property(lambda s: s.root / "config.yaml")
    status = property(lambda s: s.root / "status.json")
    metrics = property(lambda s: s.root / "metrics.jsonl")
    checkpoints = property(lambda s: s.root / "checkpoints")
    final = property(lambda s: s.root / "final")
    merged = property(lambda s: s.root / "merged")
    responses = property(lambda s: s.root / "responses.jsonl")
    scores = property(lambda s: s.root / "scores.jsonl")
    analysis = property(lambda s: s.root / "analysis")
    judge_summary = property(lambda s: s.root / "judge_summary.json")
    judge_batch = property(lambda s: s.root / "judge_batch.json")  # the judge batch in flight (lorafull.judge.batch)
    judge_batch_input = property(lambda s: s.root / "judge_batch_input.jsonl")
    eval_fingerprint = property(lambda s: s.root / "eval_fingerprint.json")  # lorafull.config.fingerprint
    eval_history = property(lambda s: s.root / "eval_history")  # results of earlier eval settings
    logs = property(lambda s: s.root / "logs")


def path_inside(root: str | os.PathLike, path: str | os.PathLike, what: str) -> Path:
    """`path` (relative to `root`, or absolute) if it lies strictly below `root` once `..` are folded,
    else a one-line ValueError naming `what`: a run named ../../x, .. or /abs must not write outside its
    folder. Lexical on purpose: a run folder that the user made a symlink to scratch space stays allowed."""
    root = Path(os.path.normpath(os.path.abspath(root)))
    full = Path(os.path.normpath(os.path.join(root, path)))
    if "\n" in str(path) or root not in full.parents:
        raise ValueError(f"{what}: {str(path)!r} would lie outside {root}")
    return full


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str))
    os.replace(tmp, path)


def read_status(run_dir: str | os.PathLike) -> dict:
    path = RunPaths.of(run_dir).status
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


# ---------------------------------------------------------------------------------------------
# secrets: nothing this package writes (status, error lines, logs, scores, reports) may hold one
# ---------------------------------------------------------------------------------------------
REDACTED = "***"
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
# OpenAI-style keys, also when a server echoes one partly masked ("sk-proj-abc***xyz")
_KEY_SHAPE = re.compile(r"\bsk-[A-Za-z0-9_*.-]{6,}")
_registered: set[str] = set()


def register_secret(value: str) -> None:
    """Redact `value` from now on, whatever variable it came from (the judge key's api_key_env may be
    named anything)."""
    if value and len(value) >= 4:
        _registered.add(value)


def _secret_values() -> list[str]:
    from_env = {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 4}
    return sorted(from_env | _registered, key=len, reverse=True)  # longest first: no partial leftovers


def redact(text: str) -> str:
    """`text` with every secret value replaced by ***: registered ones, the value of each environment
    variable whose name contains KEY, TOKEN, SECRET or PASSWORD, and anything shaped like an API key."""
    if not text:
        return text
    for value in _secret_values():
        text = text.replace(value, REDACTED)
    return _KEY_SHAPE.sub(REDACTED, text)


def redact_obj(obj: Any) -> Any:
    """redact() applied to every string inside dicts and lists (a status, a jsonl row)."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


def write_status(run_dir: str | os.PathLike, state: str, stage: str = "train", error: Optional[str] = None,
                 **extra) -> dict:
    """Update status.json. `state` is the state of the whole run (queued|running|waiting|done|failed);
    `stage` names what it refers to (train, generate, judge). Earlier keys are kept."""
    assert state in STATES, state
    status = read_status(run_dir)
    status.update(extra)
    status.update({"state": state, "stage": stage, "error": error, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")})
    stages = status.setdefault("stages", {})
    stages[stage] = state
    status = redact_obj(status)
    write_json_atomic(RunPaths.of(run_dir).status, status)
    return status


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


def error_line(exc: BaseException) -> str:
    """One line naming what went wrong (file:line of a bad input is in the message itself)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact(f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__)


def error_detail(exc: BaseException) -> str:
    return redact("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[-4000:])


class JsonlWriter:
    """Appends one JSON object per line and flushes it: a crash loses at most the line being written."""

    def __init__(self, path: str | os.PathLike, mode: str = "a"):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, mode, encoding="utf-8")

    def write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def iter_json_lines(path: str | os.PathLike, error: Callable[[str], Exception] = ValueError,
                    skip_torn_tail: bool = False, start: int = 0, end: Optional[int] = None,
                    first_lineno: int = 1) -> Iterator[tuple[int, Any, int]]:
    """Yield (line number, parsed value, bytes of the file read so far) for each non-blank line of a
    JSON-lines file; the byte count feeds progress bars over big files. A UTF-8 BOM is ignored (some
    editors write one). A line that is not UTF-8 or not JSON raises `error` naming file:line --
    unless skip_torn_tail and it lacks its newline: only the last line can, and such a line is a
    write cut short by a crash, so it is dropped (the writer will write it again).
    start / end / first_lineno: only the lines in bytes [start, end) (both at line starts), the first
    being line first_lineno -- one process's share of a big file."""
    path = Path(path)
    bytes_read = start
    with open(path, "rb") as f:  # bytes: lines split on \n only, never on U+2028 inside a JSON string
        f.seek(start)
        for lineno, raw in enumerate(f, first_lineno):
            if end is not None and bytes_read >= end:
                return
            bytes_read += len(raw)
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                if skip_torn_tail and not raw.endswith(b"\n"):
                    return
                if isinstance(e, UnicodeDecodeError):
                    raise error(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
                raise error(f"{path}:{lineno}: malformed JSON line: {e.msg} (column {e.colno})") from None
            yield lineno, value, bytes_read


def read_jsonl(path: str | os.PathLike, skip_torn_tail: bool = True) -> Iterator[dict]:
    """Yield objects from a jsonl file this package wrote (none when the file does not exist yet).
    A last line cut by a crash is skipped; a bad line elsewhere is an error naming file:line."""
    path = Path(path)
    if not path.exists():
        return
    for _, obj, _ in iter_json_lines(path, skip_torn_tail=skip_torn_tail):
        yield obj


def repair_jsonl_tail(path: str | os.PathLike) -> None:
    """Drop a torn last line (no newline) left by a crash, so appending continues cleanly."""
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def command_parser(prog: str, doc: str, *examples: str) -> argparse.ArgumentParser:
    """The parser of a `python -m` command: --help prints the module's summary (its docstring's first
    paragraph), the arguments and example command lines, and touches nothing."""
    return argparse.ArgumentParser(prog=prog, description=doc.strip().split("\n\n")[0],
                                   epilog="example" + ("s" if len(examples) > 1 else "") + ":\n"
                                   + "\n".join(f"  {e}" for e in examples),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def not_a_run_folder(run_dir: str | os.PathLike) -> Optional[str]:
    """Why `run_dir` is not a run folder (one line), or None when it holds a config.yaml: a command
    given a mistyped folder refuses before it writes anything (no status.json, no logs/)."""
    path = Path(run_dir)
    if RunPaths.of(path).config.is_file():
        return None
    why = "no such folder" if not path.exists() else "no config.yaml in it"
    return f"{path}: not a run folder ({why}; launch.grid writes run folders as STUDY_DIR/runs/<run>/)"


def run_stage_cli(stage: str, doc: str, run: Callable[..., Any], describe: Callable[[Path, Any], str],
                  argv: Optional[list[str]] = None,
                  failed_stage: Optional[Callable[[Path], str]] = None) -> int:
    """The command line shared by the stages that work on one run folder:
    `python -m lorafull.<stage> RUN_DIR [--no-progress]`. Calls run(RUN_DIR, progress=...) and prints
    describe(RUN_DIR, its result). A folder without config.yaml is refused (exit 2, nothing written).
    On any error: status.json says failed (for `stage`, or for failed_stage(RUN_DIR) when given), ONE
    line on stderr, exit code 1 -- the launcher shows that line."""
    parser = command_parser(f"python -m lorafull.{stage}", doc, f"python -m lorafull.{stage} studies/demo/runs/pretrain")
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (STUDY_DIR/runs/<run>/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs of batch jobs)")
    args = parser.parse_args(argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        result = run(args.run_dir, progress=not args.no_progress)
    except Exception as e:  # noqa: BLE001 -- one line on stderr, the status says failed
        msg = error_line(e)
        write_status(args.run_dir, "failed", stage=failed_stage(args.run_dir) if failed_stage else stage, error=msg)
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(describe(args.run_dir, result))
    return 0
