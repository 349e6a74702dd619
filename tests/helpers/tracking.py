"""Readers of what the experiment trackers wrote, for the tracking tests: W&B's offline run file (its
Python package no longer ships a reader) and the MLflow file store of a study."""
from __future__ import annotations

import json
import struct
from pathlib import Path

# W&B's .wandb file: a 7-byte header (":W&B", magic 0xBEE1, version), then LevelDB-log records in 32 KiB
# blocks: crc32 (4 bytes), length (2, little-endian), type (1: full, 2: first, 3: middle, 4: last), payload.
_HEADER, _BLOCK, _RECORD_HEADER = 7, 32768, 7


def wandb_records(path: Path) -> list:
    """Every protobuf Record of an offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", path
    records, pos, pending = [], _HEADER, b""
    while pos + _RECORD_HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _RECORD_HEADER:  # the block's tail is padding
            pos += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _RECORD_HEADER])
        if length == 0 and kind == 0:
            pos += left_in_block
            continue
        pending += data[pos + _RECORD_HEADER:pos + _RECORD_HEADER + length]
        pos += _RECORD_HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_history(path: Path) -> dict[int, dict]:
    """step -> {key: value} of the history rows of an offline run file."""
    rows = {}
    for r in wandb_records(path):
        if r.WhichOneof("record_type") == "history":
            row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
            rows[int(row["_step"])] = row
    return rows


def wandb_config(path: Path) -> dict:
    """The run's config: the run record's own (set at init) updated by later config records."""
    out = {}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        updates = r.run.config.update if kind == "run" else r.config.update if kind == "config" else []
        out.update({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in updates})
    return out


def wandb_run_files(run_dir: Path) -> list[Path]:
    """The offline run files of a run, oldest job first."""
    return sorted((run_dir / "tracking" / "wandb").glob("offline-run-*/run-*.wandb"))


def mlflow_client(study_dir: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=(study_dir / "mlruns").resolve().as_uri())


def tensorboard_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value}, through TensorBoard's own reader (which applies a restart's purge)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tracking" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        out[tag] = {e.step: e.value for e in events}
        assert len(out[tag]) == len(events), f"{tag}: a step logged twice"
    return out
