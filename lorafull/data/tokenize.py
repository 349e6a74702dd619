"""Tokenizing training records into the cache's arrays: batches of records -> token ids, label masks and
per-sample lengths, written chunk by chunk (memory flat in the file size). Used by the cache for one
process and by lorafull.data.parallel for each byte range, so both write the same arrays."""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from lorafull.data.read import DataError, iter_records, to_sample
from lorafull.data.template import EOS, prefix_for, segments, special_prefix_ids

BATCH_SAMPLES = 8192
ARRAYS = {"input_ids": np.int32, "label_mask": np.uint8, "offsets": np.int64, "label_counts": np.int32,
          "truncated": np.uint8}


def _batches(path: Path, fmt: str, counts: dict, records=None) -> Iterable[tuple[list, list[int], int]]:
    """Stream (samples, their line numbers, bytes read) in batches; count skipped empty answers.
    records: (line, record, bytes read) of a part of the file (lorafull.data.parallel); default all."""
    samples, lines, done = [], [], 0
    for lineno, rec, done in (iter_records(path) if records is None else records):
        sample = to_sample(rec, fmt, f"{path}:{lineno}")
        if sample is None:
            counts["skipped_empty"] += 1
            continue
        samples.append(sample)
        lines.append(lineno)
        if len(samples) == BATCH_SAMPLES:
            yield samples, lines, done
            samples, lines = [], []
    if samples:
        yield samples, lines, done


def _encode_texts(tokenizer, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if getattr(tokenizer, "is_fast", False) and backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return [e.ids for e in encode(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenize_batch(samples: list, lines: list[int], path: Path, tokenizer, template: str,
                   max_length: Optional[int], prefix_ids: list[int]) -> dict[str, np.ndarray]:
    """Token ids, label mask and per-sample arrays for one batch. max_length=None: no truncation."""
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise DataError("model.tokenizer: the tokenizer has no EOS token; answers must end with one")
    segs = [segments(s, tokenizer, template, f"{path}:{line}") for s, line in zip(samples, lines)]
    texts = [text for sample in segs for text, _ in sample if text is not EOS]
    encoded = iter(_encode_texts(tokenizer, texts))
    eos = [eos_id]
    pieces: list[list[int]] = []  # one list of ids per segment (and per special prefix), in order
    flags: list[bool] = []
    first_piece = np.empty(len(segs), np.int64)
    for i, sample in enumerate(segs):
        first_piece[i] = len(pieces)
        pieces.append(prefix_for(sample[0][0], tokenizer, prefix_ids))
        flags.append(False)
        for text, trained in sample:
            pieces.append(eos if text is EOS else next(encoded))
            flags.append(trained)
    piece_lens = np.fromiter(map(len, pieces), np.int64, count=len(pieces))
    ids = np.fromiter(itertools.chain.from_iterable(pieces), np.int32, count=int(piece_lens.sum()))
    mask = np.repeat(np.array(flags, np.uint8), piece_lens)
    sample_lens = np.add.reduceat(piece_lens, first_piece) if len(pieces) else np.zeros(0, np.int64)

    truncated = np.zeros(len(segs), np.uint8)
    if max_length is not None and len(ids):
        starts = np.cumsum(sample_lens) - sample_lens
        pos_in_sample = np.arange(len(ids)) - np.repeat(starts, sample_lens)
        keep_token = pos_in_sample < max_length
        truncated = (sample_lens > max_length).astype(np.uint8)
        ids, mask = ids[keep_token], mask[keep_token]
        sample_lens = np.minimum(sample_lens, max_length)
    starts = np.cumsum(sample_lens) - sample_lens
    label_counts = np.add.reduceat(mask.astype(np.int64), starts) if len(ids) else np.zeros(len(segs), np.int64)
    label_counts[sample_lens == 0] = 0  # reduceat quirk on empty slices (never empty in practice)
    # a prompt that fills max_length leaves nothing to learn: drop the sample (counted)
    keep = label_counts > 0
    if not keep.all():
        token_keep = np.repeat(keep, sample_lens)
        ids, mask = ids[token_keep], mask[token_keep]
        sample_lens, label_counts, truncated = sample_lens[keep], label_counts[keep], truncated[keep]
    return {"input_ids": ids, "label_mask": mask, "lengths": sample_lens, "label_counts": label_counts.astype(np.int32),
            "truncated": truncated, "dropped": int((~keep).sum())}


def tokenize_stream(batches, path: Path, tokenizer, template: str, max_length: int, packing: bool, out: Path,
                    counts: dict, progress=None) -> dict:
    """Tokenize a stream of batches into the ARRAYS files under `out` (offsets start at 0). Returns the
    counts; `counts` (skipped_empty, skipped_too_long) is updated in place. Memory: one batch at a time."""
    prefix_ids = special_prefix_ids(tokenizer)
    files = {name: open(out / f"{name}.{np.dtype(dtype).name}", "wb") for name, dtype in ARRAYS.items()}
    n_samples = n_tokens = n_labels = n_truncated = 0
    files["offsets"].write(np.zeros(1, np.int64).tobytes())
    try:
        for samples, lines, done_bytes in batches:
            # packing keeps samples whole: they are cut into max_length blocks after concatenation
            part = tokenize_batch(samples, lines, path, tokenizer, template, None if packing else max_length,
                                  prefix_ids)
            files["input_ids"].write(part["input_ids"].astype(np.int32, copy=False).tobytes())
            files["label_mask"].write(part["label_mask"].tobytes())
            files["offsets"].write((n_tokens + np.cumsum(part["lengths"])).astype(np.int64).tobytes())
            files["label_counts"].write(part["label_counts"].tobytes())
            files["truncated"].write(part["truncated"].tobytes())
            n_samples += len(part["lengths"])
            n_tokens += int(part["lengths"].sum())
            n_labels += int(part["label_counts"].sum())
            n_truncated += int(part["truncated"].sum())
            counts["skipped_too_long"] += part["dropped"]
            if progress is not None:
                progress(done_bytes)
    finally:
        for f in files.values():
            f.close()
    return {"samples": n_samples, "tokens": n_tokens, "label_tokens": n_labels, "truncated": n_truncated}
