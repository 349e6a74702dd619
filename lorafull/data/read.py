"""Reading training files: records streamed from .json / .jsonl, their format, and normalised samples.

Accepted files (one record per line, or one JSON array; BELLE ships "*.json" files that are really
JSON lines, so the first non-blank character decides, not the extension):

    alpaca         {"instruction": str, "input": str (optional), "output": str}
    conversations  {"id": ..., "conversations": [{"from": "human"|"assistant", "value": str}, ...]}
                   (BELLE multi-turn; "user"/"gpt" and a leading "system" message are accepted too)
    text           {"text": str}   plain text for pre-training: every token is trained

Beyond JSON files (the Source class below; records read through pyarrow / `datasets`, rows counted from 1
where a JSON file counts lines): a `.parquet` file, a folder written by `datasets`' `save_to_disk`, and a
hub dataset `hf:OWNER/NAME` (with data.subset and data.split) read from the `datasets` cache, which a login
node fills (`python -c "import datasets; datasets.load_dataset('OWNER/NAME', SUBSET, split=SPLIT)"`) and
a compute node reads with HF_HUB_OFFLINE=1.

A record becomes a `Sample`: an optional system text plus turns (question, answer); a text record is
one turn with no question. Bad input stops with a DataError naming file:line (and the field); an
empty answer is not an error -- the sample is skipped and counted by the caller.
"""
from __future__ import annotations

import codecs
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from lorafull.config.schema import DataFormat
from lorafull.runs import iter_json_lines

FORMATS = tuple(f for f in typing.get_args(DataFormat) if f != "auto")  # the schema checks data.format at load
_HUMAN_ROLES = {"human": "human", "user": "human", "assistant": "assistant", "gpt": "assistant",
                "system": "system"}
_CHUNK_BYTES = 1 << 20


class DataError(ValueError):
    """Bad training data or data settings; the message names the file:line (and field) or the key."""


@dataclass
class Sample:
    turns: list[tuple[Optional[str], str]]  # (question or None for plain text, answer)
    system: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Streaming records with their line numbers
# ---------------------------------------------------------------------------------------------
def _first_char(path: Path) -> str:
    with open(path, "rb") as f:
        while True:
            chunk = f.read(4096)
            if not chunk:
                return ""
            stripped = chunk.lstrip(b" \t\r\n\xef\xbb\xbf")  # a UTF-8 BOM counts as blank
            if stripped:
                return chr(stripped[0])


def iter_records(path) -> Iterator[tuple[int, dict, int]]:
    """Yield (line number, record, bytes read from the file so far) for every record of a file; for a
    Source, (row number, record, rows read so far)."""
    if isinstance(path, Source):
        yield from path.records()
        return
    path = Path(path)
    first = _first_char(path)
    if first == "[":
        yield from _iter_json_array(path)
    elif first in ("{", ""):
        yield from _iter_jsonl(path)
    else:
        raise DataError(f"{path}:1: expected JSON lines (one object per line) or a JSON array, "
                        f"found {first!r}")


def _iter_jsonl(path: Path, start: int = 0, end: Optional[int] = None,
                first_lineno: int = 1) -> Iterator[tuple[int, dict, int]]:
    for lineno, rec, done_bytes in iter_json_lines(path, DataError, start=start, end=end, first_lineno=first_lineno):
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
        yield lineno, rec, done_bytes


def iter_jsonl_range(path: str | os.PathLike, start: int, end: int, first_lineno: int) -> Iterator[tuple[int, dict, int]]:
    """The records of the JSON-lines file's bytes [start, end) (line starts), the first on line first_lineno."""
    return _iter_jsonl(Path(path), start, end, first_lineno)


def is_jsonl(path: str | os.PathLike) -> bool:
    return _first_char(Path(path)) == "{"


