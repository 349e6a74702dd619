"""Shared fixtures: a tiny tokenizer, tiny instruction data and run folders, built offline in the test session.
Plain helpers live in tests/helpers/."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.common import alpaca_records, need_slurm, write_jsonl, write_run_config  # noqa: E402


RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")


@pytest.fixture(autouse=True)
def _no_rank_variables_leak():
    """The rank variables as they were before each test: a test whose code sets them (detect_env does,
    for the ranks it starts) must not hand them to later tests' jobs (a Slurm job inherits them)."""
    saved = {k: os.environ.get(k) for k in RANK_VARIABLES}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_itemcollected(item):
    # Under pytest-xdist (tests/run.sh runs two workers) the Slurm-marked tests share one worker, one
    # after another: they share the local cluster's two nodes and count the user's queued jobs, so two of
    # them at once would wait on each other's jobs. The other worker meanwhile runs everything else.
    # (Marked as each test is collected: xdist reads the group marks in its collection_modifyitems.)
    if item.get_closest_marker("slurm"):
        item.add_marker(pytest.mark.xdist_group("slurm"))


def pytest_runtest_setup(item):
    # every Slurm-marked test skips (laptop) or fails (CI=true) alike when no controller answers
    if item.get_closest_marker("slurm"):
        need_slurm()


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from lorafull.models.tiny import SAMPLE_TEXTS, build_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    texts = SAMPLE_TEXTS + [f"{r['instruction']} {r['input']} {r['output']}" for r in alpaca_records(200)]
    build_tokenizer(texts * 5, out, vocab_size=512)
    return out


@pytest.fixture()
def alpaca_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "train.jsonl", alpaca_records(256))


@pytest.fixture()
def make_run(tmp_path, tiny_tokenizer_dir):
    """Factory of run folders under tmp_path: make_run("r1", **{"method.kind": "full"}) (see write_run_config)."""
    return lambda name, **dotted: write_run_config(tmp_path, name, tiny_tokenizer_dir, **dotted)




@pytest.fixture(scope="session")
def smollm2_dir(request, tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder, converted once and kept in pytest's cache directory
    (.pytest_cache/d/smollm2, keyed inside by the GGUF file's content) across test sessions; with the
    cache plugin off (-p no:cacheprovider), once per session. Tests that use it are slow-marked."""
    from helpers.real_model import smollm2_folder

    cache = getattr(request.config, "cache", None)
    return smollm2_folder(cache.mkdir("smollm2") if cache else tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="module")
def tiny_final(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny full model + tokenizer, saved once as an HF folder."""
    from transformers import AutoTokenizer

    from lorafull.models.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("tiny_final")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    build_tiny_model("tiny-llama", vocab_size=len(tok), seed=1).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_backend(request, tmp_path, monkeypatch) -> str:
    """Each isolation the code sandbox can use, chosen by what PATH shows it (unshare: bwrap hidden)."""
    from helpers.sandbox import path_with_only

    tool = request.param
    if not path_with_only(tmp_path / "bin", [tool]):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed (CI installs bubblewrap and util-linux)")
        pytest.skip(f"{tool} is not installed")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    from lorafull.judge.sandbox import isolation

    if isolation() is None or isolation()[0] != tool:
        pytest.skip(f"{tool} cannot create namespaces on this machine")
    return tool
