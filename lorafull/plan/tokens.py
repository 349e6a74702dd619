"""Tokens a run trains on: samples x tokens per sample x epochs (train.max_tokens replaces epochs;
capped by train.max_steps; a cooldown branch costs its cooldown only, its trunk the steps up to the
last branch point).

Library module (no command): lorafull.plan.estimate uses it.

Tokens per sample, first match wins:
- plan.avg_tokens_per_sample: a number, or a mapping whose entry for the run's name or its data file
  (full path or file name) is used;
- counted: SAMPLE_RECORDS records drawn at random (a fixed seed: the same file gives the same count)
  from the data file and tokenized with the run's tokenizer (bytes / 3 without one). A JSON-lines file
  over COUNT_LINES_MAX_BYTES is sampled by seeking to random byte offsets, so a 4M-line file costs
  seconds, not a read-through; a JSON array (no line structure to seek in) is read from its start;
- assumed: max_length / 2, and the row says so.
"""
from __future__ import annotations

import functools
import json
import math
import os
import random
from pathlib import Path
from typing import Optional

from lorafull.config import RunConfig, Study
from lorafull.config.branches import branch_points, branch_step
from lorafull.plan.params import tokenizer_file

SAMPLE_RECORDS = 2000  # records tokenized to estimate tokens per sample
SAMPLE_SEED = 1234  # fixed: the plan of a file does not change between calls
COUNT_LINES_MAX_BYTES = 256 * 1024 ** 2  # larger files: records estimated from the sampled lines' size
BYTES_PER_TOKEN = 3.0  # without a tokenizer: ~3 UTF-8 bytes per token (English ~4, Chinese ~3 per char)


def _text_of(rec: dict, fmt: str, where: str) -> Optional[str]:
    from lorafull.data.read import to_sample

    sample = to_sample(rec, fmt, where)
    if sample is None:
        return None
    return "".join((f"Human: {q}\n\nAssistant: " if q is not None else "") + a + " " for q, a in sample.turns)


def _sampled_lines(path: str, size: int) -> list[tuple[int, bytes]]:
    """(byte offset, line) of up to SAMPLE_RECORDS distinct lines at seeded random offsets."""
    rng = random.Random(SAMPLE_SEED)
    seen, out = set(), []
    with open(path, "rb") as f:
        for _ in range(SAMPLE_RECORDS * 2):
            if len(out) >= SAMPLE_RECORDS:
                break
            offset = rng.randrange(size)
            f.seek(offset)
            if offset:
                f.readline()  # the rest of the line the offset fell into
            start = f.tell()
            line = f.readline()
            if start in seen or not line.strip():
                continue
            seen.add(start)
            out.append((start, line))
    return out


def _count_lines(path: str) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _indexed_lines(path: str, records: int) -> list[tuple[int, bytes]]:
    """(line number, line) of SAMPLE_RECORDS lines drawn uniformly by a seeded generator (a second pass)."""
    wanted = set(random.Random(SAMPLE_SEED).sample(range(records), min(records, SAMPLE_RECORDS)))
    with open(path, "rb") as f:
        return [(i + 1, line) for i, line in enumerate(f) if i in wanted]


def _jsonl_texts(path: str, fmt: str, size: int) -> tuple[list[str], int]:
    """(sampled texts, records in the file) of a JSON-lines file. Up to COUNT_LINES_MAX_BYTES the file
    is read through (lines counted, then a uniform sample); a larger one is sampled at random byte
    offsets, which favours lines after long ones: unbiased for a shuffled file, not for a sorted one."""
    from lorafull.data.read import detect_format, first_record

    if fmt == "auto":
        fmt = detect_format(first_record(path)[1], f"{path}:1")
    if size <= COUNT_LINES_MAX_BYTES:
        records = _count_lines(path)
        lines = _indexed_lines(path, records)
    else:
        lines = _sampled_lines(path, size)
        records = int(size / max(sum(len(line) for _, line in lines) / max(len(lines), 1), 1))
    texts = [t for where, line in lines if line.strip()
             for t in [_text_of(json.loads(line), fmt, f"{path}:{where}")] if t is not None]
    return texts, records


def _array_texts(path: str, fmt: str) -> tuple[list[str], int]:
    """(texts of the first records, records) of a JSON array file."""
    from lorafull.data.read import detect_format, iter_records

    size, texts, n, last_bytes = os.path.getsize(path), [], 0, 0
    for lineno, rec, done_bytes in iter_records(path):
        if fmt == "auto":
            fmt = detect_format(rec, f"{path}:{lineno}")
        n += 1
        if n <= SAMPLE_RECORDS:
            text = _text_of(rec, fmt, f"{path}:{lineno}")
            texts += [text] if text is not None else []
            last_bytes = done_bytes
        elif size > COUNT_LINES_MAX_BYTES:  # too big to read through: extrapolate from the mean size
            return texts, int(size / max(last_bytes / SAMPLE_RECORDS, 1))
    return texts, n


