"""Instruction data -> prompt template -> token ids, with prompt tokens masked (label -100).

    python -m lorafull.data RUN_DIR [--show N]     # tokenize (or map the cache) and print stats

    ds = build_dataset(run, tokenizer)    # run: RunConfig; ds[i] = {"input_ids", "labels"} int32 arrays
    batch = collate([ds[0], ds[1]], tokenizer.pad_token_id)   # torch tensors, right-padded
    format_prompt(question, tokenizer, "belle")               # the text before an answer (generation)

Settings (data section of a run): train (file), format (alpaca | conversations | text | auto),
num_samples (subset), num_tasks + task_field (the records of k tasks, lorafull.data.tasks, before
num_samples), max_length, template (belle | chat), packing, cache_dir.

Subsets: `num_samples: k` takes the first k entries of one fixed permutation of the file's usable
samples (seeded by train.seed), so with the same seed the 0.6M subset lies inside the 2M subset,
which lies inside the 4M one -- the scales of a study differ only by how much data they see.
The chosen samples keep their file order (the training loop shuffles).

Packing (`packing: true`): the subset's samples are concatenated (each ending in EOS) and cut into
max_length blocks; labels keep their masks. Attention is NOT reset at sample boundaries: a token
may attend to the end of the previous, unrelated sample in its block (the usual cheap packing; the
EOS between samples tells the model a new one starts). Long samples are split across blocks rather
than truncated.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

from lorafull.data.cache import cache_key, ensure_cache, open_cache, source_sha256, tokenizer_fingerprint
from lorafull.data.read import DataError, detect_format, first_record, open_source
from lorafull.data.template import encode_prompt, format_prompt
from lorafull.data.parallel import default_num_proc

__all__ = ["DataError", "TokenizedDataset", "build_dataset", "collate", "format_prompt", "encode_prompt",
           "subset_indices"]

IGNORE_INDEX = -100


def subset_indices(n_total: int, num_samples: Optional[int], seed: int) -> np.ndarray:
    """Sorted sample indices of a subset: a prefix of one fixed permutation (nested across sizes)."""
    if num_samples is None or num_samples == n_total:
        return np.arange(n_total, dtype=np.int64)
    if num_samples <= 0:
        raise DataError(f"data.num_samples: must be > 0, got {num_samples}")
    if num_samples > n_total:
        raise DataError(f"data.num_samples: asks for {num_samples} samples but the file has {n_total} usable ones")
    perm = np.random.default_rng(seed).permutation(n_total)
    return np.sort(perm[:num_samples])


class TokenizedDataset:
    """Samples (or packed blocks) of a memory-mapped token cache. Cheap to pickle: DataLoader workers
    and forked ranks re-open the maps instead of copying them."""

    def __init__(self, folder: Path, indices: np.ndarray, packing: bool, max_length: int):
        self.folder, self.indices, self.packing, self.max_length = Path(folder), indices, packing, max_length
        self._open()
        self.stats = self._stats()

    def _open(self) -> None:
        self.meta, arrays = open_cache(self.folder)
        self._ids, self._mask, self._offsets = arrays["input_ids"], arrays["label_mask"], arrays["offsets"]
        self._label_counts, self._truncated = arrays["label_counts"], arrays["truncated"]
        if self.packing:  # position of each chosen sample in the concatenated stream
            lens = self._offsets[self.indices + 1] - self._offsets[self.indices]
            self._stream = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_ids", "_mask", "_offsets", "_label_counts", "_truncated", "_stream"):
            state.pop(k, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()

    def _stats(self) -> dict:
        lens = self._offsets[self.indices + 1] - self._offsets[self.indices]
        stats = {"samples": int(len(self.indices)), "skipped_empty": int(self.meta["skipped_empty"]),
                 "truncated": int(self._truncated[self.indices].sum()), "tokens": int(lens.sum()),
                 "label_tokens": int(self._label_counts[self.indices].astype(np.int64).sum()),
                 "skipped_too_long": int(self.meta["skipped_too_long"]), "file_samples": int(self.meta["samples"]),
                 "format": self.meta["format"], "packing": self.packing}
        if self.packing:
            stats["blocks"] = len(self)
        return stats

    def __len__(self) -> int:
        if self.packing:
            return int(-(-int(self._stream[-1]) // self.max_length))
        return len(self.indices)

    def lengths(self) -> np.ndarray:
        """Tokens per item (for length-grouped batching or token budgets)."""
        if self.packing:
            out = np.full(len(self), self.max_length, np.int64)
            out[-1] = int(self._stream[-1]) - self.max_length * (len(self) - 1)
            return out
        return self._offsets[self.indices + 1] - self._offsets[self.indices]

    def _slice(self, sample: int, lo: int = 0, hi: Optional[int] = None):
        a = int(self._offsets[sample])
        b = int(self._offsets[sample + 1]) if hi is None else a + hi
        return self._ids[a + lo:b], self._mask[a + lo:b]

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} items")
        i %= n
        if not self.packing:
            ids, mask = self._slice(int(self.indices[i]))
        else:
            start, end = i * self.max_length, min((i + 1) * self.max_length, int(self._stream[-1]))
            first = int(np.searchsorted(self._stream, start, side="right")) - 1
            last = int(np.searchsorted(self._stream, end, side="left"))
            parts = [self._slice(int(self.indices[j]), max(start - int(self._stream[j]), 0),
                                 min(end, int(self._stream[j + 1])) - int(self._stream[j]))
                     for j in range(first, last)]
            ids = np.concatenate([p[0] for p in parts])
            mask = np.concatenate([p[1] for p in parts])
        ids = np.array(ids, dtype=np.int32)  # a private copy: the map stays read-only
        return {"input_ids": ids, "labels": np.where(mask.astype(bool), ids, IGNORE_INDEX).astype(np.int32)}


def build_dataset(run, tokenizer) -> TokenizedDataset:
    """The run's training data, tokenized (once per file/tokenizer/settings, cached) and sub-sampled."""
    data = run.data
    if not data.train:
        raise DataError("data.train: no training file set")
    path = open_source(data.train, data.split, data.subset)  # a JSON file's Path, or a parquet/datasets Source
    if data.template == "chat":
        format_prompt("", tokenizer, "chat")  # fail before reading the file when there is no chat template
    fmt = data.format
    if fmt == "auto":
        lineno, record = first_record(path)
        fmt = detect_format(record, f"{path}:{lineno}")
    cache_dir = Path(data.cache_dir) if data.cache_dir else Path.home() / ".cache" / "lorafull" / "tokenized"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"data.cache_dir: cannot create {cache_dir}: {e.strerror}") from None
    if data.num_tasks is not None:  # the records of k tasks, as their own file (lorafull.data.tasks)
        from lorafull.data.tasks import task_subset_file

        path = task_subset_file(path, data.task_field, data.num_tasks, run.train.seed, cache_dir,
                                source_sha256(path, cache_dir))
    key = cache_key(source_sha256(path, cache_dir), tokenizer_fingerprint(tokenizer), data.template,
                    data.max_length, fmt, bool(data.packing))
    folder = ensure_cache(path, fmt, tokenizer, data.template, data.max_length, bool(data.packing), cache_dir, key,
                          num_proc=data.num_proc or default_num_proc())
    n_total = int(np.memmap(folder / "label_counts.int32", dtype=np.int32, mode="r").shape[0])
    indices = subset_indices(n_total, data.num_samples, run.train.seed)
    return TokenizedDataset(folder, indices, bool(data.packing), data.max_length)