def _iter_json_array(path: Path) -> Iterator[tuple[int, dict, int]]:
    """Stream the objects of one top-level JSON array without loading the file (RSS stays flat)."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8-sig")()
    with open(path, "rb") as f:
        buf, pos, line, eof, read_bytes = "", 0, 1, False, 0

        def refill() -> bool:  # append the next chunk; False at end of file
            nonlocal buf, pos, eof, read_bytes
            if eof:
                return False
            data = f.read(_CHUNK_BYTES)
            read_bytes += len(data)
            try:
                text = utf8.decode(data, final=not data)
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{line}: not UTF-8 text ({e.reason})") from None
            buf, pos = buf[pos:] + text, 0
            eof = not data
            return True

        def skip_blank() -> str:  # advance over whitespace, return the next char ("" at EOF)
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not refill():
                    return buf[pos] if pos < len(buf) else ""

        skip_blank()
        pos += 1  # the "[" (checked by the caller)
        first = True
        while True:
            c = skip_blank()
            if c == "]":
                return
            if c == "":
                raise DataError(f"{path}:{line}: the JSON array is not closed (file truncated?)")
            if not first:
                if c != ",":
                    raise DataError(f"{path}:{line}: malformed JSON array (expected ',' or ']', found {c!r})")
                pos += 1
                skip_blank()
            first = False
            while True:
                try:
                    rec, end = decoder.raw_decode(buf, pos)
                    break
                except json.JSONDecodeError as e:
                    if not refill():  # the object may continue in the next chunk; only at EOF is it bad
                        bad_line = line + buf.count("\n", pos, e.pos)
                        raise DataError(f"{path}:{bad_line}: malformed JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{line}: expected a JSON object, got {type(rec).__name__}")
            yield line, rec, read_bytes
            line += buf.count("\n", pos, end)
            pos = end


# ---------------------------------------------------------------------------------------------
# Sources beyond JSON files: parquet, save_to_disk folders, hub datasets from the datasets cache
# ---------------------------------------------------------------------------------------------
HUB_PREFIX = "hf:"
_ROWS_PER_BATCH = 4096


@dataclass(frozen=True)
class Source:
    """data.train that is not a JSON file. str() is what messages name, followed by :<row>."""

    spec: str  # the parquet file, the save_to_disk folder, or hf:OWNER/NAME
    split: str = "train"
    subset: Optional[str] = None

    @property
    def kind(self) -> str:
        return "hub" if self.spec.startswith(HUB_PREFIX) else "parquet" if Path(self.spec).is_file() else "disk"

    @property
    def stem(self) -> str:  # names the tokenized cache folder
        base = self.spec[len(HUB_PREFIX):].replace("/", "_") if self.kind == "hub" else Path(self.spec).stem
        return base + (f"_{self.subset}" if self.subset else "") + (f"_{self.split}" if self.kind == "hub" else "")

    name = stem

    def __str__(self) -> str:
        if self.kind != "hub":
            return self.spec
        return f"{self.spec}" + (f"/{self.subset}" if self.subset else "") + f"[{self.split}]"

    def dataset(self):
        """The rows as a datasets.Dataset (save_to_disk folder, hub dataset from the cache)."""
        import datasets

        if self.kind == "disk":
            loaded = datasets.load_from_disk(self.spec)
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise DataError(f"data.split: {self.spec} has no split {self.split!r} "
                                    f"(it has {', '.join(loaded)})")
                loaded = loaded[self.split]
            return loaded
        name = self.spec[len(HUB_PREFIX):]
        try:
            return datasets.load_dataset(name, self.subset, split=self.split)
        except ValueError as e:  # an unknown split or subset
            raise DataError(f"data.split / data.subset: {self}: {str(e).splitlines()[0]}") from None
        except (ConnectionError, FileNotFoundError) as e:
            raise DataError(f"data.train: {self}: not in the datasets cache and the hub is not reachable "
                            f"({type(e).__name__}); on a machine with internet run: python -c \"import datasets; "
                            f"datasets.load_dataset({name!r}, {self.subset!r}, split={self.split!r})\"") from None

    def data_files(self) -> list[Path]:
        """The files holding the rows (what the content hash reads)."""
        if self.kind == "parquet":
            return [Path(self.spec)]
        return sorted(Path(f["filename"]) for f in self.dataset().cache_files)

    def size(self) -> int:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(self.spec).metadata.num_rows
        return len(self.dataset())

    def records(self) -> Iterator[tuple[int, dict, int]]:
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            batches = (b.to_pylist() for b in pq.ParquetFile(self.spec).iter_batches(_ROWS_PER_BATCH))
        else:
            ds = self.dataset()
            batches = (ds[i:i + _ROWS_PER_BATCH] for i in range(0, len(ds), _ROWS_PER_BATCH))
            batches = ([dict(zip(b, row)) for row in zip(*b.values())] for b in batches)
        row = 0
        for batch in batches:
            for rec in batch:
                row += 1
                yield row, rec, row


def open_source(train: str, split: str = "train", subset: Optional[str] = None):
    """data.train -> a Path (a JSON file) or a Source; a missing file or folder is a DataError."""
    if train.startswith(HUB_PREFIX):
        if train.count("/") != 1 or train.endswith("/"):
            raise DataError(f"data.train: {train}: expected hf:OWNER/NAME")
        return Source(train, split, subset)
    path = Path(train)
    if path.is_dir():
        if not any((path / marker).exists() for marker in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise DataError(f"data.train: {path}: a folder that datasets' save_to_disk did not write")
        return Source(train, split, subset)
    if not path.is_file():
        raise DataError(f"data.train: {path}: no such file")
    return Source(train, split, subset) if path.suffix == ".parquet" else path


# ---------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------
def detect_format(record: dict, where: str) -> str:
    """The format of a file, from its first record."""
    if "conversations" in record:
        return "conversations"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "text" in record:
        return "text"
    keys = ", ".join(sorted(map(str, record))) or "none"
    raise DataError(f"{where}: cannot tell the data format from the first record (keys: {keys}); expected "
                    f"instruction/input/output (alpaca), conversations (BELLE) or text; or set data.format")


def first_record(path) -> tuple[int, dict]:
    for lineno, rec, _ in iter_records(path):
        return lineno, rec
    raise DataError(f"{path}: the file holds no records")


def _text_field(rec: dict, field: str, where: str, required: bool = True) -> str:
    if field not in rec or rec[field] is None:
        if required:
            raise DataError(f"{where}: missing field {field!r}")
        return ""
    value = rec[field]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # some alpaca files store numeric answers as numbers
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
    return value


def alpaca_question(instruction: str, input_text: str) -> str:
    """The question of an alpaca record: the instruction, then the input on its own line when given."""
    return f"{instruction}\n{input_text}" if input_text.strip() else instruction


def to_sample(rec: dict, fmt: str, where: str) -> Optional[Sample]:
    """A normalised sample, or None when an answer is empty (the caller counts it as skipped)."""
    if fmt == "alpaca":
        question = alpaca_question(_text_field(rec, "instruction", where), _text_field(rec, "input", where, False))
        answer = _text_field(rec, "output", where)
        return Sample([(question, answer)]) if answer.strip() else None
    if fmt == "text":
        text = _text_field(rec, "text", where)
        return Sample([(None, text)]) if text.strip() else None
    return _conversation(rec, where)  # "conversations": data.format's choices were checked at load


def _conversation(rec: dict, where: str) -> Optional[Sample]:
    messages = rec.get("conversations")
    if messages is None:
        raise DataError(f"{where}: missing field 'conversations'")
    if not isinstance(messages, list):
        raise DataError(f"{where}: field 'conversations' must be a list, got {type(messages).__name__}")
    system, turns, pending = None, [], []  # pending: human texts since the last assistant turn
    for i, msg in enumerate(messages):
        field = f"conversations[{i}]"
        if not isinstance(msg, dict):
            raise DataError(f"{where}: field {field!r} must be an object with 'from' and 'value'")
        role_raw = _text_field(msg, "from", f"{where}: {field}")
        role = _HUMAN_ROLES.get(role_raw.lower())
        if role is None:
            raise DataError(f"{where}: field '{field}.from' is {role_raw!r}; expected human or assistant")
        value = _text_field(msg, "value", f"{where}: {field}")
        if not isinstance(msg["value"], str):  # a number is no message: the file is not what it claims to be
            raise DataError(f"{where}: {field}: field 'value' must be a string, got "
                            f"{type(msg['value']).__name__} {msg['value']!r}")
        if role == "system":
            if turns or pending:
                raise DataError(f"{where}: field '{field}.from': a system message must come first")
            system = value
        elif role == "human":
            pending.append(value)
        else:
            if not value.strip():
                return None  # an empty answer: skip the whole conversation (counted as skipped_empty)
            turns.append(("\n".join(pending) if pending else None, value))
            pending = []
    # trailing human messages have no answer to train on; a conversation without answers is empty
    return Sample(turns, system) if turns else None
