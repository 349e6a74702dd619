"""Data files a study makes for itself (the demo's, the SmolLM2 miniature's): written atomically, and
recorded in DATA_DIR/manifest.json with what made them, so a rerun with the same recipe is a no-op."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_jsonl_atomic(path: Path, records: list[dict]) -> None:
    """One JSON object per line, under a temporary name first: a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def already_made(data_dir: Path, recipe: dict) -> bool:
    """True when data_dir's manifest says these files were made from exactly this recipe."""
    path = data_dir / "manifest.json"
    return path.exists() and json.loads(path.read_text()).get("make") == recipe


def write_files(data_dir: Path, recipe: dict, files: dict[str, list[dict]]) -> None:
    """Every file (relative path -> records), then the manifest, last: a crash in between makes again."""
    for rel, records in files.items():
        write_jsonl_atomic(data_dir / rel, records)
    tmp = data_dir / f".manifest.json.{os.getpid()}.tmp"
    counts = {rel: len(records) for rel, records in files.items()}
    tmp.write_text(json.dumps({"make": recipe, "files": counts}, indent=1, ensure_ascii=False))
    os.replace(tmp, data_dir / "manifest.json")
