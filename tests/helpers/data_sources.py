"""The same records in the formats researchers hold them: a parquet file, a `datasets` save_to_disk folder,
and a hub dataset as a login node's `load_dataset` leaves it in the datasets cache (built here offline)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional


def write_parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=max(1, len(records) // 3))
    return path


def write_saved_dataset(folder: Path, records: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(records).save_to_disk(str(folder))
    return folder


def cache_hub_dataset(cache_dir: Path, repo_id: str, jsonl: Path, subset: Optional[str] = None) -> Path:
    """Put jsonl's rows into cache_dir as datasets keeps a downloaded hub dataset (OWNER___NAME/<config>/
    <version>/<hash>/NAME-<split>.arrow), so that load_dataset(repo_id, subset, split="train") finds it with
    HF_HUB_OFFLINE=1. Built with the json builder under the dataset's own name, then moved into place."""
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.json.json import Json

    owner, name = repo_id.split("/")
    config = subset or "default"
    builder = Json(cache_dir=str(cache_dir / ".build"), dataset_name=name, config_name=config, hash="local",
                   data_files=DataFilesDict.from_patterns({"train": [jsonl.name]}, base_path=str(jsonl.parent)))
    builder.download_and_prepare()
    built = Path(builder.cache_dir).parents[1]  # .../<config>-<data files hash>/<version>/<hash>
    dest = cache_dir / f"{owner}___{name}" / config
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(built), str(dest))
    return dest
