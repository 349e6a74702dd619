"""How long naming the runs of a study takes when its data file is large: the first planning hashes the
file's content, later ones read the hash from the cache (path + size + mtime).

    python bench/bench_signatures.py [--mb 512] [--runs 12]

Writes an alpaca-style data file of about --mb megabytes (BELLE's 4M-sample file is a few GB: scale the
first timing by size) and a grid of --runs LoRA runs reading it, then times `python -m lorafull.config
STUDY` (load, check, sign and print every run) as a user types it: cold (no hash cache), warm (the
cache file in data.cache_dir), and after the file was edited in place (hashed again).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def write_data(path: Path, megabytes: int) -> int:
    line = json.dumps({"instruction": "Summarise the text below in one sentence. " * 4, "input": "x" * 300,
                       "output": "A short summary of the text. " * 3}, ensure_ascii=False) + "\n"
    n = megabytes * (1 << 20) // len(line.encode())
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n):
            f.write(line)
    return n


def timed(study: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lorafull.config", str(study)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=512)
    ap.add_argument("--runs", type=int, default=12)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = write_data(root / "train.jsonl", args.mb)
        (root / "tok").mkdir()
        (root / "tok" / "tokenizer.json").write_text("{}")
        study = {"study": {"name": "bench", "output_dir": str(root / "study")},
                 "base": {"model": {"name_or_path": "scratch:tiny-llama", "tokenizer": str(root / "tok")},
                          "data": {"train": str(root / "train.jsonl")}},
                 "grid": {"train.lr": [1e-4 * (i + 1) for i in range(args.runs)]}}
        path = root / "s.yaml"
        path.write_text(yaml.safe_dump(study))
        cold = timed(path)
        warm = timed(path)
        with open(root / "train.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"instruction": "one more", "output": "sample"}) + "\n")
        edited = timed(path)
        print(f"{samples:,} samples, {args.mb} MB, {args.runs} runs: cold {cold:.2f} s, warm {warm:.2f} s, "
              f"after an edit {edited:.2f} s (warm minus cold = the hashing the cache saves)")


if __name__ == "__main__":
    main()
