"""The tokenized-data cache: a whole training file tokenized once, memory-mapped by every run and rank.

    CACHE_DIR/<file stem>-<key>/   meta.json          settings, counts, build id
                                   input_ids.int32    all tokens of all samples, back to back
                                   label_mask.uint8   1 = trained token, 0 = masked (label -100)
                                   offsets.int64      sample i = [offsets[i], offsets[i+1])
                                   label_counts.int32 trained tokens per sample
                                   truncated.uint8    1 = the sample was cut at max_length

<key> hashes the data file's content, the tokenizer (its vocab/merges, special tokens, chat
template), template, max_length, format and packing (packing keeps long samples whole; they are
cut into blocks later, so it tokenizes differently). Every num_samples subset indexes into the same
cache. The first process to arrive takes a file lock, builds into a temporary folder and renames it
into place; the others wait on the lock and then map the finished folder, so eight ranks and thirty
runs over one file tokenize it once.

Speed comes from tokenizing ~10k segments per call to the Rust tokenizer and assembling masks with
numpy; the file is streamed and written chunk by chunk, so memory stays flat whatever the file size.
A large JSON-lines file is split into byte ranges tokenized by data.num_proc processes (default: the
cores this process may use), whose parts are merged into the same arrays (lorafull.data.parallel).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from lorafull.data.read import DataError
from lorafull.runs import file_lock
from lorafull.data.template import special_prefix_ids
from lorafull.data.tokenize import ARRAYS, _batches, tokenize_stream  # noqa: F401 (ARRAYS: the cache's files)

CACHE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Identity of the inputs
# ---------------------------------------------------------------------------------------------
def file_sha256(path: Path, memo_dir: Path) -> str:
    """Content hash of a data file; memoised by (path, size, mtime, inode) so later runs skip re-reading."""
    st = path.stat()
    stamp = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}".encode()).hexdigest()[:32]
    memo = memo_dir / "file-hashes" / stamp
    if memo.exists():
        return memo.read_text().strip()
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{stamp}.{os.getpid()}.tmp")
    tmp.write_text(digest)
    os.replace(tmp, memo)
    return digest


def source_sha256(source, memo_dir: Path) -> str:
    """Content hash of data.train: a JSON or parquet file's bytes, or the arrow files behind a save_to_disk
    folder or a cached hub dataset (the same rows give the same hash wherever they are)."""
    if isinstance(source, Path):
        return file_sha256(source, memo_dir)
    h = hashlib.sha256(f"{source.kind}|{source.split if source.kind != 'parquet' else ''}".encode())
    for f in source.data_files():
        h.update(file_sha256(f, memo_dir).encode())
    return h.hexdigest()


def source_size(source) -> int:
    """What the progress bar counts: bytes of a JSON file, rows of a Source."""
    return source.stat().st_size if isinstance(source, Path) else source.size()


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of everything about a tokenizer that changes the ids: vocab, merges, normaliser,
    special tokens, the ids it adds in front, the chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if getattr(tokenizer, "is_fast", False) and backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    extra = {"special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
             "eos_id": tokenizer.eos_token_id, "prefix": special_prefix_ids(tokenizer),
             "chat_template": getattr(tokenizer, "chat_template", None)}
    h.update(json.dumps(extra, sort_keys=True, default=str, ensure_ascii=False).encode())
    return h.hexdigest()


def cache_key(file_hash: str, tokenizer_hash: str, template: str, max_length: int, fmt: str, packing: bool) -> dict:
    return {"version": CACHE_VERSION, "file_sha256": file_hash, "tokenizer": tokenizer_hash, "template": template,
            "max_length": max_length, "format": fmt, "packing": packing}


def key_name(stem: str, key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:40]
    return f"{safe}-{digest}"


# ---------------------------------------------------------------------------------------------
# Build once under a lock, then map
# ---------------------------------------------------------------------------------------------
def _rank() -> int:
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)


def _log(msg: str) -> None:
    if _rank() == 0:
        print(f"[lorafull.data] {msg}", file=sys.stderr, flush=True)


def ensure_cache(path: Path, fmt: str, tokenizer, template: str, max_length: int, packing: bool,
                 cache_dir: Path, key: dict, num_proc: int = 1) -> Path:
    """The folder of this key's cache, tokenizing the file first (with num_proc processes) if no process has yet."""
    folder = cache_dir / key_name(path.stem, key)
    if (folder / "meta.json").exists():
        return folder
    cache_dir.mkdir(parents=True, exist_ok=True)
    lock = cache_dir / f"{folder.name}.lock"
    with file_lock(lock, what=f"another process is tokenizing {path.name}", on_wait=_log):
        if (folder / "meta.json").exists():  # another process built it while we waited
            return folder
        for stale in cache_dir.glob(f"{folder.name}.tmp-*"):  # left by a killed builder (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cache_dir / f"{folder.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        tmp.mkdir()
        try:
            meta = _tokenize_file(path, fmt, tokenizer, template, max_length, packing, tmp, num_proc)
            meta["key"] = key
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
            os.rename(tmp, folder)  # atomic: readers see a complete folder or none
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def open_cache(folder: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, name -> read-only memmap) of a finished cache folder."""
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {}
    for name, dtype in ARRAYS.items():
        file = folder / f"{name}.{np.dtype(dtype).name}"
        # np.memmap refuses empty files; an empty array never happens for the per-sample files
        arrays[name] = np.memmap(file, dtype=dtype, mode="r") if file.stat().st_size else np.zeros(0, dtype)
    return meta, arrays


# ---------------------------------------------------------------------------------------------
# Tokenizing a file
# ---------------------------------------------------------------------------------------------
def _tokenize_file(path: Path, fmt: str, tokenizer, template: str, max_length: int, packing: bool,
                   out: Path, num_proc: int = 1) -> dict:
    """One process, or num_proc processes over byte ranges of a JSON-lines file (lorafull.data.parallel):
    either way the same arrays."""
    from tqdm import tqdm

    from lorafull.data.parallel import tokenize_parallel, use_parallel

    t0 = time.perf_counter()
    counts = {"skipped_empty": 0, "skipped_too_long": 0}
    if isinstance(path, Path) and use_parallel(path, num_proc):  # (parquet / datasets sources: one process)
        totals = tokenize_parallel(path, fmt, tokenizer, template, max_length, packing, out, counts, num_proc)
    else:
        show = _rank() == 0 or sys.stderr.isatty()
        bar = tqdm(total=source_size(path), unit="B" if isinstance(path, Path) else "row", unit_scale=True,
                   desc=f"tokenizing {path.name}",
                   disable=not show, mininterval=1.0 if sys.stderr.isatty() else 30.0)
        try:
            totals = tokenize_stream(_batches(path, fmt, counts), path, tokenizer, template, max_length, packing,
                                     out, counts, progress=lambda done: bar.update(done - bar.n))
        finally:
            bar.close()
        num_proc = 1
    if totals["samples"] == 0:
        raise DataError(f"{path}: no usable samples ({counts['skipped_empty']} with empty answers, "
                        f"{counts['skipped_too_long']} whose prompt fills data.max_length)")
    seconds = time.perf_counter() - t0
    _log(f"tokenized {totals['samples']} samples ({totals['tokens']} tokens) of {path.name} in {seconds:.1f} s "
         f"({num_proc} process{'es' if num_proc > 1 else ''})")
    return {**totals, **counts, "format": fmt, "source": str(path), "build_seconds": round(seconds, 3),
            "processes": num_proc, "build_id": uuid.uuid4().hex, "built_by": f"{socket.gethostname()}:{os.getpid()}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
