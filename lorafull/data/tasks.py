"""Task-count sweeps (data.num_tasks): train on the records of k of the file's tasks, as He 2024 vary the
number of training tasks of a multi-task instruction set.

Library module (no command): lorafull.data.dataset calls task_subset_file when data.num_tasks is set.

The tasks are the distinct values of data.task_field; the k kept are the first k of one permutation of
the sorted task names seeded by train.seed, so with one seed the 8 tasks of a sweep lie inside its 16.
The kept records are written once, in file order, to a JSON-lines file beside the tokenized cache (named
by the source file's hash and the chosen tasks), which is then tokenized and sub-sampled as any file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from lorafull.data.read import DataError, iter_records


def task_of(rec: dict, field: str, where: str) -> str:
    if field not in rec:
        raise DataError(f"{where}: data.num_tasks: the record has no {field!r} field (set data.task_field)")
    return str(rec[field])


def chosen_tasks(names: list[str], num_tasks: int, seed: int) -> list[str]:
    """The first num_tasks of one seeded permutation of the sorted names (nested across num_tasks)."""
    names = sorted(set(names))
    if num_tasks > len(names):
        raise DataError(f"data.num_tasks: asks for {num_tasks} tasks but the file has {len(names)}")
    order = np.random.default_rng(seed).permutation(len(names))
    return sorted(names[i] for i in order[:num_tasks])


def task_subset_file(path: Path, field: str, num_tasks: int, seed: int, cache_dir: Path, file_hash: str) -> Path:
    """A JSON-lines file of the records of the chosen tasks (written once; atomic)."""
    names = [task_of(rec, field, f"{path}:{line}") for line, rec, _ in iter_records(path)]
    keep = set(chosen_tasks(names, num_tasks, seed))
    digest = hashlib.sha256(json.dumps([file_hash, field, sorted(keep)]).encode()).hexdigest()[:16]
    out = Path(cache_dir) / "task_subsets" / f"{path.stem}-{num_tasks}tasks-{digest}.jsonl"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for (_, rec, _), name in zip(iter_records(path), names):
            if name in keep:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out
