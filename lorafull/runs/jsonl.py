"""The JSON-lines files stages talk through: written whole line by whole line, flushed and fsynced, so
a crash loses at most the line being written; read back with file:line errors and a torn last line
dropped.

Library module (no command).
"""
from __future__ import annotations

import codecs
import json
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional


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


class BackgroundJsonlWriter:
    """JsonlWriter semantics (whole lines, flushed and fsynced) from a thread of its own: an fsync in
    the event loop would stall every request in flight. Lines that queue up while one fsync runs are
    written together and share the next (group commit), so the file keeps pace with the judge."""

    def __init__(self, path: Path):
        self._f = open(path, "a", encoding="utf-8")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._drain, name="scores-writer", daemon=True)
        self._thread.start()

    def write(self, obj: dict) -> None:
        self._queue.put(json.dumps(obj, ensure_ascii=False, default=str) + "\n")

    def _drain(self) -> None:
        while True:
            lines = [self._queue.get()]
            while True:
                try:
                    lines.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done = lines[-1] is None
            if self.error is None:
                try:
                    self._f.write("".join(line for line in lines if line is not None))
                    self._f.flush()
                    os.fsync(self._f.fileno())
                except OSError as e:  # disk full...: reported by close(); the cache keeps the replies
                    self.error = e
            if done:
                return

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._f.close()
        if self.error is not None:
            raise self.error

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
