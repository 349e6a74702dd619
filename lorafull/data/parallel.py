"""Tokenizing one large JSON-lines file with several processes, into the same cache arrays one process writes.

Library module (no command): lorafull.data.cache calls it for files of PARALLEL_MIN_BYTES or more.

The file is cut into num_proc byte ranges at line starts. Each worker (a spawned process whose Rust
tokenizer runs one thread, so the processes do not fight over the cores) streams its range through
the serial code path (lorafull.data.cache.tokenize_stream) into its own part folder, one batch in
memory at a time. The parent then appends the parts in file order -- offsets shifted by the tokens
before them -- into the cache's files, in fixed-size chunks: the arrays are byte for byte those of the
serial build, and memory stays flat in the file size. A bad line is reported with its line number in
the whole file: the parent counts the newlines before each range first.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np

PARALLEL_MIN_BYTES = 32 * 1024 ** 2  # below this, starting processes costs more than it saves
_CHUNK = 16 * 1024 ** 2


def default_num_proc() -> int:
    """The cores this process may run on (Slurm's cpus-per-task; all of a node's outside Slurm)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_parallel(path: Path, num_proc: int, min_bytes: int | None = None) -> bool:
    from lorafull.data.read import is_jsonl

    limit = PARALLEL_MIN_BYTES if min_bytes is None else min_bytes
    return num_proc > 1 and path.stat().st_size >= max(limit, 1) and is_jsonl(path)


def split_ranges(path: Path, parts: int) -> list[tuple[int, int, int]]:
    """(start, end, first line number) of `parts` byte ranges that begin at line starts."""
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(size * k // parts, cuts[-1]))
            f.readline()  # to the start of the next line
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    ranges, line = [], 1
    with open(path, "rb") as f:
        for start, end in zip(cuts, cuts[1:]):
            ranges.append((start, end, line))
            f.seek(start)
            left = end - start
            while left > 0:  # count the newlines in the range: the next range's first line number
                block = f.read(min(_CHUNK, left))
                left -= len(block)
                line += block.count(b"\n")
    return [r for r in ranges if r[1] > r[0]]


def _worker_init() -> None:
    os.environ["RAYON_NUM_THREADS"] = "1"  # read when the tokenizer's thread pool starts, i.e. later
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def _tokenize_range(args) -> dict:
    from lorafull.data.tokenize import _batches, tokenize_stream
    from lorafull.data.read import iter_jsonl_range

    path, (start, end, first_line), fmt, tokenizer, template, max_length, packing, out = args
    out.mkdir()
    counts = {"skipped_empty": 0, "skipped_too_long": 0}
    records = iter_jsonl_range(path, start, end, first_line)
    totals = tokenize_stream(_batches(path, fmt, counts, records), path, tokenizer, template, max_length, packing,
                             out, counts)
    return {**totals, **counts}


def _append(src: Path, dst, shift: int = 0, skip_first: bool = False) -> None:
    """Append an int64 offsets file (shifted, its leading 0 dropped) or any file's bytes, chunk by chunk."""
    with open(src, "rb") as f:
        if not shift and not skip_first:
            shutil.copyfileobj(f, dst, _CHUNK)
            return
        if skip_first:
            f.seek(8)
        while block := f.read(_CHUNK):
            dst.write((np.frombuffer(block, np.int64) + shift).tobytes())


def merge_parts(parts: list[Path], out: Path, part_tokens: list[int]) -> None:
    from lorafull.data.tokenize import ARRAYS

    for name, dtype in ARRAYS.items():
        file_name = f"{name}.{np.dtype(dtype).name}"
        with open(out / file_name, "wb") as dst:
            if name == "offsets":
                dst.write(np.zeros(1, np.int64).tobytes())
            before = 0
            for part, tokens in zip(parts, part_tokens):
                if name == "offsets":
                    _append(part / file_name, dst, shift=before, skip_first=True)
                else:
                    _append(part / file_name, dst)
                before += tokens
    for part in parts:
        shutil.rmtree(part, ignore_errors=True)


def tokenize_parallel(path: Path, fmt: str, tokenizer, template: str, max_length: int, packing: bool, out: Path,
                      counts: dict, num_proc: int) -> dict:
    """Tokenize `path` with num_proc processes into `out`'s arrays; `counts` updated in place."""
    ranges = split_ranges(path, num_proc)
    parts = [out / f".part-{k:04d}" for k in range(len(ranges))]
    jobs = [(path, r, fmt, tokenizer, template, max_length, packing, part) for r, part in zip(ranges, parts)]
    with mp.get_context("spawn").Pool(len(jobs), initializer=_worker_init) as pool:
        results = pool.map(_tokenize_range, jobs, chunksize=1)
    merge_parts(parts, out, [r["tokens"] for r in results])
    for key in counts:
        counts[key] += sum(r[key] for r in results)
    return {k: sum(r[k] for r in results) for k in ("samples", "tokens", "label_tokens", "truncated")}