def collate(batch: list[dict], pad_id: Optional[int], pad_to_multiple_of: Optional[int] = None) -> dict:
    """Right-pad items to the longest in the batch: input_ids (pad_id), labels (-100), attention_mask."""
    import torch

    if not batch:
        raise ValueError("collate: empty batch")
    pad_id = 0 if pad_id is None else int(pad_id)
    longest = max(len(item["input_ids"]) for item in batch)
    if pad_to_multiple_of:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = np.full((len(batch), longest), pad_id, np.int64)
    labels = np.full((len(batch), longest), IGNORE_INDEX, np.int64)
    attention = np.zeros((len(batch), longest), np.int64)
    for row, item in enumerate(batch):
        n = len(item["input_ids"])
        input_ids[row, :n] = item["input_ids"]
        labels[row, :n] = item["labels"]
        attention[row, :n] = 1
    return {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels),
            "attention_mask": torch.from_numpy(attention)}


def main(argv: Optional[list[str]] = None) -> int:
    from lorafull.config import load_run_config
    from lorafull.runs import command_parser, not_a_run_folder
    from lorafull.models.load import load_tokenizer, resolve_run_reference

    parser = command_parser("python -m lorafull.data", __doc__, "python -m lorafull.data studies/demo/runs/pretrain --show 2")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder: its data section is tokenized (or the cache mapped)")
    parser.add_argument("--show", type=int, default=0, metavar="N",
                        help="print the first N items, masked tokens in [brackets]")
    args = parser.parse_args(argv)
    refusal = not_a_run_folder(args.run_dir)
    if refusal:
        print(f"error: {refusal}", file=sys.stderr)
        return 2
    try:
        run = load_run_config(args.run_dir)
        tokenizer = load_tokenizer(resolve_run_reference(run.model.tokenizer or run.model.name_or_path, Path(args.run_dir)))
        ds = build_dataset(run, tokenizer)
    except (DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(ds.stats)
    for i in range(min(args.show, len(ds))):
        item = ds[i]
        trained = tokenizer.decode(item["input_ids"][item["labels"] != IGNORE_INDEX])
        print(f"--- item {i}: {len(item['input_ids'])} tokens\n[{tokenizer.decode(item['input_ids'])}]\ntrained: {trained!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
