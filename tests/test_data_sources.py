"""data.train beyond JSON files: a parquet file, a save_to_disk folder and a hub dataset read from the
datasets cache tokenize to exactly the samples of the equivalent jsonl, and train to the same losses."""
from __future__ import annotations

import numpy as np
import pytest

from helpers.common import alpaca_records, write_jsonl
from helpers.data_sources import cache_hub_dataset, write_parquet, write_saved_dataset
from lorafull.config import load_run_config
from lorafull.data.dataset import build_dataset
from lorafull.data.read import DataError
from lorafull.models.load import load_tokenizer
from lorafull.runs import read_jsonl
from lorafull.train import trainer as train

datasets = pytest.importorskip("datasets")

CONVERSATIONS = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"Say {w}."},
                                                   {"from": "assistant", "value": f"{w}!"},
                                                   {"from": "human", "value": "Again."},
                                                   {"from": "assistant", "value": f"{w} {w}"}]}
                 for i, w in enumerate(["cat", "dog", "sun", "猫", "狗", "moon"] * 4)]


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty datasets cache that load_dataset reads (HF_HUB_OFFLINE=1 comes from the conftest)."""
    cache = tmp_path / "hf-datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def sources(tmp_path, hub_cache, records, stem="train") -> dict[str, dict]:
    """data settings for the same records as jsonl, parquet, save_to_disk and hf:lorafull-test/<stem>."""
    jsonl = write_jsonl(tmp_path / f"{stem}.jsonl", records)
    cache_hub_dataset(hub_cache, f"lorafull-test/{stem}", jsonl, subset="sub")
    return {"jsonl": {"data.train": str(jsonl)},
            "parquet": {"data.train": str(write_parquet(tmp_path / f"{stem}.parquet", records))},
            "disk": {"data.train": str(write_saved_dataset(tmp_path / f"{stem}-saved", records))},
            "hub": {"data.train": f"hf:lorafull-test/{stem}", "data.subset": "sub", "data.split": "train"}}


def tokenized(run_dir):
    run = load_run_config(run_dir)
    ds = build_dataset(run, load_tokenizer(run.model.tokenizer))
    return [(ds[i]["input_ids"], ds[i]["labels"]) for i in range(len(ds))], ds.stats


@pytest.mark.parametrize("records,fmt", [(alpaca_records(48), "alpaca"), (CONVERSATIONS, "conversations")])
def test_every_source_tokenizes_to_the_samples_of_the_jsonl(tmp_path, hub_cache, make_run, records, fmt):
    by_kind = {kind: tokenized(make_run(kind, **settings))
               for kind, settings in sources(tmp_path, hub_cache, records, fmt).items()}
    reference, ref_stats = by_kind.pop("jsonl")
    assert len(reference) == len(records) and ref_stats["format"] == fmt
    for kind, (samples, stats) in by_kind.items():
        assert len(samples) == len(reference), kind
        for (ids, labels), (ref_ids, ref_labels) in zip(samples, reference):
            assert np.array_equal(ids, ref_ids) and np.array_equal(labels, ref_labels), kind
        assert stats["format"] == fmt and stats["samples"] == ref_stats["samples"], kind


def test_every_source_trains_to_the_losses_of_the_jsonl(tmp_path, hub_cache, make_run):
    losses = {}
    for kind, settings in sources(tmp_path, hub_cache, alpaca_records(64)).items():
        run_dir = make_run(kind, **settings, **{"train.max_steps": 12})
        assert train.main([str(run_dir)]) == 0
        losses[kind] = [r["loss"] for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r and "step" in r
                        and "event" not in r]
    assert len(losses["jsonl"]) == 12
    for kind in ("parquet", "disk", "hub"):  # CPU fp32 is deterministic: the same tokens give the same losses
        assert losses[kind] == losses["jsonl"], kind


def test_errors_name_the_file_and_row_or_the_key(tmp_path, hub_cache, make_run):
    records = alpaca_records(6)
    del records[2]["output"]
    records[2]["answer"] = "moved"
    bad = write_parquet(tmp_path / "bad.parquet", records)
    with pytest.raises(DataError, match=rf"^{bad}:3: missing field 'output'$"):
        tokenized(make_run("bad", **{"data.train": str(bad), "data.format": "alpaca"}))

    jsonl = write_jsonl(tmp_path / "ok.jsonl", alpaca_records(6))
    cache_hub_dataset(hub_cache, "lorafull-test/ok", jsonl)
    with pytest.raises(DataError, match=r"^data\.split / data\.subset: hf:lorafull-test/ok\[test\]: .*split"):
        tokenized(make_run("split", **{"data.train": "hf:lorafull-test/ok", "data.split": "test"}))
    with pytest.raises(DataError, match=r"^data\.train: hf:lorafull-test/absent\[train\]: not in the datasets "
                                        r"cache .*load_dataset\('lorafull-test/absent', None, split='train'\)"):
        tokenized(make_run("absent", **{"data.train": "hf:lorafull-test/absent"}))
    (tmp_path / "plain-folder").mkdir()
    with pytest.raises(DataError, match=r"^data\.train: .*plain-folder: a folder that datasets' save_to_disk"):
        tokenized(make_run("folder", **{"data.train": str(tmp_path / "plain-folder")}))