@functools.lru_cache(maxsize=64)
def file_stats(path: str, fmt: str, tokenizer: Optional[str], max_length: int, mtime_ns: int = 0) -> dict:
    """{"records", "tokens_per_sample" (mean, each capped at max_length), "counted_with", "sampled"}."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head[:1] == b"[":
        texts, records = _array_texts(path, fmt)
    else:
        texts, records = _jsonl_texts(path, fmt, size)
    tok = None
    if tokenizer:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(tokenizer)
    counts = [len(e.ids) for e in tok.encode_batch(texts)] if tok else [len(t.encode()) / BYTES_PER_TOKEN
                                                                       for t in texts]
    lengths = [min(c, max_length) for c in counts]
    return {"records": records, "tokens_per_sample": sum(lengths) / len(lengths) if lengths else None,
            "counted_with": "tokenizer" if tok else "bytes/3", "sampled": len(lengths)}


def set_tokens_per_sample(run: RunConfig, study: Study) -> Optional[tuple[float, str]]:
    """plan.avg_tokens_per_sample for this run: (value, where it was set), or None."""
    value = study.plan.avg_tokens_per_sample
    if isinstance(value, (int, float)):
        return float(value), "plan.avg_tokens_per_sample"
    if isinstance(value, dict):
        data = run.data.train or ""
        for key in (run.name, data, Path(data).name):
            if key and key in value:
                return float(value[key]), f"plan.avg_tokens_per_sample[{key}]"
    return None


def _counted(run: RunConfig, study: Study, notes: list[str]) -> tuple[Optional[int], Optional[float], str]:
    data = run.data.train
    if not (data and Path(data).is_file()):
        return None, None, ""
    tok = tokenizer_file(run, study)
    try:
        stats = file_stats(data, run.data.format, str(tok) if tok else None, run.data.max_length,
                           os.stat(data).st_mtime_ns)
    except Exception as e:  # a bad file is the data stage's error to report; the plan goes on
        notes.append(f"cannot read {data}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return None, None, ""
    return stats["records"], stats["tokens_per_sample"], f"counted ({stats['counted_with']})"


def _branch_epochs(run: RunConfig, samples: float, per_sample: float, notes: list[str]) -> Optional[float]:
    """The epochs a trunk or a cooldown branch trains (lorafull.config.branches): a trunk to its last
    branch's cooldown start, a branch its cooldown only; each budget's steps from tokens per step."""
    tc = run.train
    if not (tc.branch_of or tc.branch_max_tokens):
        return None
    per_step = tc.global_batch_size * per_sample
    steps_of = lambda n: math.ceil(n / per_step)  # noqa: E731
    if tc.branch_of:
        total = steps_of(tc.max_tokens)
        start = branch_step(tc, total)
        steps = total - start
        notes.append(f"cooldown branch of {tc.branch_of}: trains steps {start}..{total} only (its cooldown)" if steps
                     else f"cooldown branch of {tc.branch_of}: ends at step {total}, inside its warmup: nothing to "
                          "cool down, its model is the trunk's there")
    else:
        steps = max(branch_points(tc, steps_of).values())
        notes.append(f"trunk of {len(tc.branch_max_tokens)} cooldown branches: trains to step {steps} "
                     "(the last branch's cooldown start) at the stable lr")
    return steps / max(1, samples // tc.global_batch_size)


def token_estimate(run: RunConfig, study: Study) -> dict:
    """{"samples", "tokens_per_sample", "tokens_source", "tokens", "epochs", "notes"} for one run."""
    notes: list[str] = []
    records, counted, how = _counted(run, study, notes)
    given = set_tokens_per_sample(run, study)
    if given is not None:
        per_sample, source = given
    elif counted is not None:
        per_sample, source = counted, how
    else:
        per_sample, source = run.data.max_length / 2, "assumed max_length/2"
        where = run.data.train or "no data.train"
        notes.append(f"tokens/sample assumed {per_sample:g} (max_length/2): {where} is not readable here; "
                     f"set plan.avg_tokens_per_sample")
    samples = run.data.num_samples
    tc = run.train
    budget = tc.max_tokens or max(tc.branch_max_tokens, default=None)  # a trunk: its longest branch's
    if samples is None:  # the file's records; else a token budget alone sizes the run (one pass over it)
        samples = records if records is not None or budget is None else budget / per_sample
    elif records is not None:
        samples = min(samples, records)
    epochs = tc.epochs
    if samples is None:
        notes.append("unknown number of samples: set data.num_samples")
        return {"samples": None, "tokens_per_sample": per_sample, "tokens_source": source, "tokens": None,
                "epochs": epochs, "notes": notes}
    if run.data.packing:  # training packs the records into full blocks of max_length: those are the samples
        samples, per_sample = samples * per_sample / run.data.max_length, float(run.data.max_length)
    if tc.max_tokens is not None:  # as in training: a token budget replaces epochs, max_steps caps
        epochs = tc.max_tokens / max(samples * per_sample, 1)
    if tc.max_steps is not None:
        epochs = min(epochs, tc.max_steps * tc.global_batch_size / max(samples, 1))
    branch = _branch_epochs(run, samples, per_sample, notes)
    epochs = epochs if branch is None else branch
    return {"samples": samples, "tokens_per_sample": per_sample, "tokens_source": source,
            "tokens": samples * per_sample * epochs, "epochs": epochs, "notes": notes}
